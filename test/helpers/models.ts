// Synthetic model files for tests, written once per process into a temp folder and reused.
import { mkdirSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { presetShape, syntheticModel, writeSyntheticModel, type SizePreset, type SyntheticArch, type WeightTypeName } from '../../engine/model/synthetic.js';

const dir = join(tmpdir(), `repokv-test-models-${process.pid}`);

export function testModelDir(): string {
  mkdirSync(dir, { recursive: true });
  return dir;
}

export function testModel(arch: SyntheticArch, type: WeightTypeName, opts: { size?: SizePreset; seed?: number; q4km?: boolean } = {}): string {
  const size = opts.size ?? 'tiny';
  const seed = opts.seed ?? 1;
  mkdirSync(dir, { recursive: true });
  const path = join(dir, `${arch}-${size}-${type}${opts.q4km ? '-q4km' : ''}-${seed}.gguf`);
  if (!existsSync(path)) {
    writeSyntheticModel(path, syntheticModel({ arch, shape: presetShape(arch, size), type, seed, q4km: opts.q4km }));
  }
  return path;
}

/** Deterministic pseudo-random token ids in [lo, hi). */
export function randomTokens(n: number, lo: number, hi: number, seed = 1): number[] {
  let s = seed >>> 0;
  const out: number[] = [];
  for (let i = 0; i < n; i++) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    out.push(lo + (s % (hi - lo)));
  }
  return out;
}
