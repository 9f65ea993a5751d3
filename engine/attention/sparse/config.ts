// Per-head sparse-prefill configuration, stored per model fingerprint (issue 8): a pattern with its
// budgets for every (layer, query head), the context threshold under which prefill stays dense, and the
// length the budgets were set for. A model never calibrated gets MInference's fallback for every head,
// vertical-slash (1000, 6096) [C: minference_forward.py `best_pattern.get(…, (…, 1000, 6096, …))`].
//
// Scaling with the context S: budgets are given at `referenceLength`. Below it they shrink in
// proportion (floors 30 / 100 keep the forced sinks and local window), so a short chunk is not
// computed densely by default; at and above it they stay fixed, as the paper uses one config from its
// 30K calibration up to 1M (seed_systems.md §1.3). Heads whose recall falls at longer inputs are the
// calibration's job (refinement, Qwen2.5-1M §5.2), not the scaling's.
//
// Stored as JSON at <cacheDir>/<fingerprint id>/sparse.json next to the model's KV store.

import { mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { VS_MIN_SLASH, VS_MIN_VERTICAL, type SparsePattern } from './patterns.js';

export const SPARSE_CONFIG_VERSION = 1;
/** Prefill dense below this many tokens (vLLM/Qwen's `sparse_attention_threshold`; to be measured for us). */
export const DEFAULT_SPARSE_THRESHOLD = 32768;
/** MInference's fallback budget for a head missing from its config. */
export const DEFAULT_VS: SparsePattern = { kind: 'vertical-slash', vertical: 1000, slash: 6096 };
/** A-shape and block-sparse starting budgets (seed_systems.md §6.5, §1.2). */
export const DEFAULT_A_SHAPE: SparsePattern = { kind: 'a-shape', sink: 128, local: 3968 };
export const DEFAULT_BLOCK_SPARSE: SparsePattern = { kind: 'block-sparse', blocks: 100 };

export interface SparseModelConfig {
  version: number;
  /** ModelFingerprint.id of the model the config belongs to. */
  fingerprint: string;
  source: 'default' | 'calibrated';
  /** Prefill dense when the whole context is shorter. */
  threshold: number;
  /** Budgets below apply at this context length; shorter contexts scale them down. */
  referenceLength: number;
  /** [layer][query head]. */
  heads: SparsePattern[][];
  /** Per [layer][query head], the attention recall measured when calibrating (absent by default). */
  recall?: number[][];
  /** What calibration ran on (task, length, seed), for `repokv doctor`. */
  calibration?: Record<string, unknown>;
}

export function defaultSparseConfig(fingerprint: string, nLayers: number, nHeads: number, threshold = DEFAULT_SPARSE_THRESHOLD): SparseModelConfig {
  return {
    version: SPARSE_CONFIG_VERSION,
    fingerprint,
    source: 'default',
    threshold,
    referenceLength: threshold,
    heads: Array.from({ length: nLayers }, () => Array.from({ length: nHeads }, () => ({ ...DEFAULT_VS }))),
  };
}

/** The config with one pattern on every head (benchmarks, fidelity methods, calibration's exact pass). */
export function withPattern(cfg: SparseModelConfig, p: SparsePattern): SparseModelConfig {
  return { ...cfg, source: 'default', heads: cfg.heads.map((l) => l.map(() => ({ ...p }))) };
}

/** A pattern's budgets for a context of S tokens (see the header for the rule). */
export function scalePattern(p: SparsePattern, S: number, referenceLength: number): SparsePattern {
  const f = Math.min(1, S / referenceLength);
  const sc = (x: number, floor: number) => Math.max(floor, Math.round(x * f));
  switch (p.kind) {
    case 'dense':
      return p;
    case 'a-shape':
      return { kind: 'a-shape', sink: sc(p.sink, Math.min(p.sink, VS_MIN_VERTICAL)), local: sc(p.local, Math.min(p.local, VS_MIN_SLASH)) };
    case 'vertical-slash':
      return { kind: 'vertical-slash', vertical: sc(p.vertical, VS_MIN_VERTICAL), slash: sc(p.slash, VS_MIN_SLASH) };
    case 'block-sparse':
      return { kind: 'block-sparse', blocks: sc(p.blocks, Math.min(p.blocks, 4)) };
  }
}

/** The patterns of one layer's query heads for a context of S tokens; null: prefill this layer dense. */
export function layerPatterns(cfg: SparseModelConfig, layer: number, S: number): SparsePattern[] | null {
  if (S < cfg.threshold) return null;
  const hs = cfg.heads[layer];
  if (!hs) throw new Error(`sparse config has no layer ${layer}`);
  return hs.map((p) => scalePattern(p, S, cfg.referenceLength));
}

export function sparseConfigPath(cacheDir: string, fingerprint: string): string {
  return join(cacheDir, fingerprint, 'sparse.json');
}

export function saveSparseConfig(cacheDir: string, cfg: SparseModelConfig): string {
  const path = sparseConfigPath(cacheDir, cfg.fingerprint);
  mkdirSync(join(cacheDir, cfg.fingerprint), { recursive: true });
  writeFileSync(path + '.tmp', JSON.stringify(cfg, null, 1));
  renameSync(path + '.tmp', path); // never a half-written config
  return path;
}

function isPattern(p: unknown): p is SparsePattern {
  if (!p || typeof p !== 'object') return false;
  const x = p as Record<string, unknown>;
  const n = (k: string) => Number.isInteger(x[k]) && (x[k] as number) >= 0;
  switch (x.kind) {
    case 'dense':
      return true;
    case 'a-shape':
      return n('sink') && n('local');
    case 'vertical-slash':
      return n('vertical') && n('slash');
    case 'block-sparse':
      return n('blocks');
    default:
      return false;
  }
}

/**
 * The stored config of a model, or its default when there is none. A config of another shape or
 * version is an error a user can fix, said in one sentence.
 */
export function loadSparseConfig(cacheDir: string, fingerprint: string, nLayers: number, nHeads: number): SparseModelConfig {
  const path = sparseConfigPath(cacheDir, fingerprint);
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return defaultSparseConfig(fingerprint, nLayers, nHeads);
    throw e;
  }
  const bad = (why: string) => new Error(`The sparse-prefill config ${path} ${why}; delete it or run \`repokv calibrate\` again.`);
  let cfg: SparseModelConfig;
  try {
    cfg = JSON.parse(text) as SparseModelConfig;
  } catch {
    throw bad('is not valid JSON');
  }
  if (cfg.version !== SPARSE_CONFIG_VERSION) throw bad(`has version ${cfg.version}, this engine reads ${SPARSE_CONFIG_VERSION}`);
  if (cfg.fingerprint !== fingerprint) throw bad('belongs to another model');
  if (!Array.isArray(cfg.heads) || cfg.heads.length !== nLayers || cfg.heads.some((l) => !Array.isArray(l) || l.length !== nHeads || !l.every(isPattern))) {
    throw bad(`does not describe ${nLayers} layers of ${nHeads} heads`);
  }
  if (!(cfg.threshold >= 0) || !(cfg.referenceLength > 0)) throw bad('has no valid threshold or reference length');
  return cfg;
}
