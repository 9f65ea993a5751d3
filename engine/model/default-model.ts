// Which model file to run: --model, else $REPOKV_MODEL, else the built-in synthetic model (written
// once into the cache directory). The synthetic model has random weights: the pipeline is real, its
// answers are meaningless, and we say so every time it is used.
import { existsSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { cacheDir } from '../paths.js';
import { presetShape, syntheticModel, writeSyntheticModel } from './synthetic.js';

export const BUILTIN_MODEL_NOTICE =
  'repokv: no model configured, using the built-in synthetic model (random weights: its answers are meaningless). ' +
  'Point --model or REPOKV_MODEL at a GGUF file (e.g. Qwen2.5-Coder or Llama 3.x, Q4_K_M) for real answers.';

export function builtinModelPath(): string {
  const dir = join(cacheDir(), 'models');
  const path = join(dir, 'builtin-synthetic-qwen2-small-q8_0-v1.gguf');
  if (!existsSync(path)) {
    mkdirSync(dir, { recursive: true });
    writeSyntheticModel(path, syntheticModel({ arch: 'qwen2', shape: presetShape('qwen2', 'small'), type: 'q8_0', seed: 1, name: 'repokv-builtin-synthetic' }));
  }
  return path;
}

/** The model path to use and whether it is the built-in one (callers print BUILTIN_MODEL_NOTICE). */
export function resolveModel(flag: string | undefined): { path: string; builtin: boolean } {
  if (flag) return { path: flag, builtin: false };
  const env = process.env.REPOKV_MODEL;
  if (env) return { path: env, builtin: false };
  return { path: builtinModelPath(), builtin: true };
}
