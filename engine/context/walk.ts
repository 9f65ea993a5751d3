// The walk: from one or more root folders to the list of text files that may enter the repository
// document, and the list of everything left out, each with a reason code (`repokv index --explain`).
//
// Symlinks: a link is followed when its target lies inside the same root. Real directories are walked
// first; a linked directory is walked afterwards only if its target was not walked already (a link to
// an ancestor is reported as a loop, a link to a walked directory as a duplicate): the realpaths of
// walked directories are the loop guard. A linked file whose target is also included under its own
// path is a duplicate; the secret deny-list is checked on the target's path as well as the link's.
// Unreadable files and folders are reported, never fatal.
import { createHash } from 'node:crypto';
import { lstatSync, type Dirent, type Stats } from 'node:fs';
import { open, readdir, realpath, stat } from 'node:fs/promises';
import { basename, join, relative, resolve, sep } from 'node:path';
import { UserError } from '../errors.js';
import { gitInfo, type GitInfo } from './history.js';
import { findGitTopLevel, RuleSet, type RuleOptions, type RuleReason } from './rules.js';
import { scanSecrets, secretNameRule } from './secrets.js';
import { sniffText, type TextEncodingName } from './sniff.js';

export const DEFAULT_MAX_FILE_BYTES = 1024 * 1024;
export const DEFAULT_MAX_FILES = 100_000;

export interface WalkOptions extends RuleOptions {
  /** Files larger than this are left out ('too-large'); default 1 MiB. */
  maxFileBytes?: number;
  /** At most this many files are read; the rest are left out ('too-many-files'); default 100,000. */
  maxFiles?: number;
  /** Read git history for the order (default true); false orders by modification time. */
  git?: boolean;
  /** Files read at once (default 16). */
  concurrency?: number;
}

export type ExclusionReason =
  | RuleReason
  | 'secret-content'
  | 'binary'
  | 'too-large'
  | 'too-many-files'
  | 'symlink-outside-root'
  | 'symlink-loop'
  | 'symlink-duplicate'
  | 'broken-symlink'
  | 'unreadable'
  | 'not-regular'
  | 'bad-name';

/** What every reason code means, for --explain. */
export const EXCLUSION_REASONS: Record<ExclusionReason, string> = {
  'vcs-dir': 'version-control metadata (.git)',
  'secret-name': 'name on the secret deny-list (keys, certificates, .env, credential folders); cannot be re-included',
  'secret-content': 'contains a credential (private key, access token, password); excluded whole, never redacted in part',
  'default-excluded': 'generated or vendored by default (node_modules, dist, build, lock files, *.min.js, source maps …)',
  'git-info-exclude': 'excluded by .git/info/exclude',
  gitignore: 'excluded by a .gitignore',
  repokvignore: 'excluded by a .repokvignore',
  'settings-exclude': 'excluded by the exclude setting',
  'not-included': 'not matched by the include setting',
  binary: 'binary content (NUL bytes or control characters)',
  'too-large': 'larger than the size limit',
  'too-many-files': 'beyond the file-count limit',
  'symlink-outside-root': 'symbolic link to a target outside the root',
  'symlink-loop': 'symbolic link to one of its own ancestors',
  'symlink-duplicate': 'symbolic link to a file or folder included under its own path',
  'broken-symlink': 'symbolic link to nothing',
  unreadable: 'could not be read (permissions or it vanished)',
  'not-regular': 'not a regular file (socket, FIFO, device)',
  'bad-name': 'name with control characters',
};

export interface Exclusion {
  /** Document path (posix; prefixed with the root's name in a multi-root walk). */
  path: string;
  isDir: boolean;
  reason: ExclusionReason;
  detail: string;
  /** Bytes on disk, when known. */
  size?: number;
}

/** Where a file stands in the change history: the order of the document is built from this. */
export interface ChangeInfo {
  /** 0: committed, ordered by score; 1: no git, ordered by mtime; 2: being edited (modified or untracked), by mtime. */
  group: 0 | 1 | 2;
  /** The git change score (history.ts); -Infinity when not seen in the log window. */
  score: number;
  commits: number;
  mtimeMs: number;
}

export interface RepoFile {
  /** Document path: posix, relative to its root, prefixed with the root's name when there are several roots. */
  path: string;
  /** Index of its root in WalkResult.roots. */
  root: number;
  /** Path relative to its root (posix). */
  rel: string;
  abs: string;
  /** The text, line endings normalized, one trailing newline (empty for an empty file). */
  text: string;
  /** sha1 of the normalized text (hex). */
  hash: string;
  /** Bytes on disk. */
  size: number;
  encoding: TextEncodingName;
  change: ChangeInfo;
}

