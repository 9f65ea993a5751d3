// Temporary trees for the context tests.
import { mkdirSync, mkdtempSync, rmSync, utimesSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { spawnSync } from 'node:child_process';

export type Tree = Record<string, string | Uint8Array>;

export function tempDir(tag: string): string {
  return mkdtempSync(join(tmpdir(), `repokv-ctx-${tag}-`));
}

export function writeTree(root: string, tree: Tree): void {
  for (const [p, content] of Object.entries(tree)) {
    const abs = join(root, p);
    mkdirSync(dirname(abs), { recursive: true });
    writeFileSync(abs, content);
  }
}

/** Sets modification times so that files order as listed (oldest first), one second apart. */
export function setMtimes(root: string, paths: string[], start = 1_700_000_000): void {
  paths.forEach((p, i) => utimesSync(join(root, p), start + i, start + i));
}

export function remove(dir: string): void {
  rmSync(dir, { recursive: true, force: true });
}

/** Runs git in `cwd` with a fixed identity and dates (so histories are reproducible). */
export function git(cwd: string, args: string[], date = '2024-01-01T00:00:00Z'): string {
  const r = spawnSync('git', args, {
    cwd,
    encoding: 'utf8',
    env: { ...process.env, GIT_AUTHOR_NAME: 't', GIT_AUTHOR_EMAIL: 't@example.invalid', GIT_COMMITTER_NAME: 't', GIT_COMMITTER_EMAIL: 't@example.invalid', GIT_AUTHOR_DATE: date, GIT_COMMITTER_DATE: date, GIT_CONFIG_NOSYSTEM: '1', HOME: cwd },
  });
  if (r.status !== 0) throw new Error(`git ${args.join(' ')}: ${r.stderr}`);
  return r.stdout;
}

export const hasGit = spawnSync('git', ['--version']).status === 0;

/** A seeded generator of random-looking strings (mulberry32), for secrets built at run time. */
export function randomString(seed: number, length: number, alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789'): string {
  let a = seed >>> 0;
  let s = '';
  for (let i = 0; i < length; i++) {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    const r = ((t ^ (t >>> 14)) >>> 0) / 4294967296;
    s += alphabet[Math.floor(r * alphabet.length)];
  }
  return s;
}
