// How often and how recently each file changed, from git when the root is in a repository.
//
// A file's change score is log Σ exp(t_c / τ) over the commits c that touched it (t_c: commit time in
// seconds, τ = 30 days): recency-weighted change frequency, in log space. Its useful property for
// prefix stability: a new commit adds to the scores of the files it touches and leaves every other
// score, and so every other file's relative order, unchanged — the order never drifts with the
// clock, and it is a function of the history alone (the same on every clone).
//
// Files modified in the working tree or untracked are being edited now: they go last, by mtime.
// Without git (not a repository, or git missing) the order falls back to modification times.
import { execFile } from 'node:child_process';

/** τ of the change score, seconds. */
export const CHANGE_HALF_LIFE_S = 30 * 24 * 3600;
/** Commits read from the log (newest first); older history does not change the order much. */
export const MAX_COMMITS = 5000;

export interface FileHistory {
  commits: number;
  /** Commit time (seconds since the epoch) of the last commit that touched the file. */
  lastCommit: number;
  /** log Σ exp(t/τ) over the file's commits (see above). */
  score: number;
}

export interface GitInfo {
  /** The repository's top level. */
  topLevel: string;
  /** Per path relative to the walk's root (posix). */
  files: Map<string, FileHistory>;
  /** Paths (relative to the root) modified, added or untracked in the working tree. */
  dirty: Set<string>;
  /** Commits read. */
  commitsRead: number;
}

function git(cwd: string, args: string[]): Promise<string | undefined> {
  return new Promise((resolve) => {
    execFile('git', ['-c', 'core.quotepath=off', ...args], { cwd, maxBuffer: 512 * 1024 * 1024, encoding: 'utf8', env: { ...process.env, GIT_OPTIONAL_LOCKS: '0', LC_ALL: 'C' } }, (err, stdout) => {
      resolve(err ? undefined : stdout);
    });
  });
}

function logAdd(a: number, b: number): number {
  if (a === -Infinity) return b;
  const m = Math.max(a, b);
  return m + Math.log(Math.exp(a - m) + Math.exp(b - m));
}

/** Git history for the files under `root`, or undefined when git or the repository is not there. */
export async function gitInfo(root: string): Promise<GitInfo | undefined> {
  const rp = (await git(root, ['rev-parse', '--show-toplevel', '--show-prefix']))?.split('\n');
  if (!rp || !rp[0]) return undefined;
  const top = rp[0];
  // paths in git's output are relative to the top level; ours are relative to the root
  const prefix = (rp[1] ?? '').replace(/\/$/, '');
  const strip = (p: string): string | undefined => (!prefix ? p : p.startsWith(prefix + '/') ? p.slice(prefix.length + 1) : undefined);
  const files = new Map<string, FileHistory>();
  let commitsRead = 0;
  const log = await git(root, ['log', '--no-renames', '--no-merges', `--max-count=${MAX_COMMITS}`, '--format=%x00%ct', '--name-only', '--', '.']);
  if (log !== undefined) {
    for (const block of log.split('\0')) {
      if (!block) continue;
      const nl = block.indexOf('\n');
      const t = Number(nl < 0 ? block : block.slice(0, nl));
      if (!Number.isFinite(t)) continue;
      commitsRead++;
      const x = t / CHANGE_HALF_LIFE_S;
      for (const line of (nl < 0 ? '' : block.slice(nl + 1)).split('\n')) {
        if (!line) continue;
        const rel = strip(line);
        if (rel === undefined) continue;
        const h = files.get(rel);
        if (h) {
          h.commits++;
          h.score = logAdd(h.score, x);
        } else files.set(rel, { commits: 1, lastCommit: t, score: x }); // newest first: the first seen is the last change
      }
    }
  }
  const dirty = new Set<string>();
  const status = await git(root, ['status', '--porcelain=v1', '-z', '--untracked-files=all', '--', '.']);
  if (status !== undefined) {
    const parts = status.split('\0');
    for (let i = 0; i < parts.length; i++) {
      const e = parts[i];
      if (e.length < 4) continue;
      const xy = e.slice(0, 2);
      const rel = strip(e.slice(3));
      if (rel !== undefined) dirty.add(rel);
      if (xy[0] === 'R' || xy[0] === 'C') i++; // the next entry is the rename's source
    }
  }
  return { topLevel: top, files, dirty, commitsRead };
}