export interface RootInfo {
  abs: string;
  name: string;
  /** Git top level and commits read, when the root is in a repository and git is there. */
  git?: { topLevel: string; commitsRead: number };
  notes: string[];
}

export interface WalkStats {
  dirs: number;
  files: number;
  excluded: number;
  bytesRead: number;
  ms: number;
}

export interface WalkResult {
  roots: RootInfo[];
  /** Included files, sorted by path. */
  files: RepoFile[];
  /** Left-out files and folders, sorted by path. */
  excluded: Exclusion[];
  stats: WalkStats;
  options: WalkOptions;
}

const BAD_NAME = /[\u0000-\u001f\u007f]/;

function toPosix(p: string): string {
  return sep === '/' ? p : p.split(sep).join('/');
}

function byPath<T extends { path: string }>(a: T, b: T): number {
  return a.path < b.path ? -1 : a.path > b.path ? 1 : 0;
}

function errCode(e: unknown): string {
  return (e as NodeJS.ErrnoException).code ?? (e as Error).message;
}

/** Unique display names for the roots: basenames, disambiguated with their parent folders when equal. */
export function rootNames(roots: string[]): string[] {
  const names = roots.map((r) => basename(r) || r);
  for (let depth = 2; depth < 8; depth++) {
    const seen = new Map<string, number>();
    for (const n of names) seen.set(n, (seen.get(n) ?? 0) + 1);
    if ([...seen.values()].every((c) => c === 1)) break;
    for (let i = 0; i < roots.length; i++) {
      if ((seen.get(names[i]) ?? 0) > 1) names[i] = toPosix(roots[i]).split('/').filter(Boolean).slice(-depth).join('/');
    }
  }
  return names;
}

interface Candidate {
  abs: string;
  rel: string;
  /** Real path of the file, when it was reached through a symlink. */
  real?: string;
  /** The file is itself a symlink. */
  link: boolean;
}

/** One root's walker: directory traversal with rule checks, then reading candidates. */
class RootWalker {
  readonly rules: RuleSet;
  readonly visitedDirs = new Set<string>();
  readonly excluded: Exclusion[] = [];
  readonly candidates: Candidate[] = [];
  private readonly linkedDirs: { abs: string; rel: string; real: string; parentReal: string }[] = [];
  dirs = 0;

  constructor(
    readonly index: number,
    readonly abs: string,
    readonly real: string,
    readonly prefix: string,
    opts: WalkOptions,
  ) {
    this.rules = new RuleSet(abs, opts, findGitTopLevel(abs));
  }

  docPath(rel: string): string {
    return this.prefix ? (rel ? `${this.prefix}/${rel}` : this.prefix) : rel;
  }

  exclude(rel: string, isDir: boolean, reason: ExclusionReason, detail: string, size?: number): void {
    this.excluded.push({ path: this.docPath(rel) + (isDir ? '/' : ''), isDir, reason, detail, ...(size !== undefined ? { size } : {}) });
  }

  /** Whether `real` lies inside this root. */
  inside(real: string): boolean {
    return real === this.real || real.startsWith(this.real + sep);
  }

  async walkDir(dirAbs: string, dirRel: string, dirReal: string): Promise<void> {
    this.visitedDirs.add(dirReal);
    this.dirs++;
    let entries: Dirent[];
    try {
      entries = await readdir(dirAbs, { withFileTypes: true });
    } catch (e) {
      this.exclude(dirRel, true, 'unreadable', errCode(e));
      return;
    }
    entries.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
    for (const e of entries) {
      const rel = dirRel ? `${dirRel}/${e.name}` : e.name;
      const abs = join(dirAbs, e.name);
      if (BAD_NAME.test(e.name)) {
        this.exclude(JSON.stringify(rel).slice(1, -1), false, 'bad-name', 'control characters in the name');
        continue;
      }
      if (e.isSymbolicLink()) {
        await this.symlink(abs, rel, dirReal);
      } else if (e.isDirectory()) {
        const d = this.rules.check(rel, true);
        if (d) this.exclude(rel, true, d.reason, d.detail);
        else await this.walkDir(abs, rel, join(dirReal, e.name));
      } else if (e.isFile()) {
        const d = this.rules.check(rel, false);
        if (d) this.exclude(rel, false, d.reason, d.detail);
        else this.candidates.push({ abs, rel, link: false });
      } else {
        this.exclude(rel, false, 'not-regular', 'socket, FIFO or device');
      }
    }
  }

