// Kernel-aware per-head pattern search (MInference §3.2, Alg. 1; seed_systems.md §1.3) with Qwen2.5-1M's
// recall-driven refinement (§5.2): for each query head, among candidate patterns whose real kernel cost
// (entries computed: 64×64 blocks and 1×64 column strips as the kernel computes them, i.e. the index
// density times the causal area) fits the cost budget, pick the one whose sparse *output* is closest to
// the dense output on a calibration input; then, while its attention recall exp(lse_sparse − lse_full)
// stays under the target, grow its budgets.
//
// It works on captured head groups (q, k, v of one layer's KV head), with a pluggable runner: the plain
// reference for tests and tiny models, the CPU path (CpuAttention) for real calibration lengths (30K).

import type { AttentionResult, CpuAttention } from '../cpu-attention.js';
import { CpuAttention as CpuAttentionImpl } from '../cpu-attention.js';
import { attentionRecall, buildGroupIndex, denseAttentionRef, headGroupOf, recallStats, sparseAttentionCpu, sparseAttentionRef, type HeadGroupInput } from './attention.js';
import { indexDensity, type SparseIndex, type SparsePattern, type VerticalSlashEstimate } from './patterns.js';

/** MInference's search space at its target cost (A-shape 1K + 4K) [P: Table 7], for a reference length of 30K–32K. */
export const SEARCH_SPACE: SparsePattern[] = [
  { kind: 'a-shape', sink: 1024, local: 4096 },
  { kind: 'vertical-slash', vertical: 30, slash: 2048 },
  { kind: 'vertical-slash', vertical: 100, slash: 1800 },
  { kind: 'vertical-slash', vertical: 500, slash: 1500 },
  { kind: 'vertical-slash', vertical: 3000, slash: 200 },
  { kind: 'block-sparse', blocks: 100 },
];

export interface AttentionRunner {
  dense(a: HeadGroupInput): AttentionResult;
  sparse(a: HeadGroupInput, idx: SparseIndex[]): AttentionResult;
}

export const referenceRunner: AttentionRunner = { dense: denseAttentionRef, sparse: sparseAttentionRef };

export function cpuRunner(attn: CpuAttention = new CpuAttentionImpl()): AttentionRunner {
  return {
    dense: (a) => sparseAttentionCpu(attn, a, buildGroupIndex(a, Array.from({ length: a.nHeads }, () => ({ kind: 'dense' as const })))),
    sparse: (a, idx) => sparseAttentionCpu(attn, a, idx),
  };
}

export interface HeadCalibration {
  pattern: SparsePattern;
  /** ‖o_sparse − o_dense‖₂ / ‖o_dense‖₂ over the head's rows. */
  outputError: number;
  recallMedian: number;
  recallP5: number;
  density: number;
  /** Budget growth steps the refinement took. */
  refined: number;
  /** Every candidate tried first: pattern, cost (density), error. */
  tried: { pattern: SparsePattern; density: number; outputError: number }[];
}

export interface CalibrateOptions {
  candidates?: SparsePattern[];
  /** Candidates costing more than this density are skipped (default: the cheapest candidate's density × 1.25). */
  maxDensity?: number;
  /** Refine while the recall's 5th percentile is under this (default 0.95). */
  recallTarget?: number;
  /** Budget factor per refinement step and the most steps (defaults 1.5, 4). */
  growth?: number;
  maxRefine?: number;
  runner?: AttentionRunner;
  /** Vertical-slash estimator (default: the TypeScript reference; CpuVerticalSlashEstimator is faster). */
  estimate?: VerticalSlashEstimate;
}

function l2Error(got: Float32Array, want: Float32Array): number {
  let e = 0;
  let n = 0;
  for (let i = 0; i < want.length; i++) {
    e += (got[i] - want[i]) ** 2;
    n += want[i] ** 2;
  }
  return Math.sqrt(e / Math.max(n, 1e-30));
}

export function growPattern(p: SparsePattern, f: number): SparsePattern {
  const g = (x: number) => Math.ceil(x * f);
  switch (p.kind) {
    case 'dense':
      return p;
    case 'a-shape':
      return { kind: 'a-shape', sink: p.sink, local: g(p.local) };
    case 'vertical-slash':
      return { kind: 'vertical-slash', vertical: g(p.vertical), slash: g(p.slash) };
    case 'block-sparse':
      return { kind: 'block-sparse', blocks: g(p.blocks) };
  }
}

/** Calibrates query head h of a captured head group. */
export function calibrateHead(group: HeadGroupInput, h: number, o: CalibrateOptions = {}): HeadCalibration {
  const run = o.runner ?? referenceRunner;
  const a = headGroupOf(group, h);
  const dense = run.dense(a);
  const measure = (p: SparsePattern) => {
    const idx = buildGroupIndex(a, [p], o.estimate);
    const r = run.sparse(a, idx);
    const rec = recallStats(attentionRecall(r.lse, dense.lse));
    return { pattern: p, density: indexDensity(idx[0]), outputError: l2Error(r.out, dense.out), rec };
  };
  const tried = (o.candidates ?? SEARCH_SPACE).map(measure);
  const cap = o.maxDensity ?? Math.min(...tried.map((t) => t.density)) * 1.25;
  const fit = tried.filter((t) => t.density <= cap + 1e-12);
  let best = fit.reduce((x, y) => (y.outputError < x.outputError ? y : x));
  let refined = 0;
  const target = o.recallTarget ?? 0.95;
  while (best.rec.p5 < target && refined < (o.maxRefine ?? 4) && best.density < 1) {
    best = measure(growPattern(best.pattern, o.growth ?? 1.5));
    refined++;
  }
  return {
    pattern: best.pattern,
    outputError: best.outputError,
    recallMedian: best.rec.median,
    recallP5: best.rec.p5,
    density: best.density,
    refined,
    tried: tried.map((t) => ({ pattern: t.pattern, density: t.density, outputError: t.outputError })),
  };
}
