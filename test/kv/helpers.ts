// Shared by the KV cache tests: small synthetic models, a child engine process (restarts and crashes
// are real processes), and bitwise comparison of logits.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { syntheticModel, writeSyntheticModel } from '../../engine/model/synthetic.js';
import { testModelDir } from '../helpers/models.js';

/** A 2-layer, 64-wide qwen2 model (one KV head of 32): fast enough on the reference backend for long prompts. */
export function microModel(opts: { seed?: number; ropeFreqBase?: number } = {}): string {
  const seed = opts.seed ?? 1;
  const path = join(testModelDir(), `kv-micro-${seed}-${opts.ropeFreqBase ?? 'default'}.gguf`);
  if (!existsSync(path)) {
    writeSyntheticModel(
      path,
      syntheticModel({
        arch: 'qwen2',
        shape: { nLayers: 2, nEmbd: 64, nHeads: 2, nKVHeads: 1, nFF: 128, contextLength: 8192, tied: true },
        type: 'f32',
        seed,
        ropeFreqBase: opts.ropeFreqBase,
      }),
    );
  }
  return path;
}

const made: string[] = [];
process.on('exit', () => {
  for (const d of made) rmSync(d, { recursive: true, force: true });
});

/** A fresh folder, removed when the test process exits. */
export function tempDir(name: string): string {
  const root = join(tmpdir(), 'repokv-kv-tests');
  mkdirSync(root, { recursive: true });
  const d = mkdtempSync(join(root, `${name}-`));
  made.push(d);
  return d;
}

export function sameBits(a: Float32Array, b: Float32Array): boolean {
  return a.length === b.length && Buffer.from(a.buffer, a.byteOffset, a.byteLength).equals(Buffer.from(b.buffer, b.byteOffset, b.byteLength));
}

export function maxAbsDiff(a: Float32Array, b: Float32Array): number {
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]));
  return m;
}

const childPath = fileURLToPath(new URL('./child.ts', import.meta.url));

export function spawnChild(args: Record<string, unknown>, opts: { tmpfsBytes?: number } = {}): ChildProcess {
  if (opts.tmpfsBytes) {
    // A private mount namespace with a small tmpfs on the cache folder: a real full disk (ENOSPC),
    // gone with the process.
    const script = 'mount -t tmpfs -o size="$REPOKV_TMPFS" tmpfs "$REPOKV_DIR" && exec "$REPOKV_NODE" --import tsx "$REPOKV_CHILD" "$REPOKV_ARGS"';
    return spawn('unshare', ['-rm', 'sh', '-c', script], {
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { ...process.env, REPOKV_TMPFS: String(opts.tmpfsBytes), REPOKV_DIR: String(args.cacheDir), REPOKV_NODE: process.execPath, REPOKV_CHILD: childPath, REPOKV_ARGS: JSON.stringify(args) },
    });
  }
  return spawn(process.execPath, ['--import', 'tsx', childPath, JSON.stringify(args)], { stdio: ['ignore', 'pipe', 'pipe'] });
}

/** Whether this machine lets a process mount a tmpfs in its own namespace (root, or user namespaces). */
export function canMountTmpfs(): boolean {
  const dir = tempDir('probe');
  const r = spawnSync('unshare', ['-rm', 'sh', '-c', `mount -t tmpfs -o size=64k tmpfs "${dir}"`], { stdio: 'ignore' });
  return r.status === 0;
}

export interface ChildResult {
  logits: Float32Array;
  report: Record<string, number>;
  warnings: string[];
  stats: Record<string, unknown>;
}

/** Runs the child engine once (mode 'prefill') and returns what it printed. */
export function runChild(args: Record<string, unknown>, opts: { tmpfsBytes?: number } = {}): Promise<ChildResult> {
  return new Promise((resolve, reject) => {
    const c = spawnChild({ mode: 'prefill', ...args }, opts);
    let out = '';
    let err = '';
    c.stdout!.on('data', (d) => (out += d));
    c.stderr!.on('data', (d) => (err += d));
    c.on('exit', (code) => {
      if (code !== 0) return reject(new Error(`child exited with ${code}: ${err}`));
      const j = JSON.parse(out.trim().split('\n').pop()!);
      const b = Buffer.from(j.logits, 'base64');
      resolve({ logits: new Float32Array(b.buffer, b.byteOffset, b.byteLength / 4), report: j.report, warnings: j.warnings, stats: j.stats });
    });
  });
}