  async symlink(abs: string, rel: string, parentReal: string): Promise<void> {
    let st: Stats;
    let real: string;
    try {
      st = await stat(abs);
      real = await realpath(abs);
    } catch (e) {
      this.exclude(rel, false, 'broken-symlink', errCode(e));
      return;
    }
    const isDir = st.isDirectory();
    const d = this.rules.check(rel, isDir);
    if (d) return this.exclude(rel, isDir, d.reason, d.detail);
    if (!this.inside(real)) return this.exclude(rel, isDir, 'symlink-outside-root', 'target outside the root');
    const targetRel = toPosix(relative(this.real, real));
    const secret = targetRel && secretNameRule(targetRel, isDir);
    if (secret) return this.exclude(rel, isDir, 'secret-name', `target ${targetRel}: ${secret}`);
    if (isDir) this.linkedDirs.push({ abs, rel, real, parentReal });
    else if (st.isFile()) this.candidates.push({ abs, rel, real, link: true });
    else this.exclude(rel, false, 'not-regular', 'socket, FIFO or device');
  }

  /** Walks the root, then the linked directories whose targets were not walked yet. */
  async walk(): Promise<void> {
    await this.walkDir(this.abs, '', this.real);
    while (this.linkedDirs.length) {
      this.linkedDirs.sort((a, b) => (a.rel < b.rel ? -1 : a.rel > b.rel ? 1 : 0));
      const l = this.linkedDirs.shift()!;
      if (this.visitedDirs.has(l.real)) {
        const loop = l.parentReal === l.real || l.parentReal.startsWith(l.real + sep);
        this.exclude(l.rel, true, loop ? 'symlink-loop' : 'symlink-duplicate', `target ${toPosix(relative(this.real, l.real)) || '.'}`);
        continue;
      }
      await this.walkDir(l.abs, l.rel, l.real);
    }
  }
}

interface ReadOutcome {
  file?: Omit<RepoFile, 'change' | 'root' | 'path'> & { mtimeMs: number };
  exclusion?: { reason: ExclusionReason; detail: string; size?: number };
  bytes: number;
}

async function readCandidate(c: Candidate, maxBytes: number): Promise<ReadOutcome> {
  let fh;
  try {
    fh = await open(c.abs, 'r');
  } catch (e) {
    return { exclusion: { reason: 'unreadable', detail: errCode(e) }, bytes: 0 };
  }
  try {
    const st = await fh.stat();
    if (!st.isFile()) return { exclusion: { reason: 'not-regular', detail: 'not a regular file' }, bytes: 0 };
    if (st.size > maxBytes) return { exclusion: { reason: 'too-large', detail: `${st.size} bytes > limit ${maxBytes}`, size: st.size }, bytes: 0 };
    const buf = await fh.readFile();
    const s = sniffText(buf);
    if ('binary' in s) return { exclusion: { reason: 'binary', detail: s.binary, size: st.size }, bytes: buf.length };
    const found = scanSecrets(s.text, c.rel);
    if (found) return { exclusion: { reason: 'secret-content', detail: `${found.kind} at line ${found.line}`, size: st.size }, bytes: buf.length };
    const hash = createHash('sha1').update(s.text).digest('hex');
    return { file: { rel: c.rel, abs: c.abs, text: s.text, hash, size: st.size, encoding: s.encoding, mtimeMs: st.mtimeMs }, bytes: buf.length };
  } catch (e) {
    return { exclusion: { reason: 'unreadable', detail: errCode(e) }, bytes: 0 };
  } finally {
    await fh.close();
  }
}

