// Sparse prefill attention for one head group (the query heads that share one KV head), returning
// (out, lse) like every attention path. Each query head has its own index (MInference estimates per
// query head [C: repeat_kv]); a query block attends (its key ranges ∪ its gathered columns) with the
// causal mask always applied, so diagonal blocks are causal inside.
//
// Two paths with the same semantics:
// - `sparseAttentionRef`: attentionRef with a `keep` mask built from the index — the plain reference.
// - `sparseAttentionCpu`: CpuAttention (onnxruntime tiles + exact lse merge) with the index as its
//   per-query-block `select`, one head at a time (select is shared by all heads of a run).
// Quality is attention recall exp(lse_sparse − lse_full) per row (Qwen2.5-1M, seed_systems.md §1.7).

import type { AttentionResult, CpuAttention } from '../cpu-attention.js';
import { attentionRef } from '../../model/ref-ops.js';
import { buildIndex, indexMasks, type HeadInput, type SparseIndex, type SparsePattern } from './patterns.js';

export interface HeadGroupInput {
  /** Queries [nQ, nHeads·headDim] of this group's query heads; row i sits at position qPos0 + i. */
  q: Float32Array;
  /** Keys and values of the group's KV head, [≥ nK, headDim] contiguous (a head-major cache view). */
  k: Float32Array;
  v: Float32Array;
  nQ: number;
  nK: number;
  qPos0: number;
  nHeads: number;
  headDim: number;
  scale: number;
}

/** Query head h of the group as a HeadInput (q copied into [nQ, d]). */
export function headInput(a: HeadGroupInput, h: number): HeadInput {
  const d = a.headDim;
  const q = new Float32Array(a.nQ * d);
  for (let i = 0; i < a.nQ; i++) q.set(a.q.subarray(i * a.nHeads * d + h * d, i * a.nHeads * d + (h + 1) * d), i * d);
  return { q, k: a.k, nQ: a.nQ, nK: a.nK, qPos0: a.qPos0, headDim: d, scale: a.scale };
}

/** Per-head indices for per-head patterns (online estimation where the pattern needs it). */
export function buildGroupIndex(a: HeadGroupInput, patterns: SparsePattern[]): SparseIndex[] {
  return patterns.map((p, h) => buildIndex(p, headInput(a, h)));
}

/** Plain reference: attentionRef with the index's key sets as `keep`. out [nQ, nHeads·d], lse [nHeads, nQ]. */
export function sparseAttentionRef(a: HeadGroupInput, idx: SparseIndex[]): AttentionResult {
  const masks = idx.map(indexMasks);
  const block = idx[0]?.block ?? 64;
  return attentionRef({
    q: a.q,
    k: a.k.subarray(0, a.nK * a.headDim),
    v: a.v.subarray(0, a.nK * a.headDim),
    nQ: a.nQ,
    nK: a.nK,
    nHeads: a.nHeads,
    nKVHeads: 1,
    headDim: a.headDim,
    scale: a.scale,
    qPos0: a.qPos0,
    keep: (h, i, j) => masks[h][Math.floor(i / block)][j] === 1,
  });
}

/** Dense causal reference for the same group (the recall baseline). */
export function denseAttentionRef(a: HeadGroupInput): AttentionResult {
  return attentionRef({ q: a.q, k: a.k.subarray(0, a.nK * a.headDim), v: a.v.subarray(0, a.nK * a.headDim), nQ: a.nQ, nK: a.nK, nHeads: a.nHeads, nKVHeads: 1, headDim: a.headDim, scale: a.scale, qPos0: a.qPos0 });
}

/** Fast CPU path: CpuAttention per head with the index as its key selection. */
export function sparseAttentionCpu(attn: CpuAttention, a: HeadGroupInput, idx: SparseIndex[]): AttentionResult {
  const { nQ, nHeads, headDim: d } = a;
  const out = new Float32Array(nQ * nHeads * d);
  const lse = new Float32Array(nHeads * nQ);
  for (let h = 0; h < nHeads; h++) {
    const x = idx[h];
    const r = attn.run({
      q: headInput(a, h).q,
      nQ,
      qPos0: a.qPos0,
      k: [a.k],
      v: [a.v],
      nK: a.nK,
      nHeads: 1,
      nKVHeads: 1,
      headDim: d,
      scale: a.scale,
      select: (q0) => x.blocks[Math.floor(q0 / x.block)],
      selectBlock: x.block,
    });
    for (let i = 0; i < nQ; i++) out.set(r.out.subarray(i * d, (i + 1) * d), i * nHeads * d + h * d);
    lse.set(r.lse, h * nQ);
  }
  return { out, lse };
}

export interface RecallStats {
  min: number;
  p5: number;
  median: number;
  mean: number;
}

/** Per-row attention recall exp(lse_sparse − lse_full) (1 where both rows attend nothing). */
export function attentionRecall(lseSparse: Float32Array, lseFull: Float32Array): Float64Array {
  const r = new Float64Array(lseFull.length);
  for (let i = 0; i < r.length; i++) r[i] = lseFull[i] === -Infinity ? 1 : Math.exp(lseSparse[i] - lseFull[i]);
  return r;
}

export function recallStats(r: Float64Array): RecallStats {
  const s = Float64Array.from(r).sort();
  const at = (q: number) => (s.length ? s[Math.min(s.length - 1, Math.floor(q * (s.length - 1)))] : 1);
  let sum = 0;
  for (const x of s) sum += x;
  return { min: s.length ? s[0] : 1, p5: at(0.05), median: at(0.5), mean: s.length ? sum / s.length : 1 };
}