/** Runs `fn` over `items` with at most `limit` at once; results in input order. */
async function mapLimit<T, R>(items: T[], limit: number, fn: (t: T) => Promise<R>): Promise<R[]> {
  const out = new Array<R>(items.length);
  let next = 0;
  const worker = async () => {
    while (next < items.length) {
      const i = next++;
      out[i] = await fn(items[i]);
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
  return out;
}

function changeInfo(rel: string, mtimeMs: number, git: GitInfo | undefined): ChangeInfo {
  if (!git) return { group: 1, score: -Infinity, commits: 0, mtimeMs };
  if (git.dirty.has(rel)) return { group: 2, score: -Infinity, commits: git.files.get(rel)?.commits ?? 0, mtimeMs };
  const h = git.files.get(rel);
  return { group: 0, score: h?.score ?? -Infinity, commits: h?.commits ?? 0, mtimeMs };
}

interface Prepared {
  roots: RootInfo[];
  walkers: RootWalker[];
  gits: (GitInfo | undefined)[];
}

async function prepareRoots(roots: string[], opts: WalkOptions): Promise<Prepared> {
  if (!roots.length) throw new UserError('no folder to index: give at least one folder');
  const abs = roots.map((r) => resolve(r));
  const reals: string[] = [];
  for (const r of abs) {
    let st: Stats;
    try {
      st = await stat(r);
    } catch (e) {
      throw new UserError(`cannot index ${r}: ${errCode(e) === 'ENOENT' ? 'no such folder' : errCode(e)}`);
    }
    if (!st.isDirectory()) throw new UserError(`cannot index ${r}: not a folder (give the folder that contains it)`);
    reals.push(await realpath(r));
  }
  const names = rootNames(abs);
  const multi = abs.length > 1;
  const walkers = abs.map((r, i) => new RootWalker(i, r, reals[i], multi ? names[i] : '', opts));
  const gits = await Promise.all(abs.map((r) => (opts.git === false ? undefined : gitInfo(r))));
  const infos: RootInfo[] = abs.map((r, i) => ({
    abs: r,
    name: names[i],
    ...(gits[i] ? { git: { topLevel: gits[i]!.topLevel, commitsRead: gits[i]!.commitsRead } } : {}),
    notes: walkers[i].rules.notes,
  }));
  return { roots: infos, walkers, gits };
}

async function readAll(p: Prepared, cands: { w: RootWalker; c: Candidate }[], opts: WalkOptions, excluded: Exclusion[]) {
  const maxBytes = opts.maxFileBytes ?? DEFAULT_MAX_FILE_BYTES;
  const results = await mapLimit(cands, opts.concurrency ?? 16, ({ c }) => readCandidate(c, maxBytes));
  const files: RepoFile[] = [];
  let bytes = 0;
  for (let i = 0; i < cands.length; i++) {
    const { w, c } = cands[i];
    const r = results[i];
    bytes += r.bytes;
    if (r.exclusion) excluded.push({ path: w.docPath(c.rel), isDir: false, ...r.exclusion });
    else if (r.file) {
      const { mtimeMs, ...f } = r.file;
      files.push({ ...f, path: w.docPath(c.rel), root: w.index, change: changeInfo(c.rel, mtimeMs, p.gits[w.index]), ...(c.real ? { real: c.real } : {}) } as RepoFile);
    }
  }
  return { files, bytes };
}

/**
 * Linked files whose targets are included under another path (their own, or an earlier link's) are
 * duplicates: the first one by (not a link, root, path) stays.
 */
async function dropDuplicates(files: RepoFile[], links: Map<RepoFile, string>, walkers: RootWalker[], excluded: Exclusion[]): Promise<RepoFile[]> {
  if (!links.size) return files;
  const realOf = (f: RepoFile) => links.get(f) ?? join(walkers[f.root].real, f.rel);
  const keep = new Map<string, RepoFile>();
  const sorted = [...files].sort((a, b) => +links.has(a) - +links.has(b) || a.root - b.root || byPath(a, b));
  const drop = new Set<RepoFile>();
  for (const f of sorted) {
    const r = realOf(f);
    const k = keep.get(r);
    if (k) {
      drop.add(f);
      excluded.push({ path: f.path, isDir: false, reason: 'symlink-duplicate', detail: `same file as ${k.path}` });
    } else keep.set(r, f);
  }
  return files.filter((f) => !drop.has(f));
}

/** Walks the roots: included files (with text) and exclusions, both sorted by path. */
export async function walkRepository(roots: string[], opts: WalkOptions = {}): Promise<WalkResult> {
  const t0 = performance.now();
  const p = await prepareRoots(roots, opts);
  for (const w of p.walkers) await w.walk();
  const excluded: Exclusion[] = p.walkers.flatMap((w) => w.excluded);
  let cands = p.walkers.flatMap((w) => w.candidates.map((c) => ({ w, c })));
  const maxFiles = opts.maxFiles ?? DEFAULT_MAX_FILES;
  if (cands.length > maxFiles) {
    for (const { w, c } of cands.slice(maxFiles)) excluded.push({ path: w.docPath(c.rel), isDir: false, reason: 'too-many-files', detail: `limit ${maxFiles} files` });
    cands = cands.slice(0, maxFiles);
  }
  const { files, bytes } = await readAll(p, cands, opts, excluded);
  const links = new Map<RepoFile, string>();
  for (const f of files) {
    const real = (f as RepoFile & { real?: string }).real;
    if (real) {
      links.set(f, real);
      delete (f as RepoFile & { real?: string }).real;
    }
  }
  const kept = await dropDuplicates(files, links, p.walkers, excluded);
  kept.sort(byPath);
  excluded.sort(byPath);
  return {
    roots: p.roots,
    files: kept,
    excluded,
    stats: { dirs: p.walkers.reduce((s, w) => s + w.dirs, 0), files: kept.length, excluded: excluded.length, bytesRead: bytes, ms: performance.now() - t0 },
    options: opts,
  };
}

/**
 * The walk after some paths changed (created, modified, deleted; files or folders), re-reading only
 * those. A change to an ignore file, or to more than `fullWalkAbove` paths, re-walks everything. The
 * changed and new files are marked as being edited (group 2), so they order by mtime at the tail.
 */
export async function refreshWalk(prev: WalkResult, changedAbs: Iterable<string>, opts: { fullWalkAbove?: number } = {}): Promise<WalkResult> {
  const changed = [...new Set([...changedAbs].map((a) => resolve(a)))].sort();
  if (changed.length > (opts.fullWalkAbove ?? 5000)) return walkRepository(prev.roots.map((r) => r.abs), prev.options);
  const t0 = performance.now();
  const p = await prepareRoots(prev.roots.map((r) => r.abs), { ...prev.options, git: false });
  p.roots = prev.roots;
  const byDoc = new Map(prev.files.map((f) => [f.path, f]));
  let excluded = prev.excluded;
  const cands: { w: RootWalker; c: Candidate }[] = [];
  const removed: string[] = [];
  for (const a of changed) {
    // the deepest root that contains the path
    let w: RootWalker | undefined;
    for (const x of p.walkers) if ((a === x.abs || a.startsWith(x.abs + sep)) && (!w || x.abs.length > w.abs.length)) w = x;
    if (!w) continue;
    const rel = toPosix(relative(w.abs, a));
    if (!rel) return walkRepository(prev.roots.map((r) => r.abs), prev.options);
    if (rel === '.git' || rel.startsWith('.git/')) {
      if (rel === '.git/info/exclude') return walkRepository(prev.roots.map((r) => r.abs), prev.options);
      continue;
    }
    if (w.rules.isRuleFile(rel)) return walkRepository(prev.roots.map((r) => r.abs), prev.options);
    const doc = w.docPath(rel);
    removed.push(doc);
    let st: Stats | undefined;
    try {
      st = lstatSync(a);
    } catch {
      st = undefined; // deleted
    }
    if (!st) continue;
    // the path's parent folders must themselves be included
    const parts = rel.split('/');
    let blocked = false;
    for (let i = 1; i < parts.length && !blocked; i++) blocked = !!w.rules.check(parts.slice(0, i).join('/'), true);
    if (blocked) continue;
    // a symlink's target may be anywhere in the tree, with duplicates to resolve: walk again
    if (st.isSymbolicLink()) return walkRepository(prev.roots.map((r) => r.abs), prev.options);
    const d = w.rules.check(rel, st.isDirectory());
    if (d) {
      w.exclude(rel, st.isDirectory(), d.reason, d.detail);
      continue;
    }
    if (st.isDirectory()) {
      const before = w.candidates.length;
      await w.walkDir(a, rel, await realpath(a));
      for (const c of w.candidates.slice(before)) cands.push({ w, c });
    } else if (st.isFile()) cands.push({ w, c: { abs: a, rel, link: false } });
    else w.exclude(rel, false, 'not-regular', 'socket, FIFO or device');
  }
  const under = (path: string) => removed.some((r) => path === r || path.startsWith(r + '/') || path === r + '/');
  for (const r of removed) byDoc.delete(r);
  for (const k of [...byDoc.keys()]) if (under(k)) byDoc.delete(k);
  excluded = excluded.filter((e) => !under(e.path.replace(/\/$/, '')));
  excluded.push(...p.walkers.flatMap((w) => w.excluded));
  const fresh = cands.filter(({ w, c }) => !byDoc.has(w.docPath(c.rel)));
  const { files, bytes } = await readAll(p, fresh, prev.options, excluded);
  for (const f of files) {
    delete (f as RepoFile & { real?: string }).real;
    f.change = { ...f.change, group: 2 };
    byDoc.set(f.path, f);
  }
  const all = [...byDoc.values()].sort(byPath);
  excluded.sort(byPath);
  return {
    roots: prev.roots,
    files: all,
    excluded,
    stats: { dirs: prev.stats.dirs, files: all.length, excluded: excluded.length, bytesRead: bytes, ms: performance.now() - t0 },
    options: prev.options,
  };
}
