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

import type { AttentionResult, CpuAttention, CpuAttentionInput } from '../cpu-attention.js';
import { attentionRef, mergeAttentionRef } from '../../model/ref-ops.js';
import { buildIndex, indexDensity, indexMasks, SPARSE_BLOCK, type HeadInput, type SparseIndex, type SparsePattern, type VerticalSlashEstimate } from './patterns.js';

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
  const one = headGroupOf(a, h);
  return { q: one.q, k: a.k, nQ: a.nQ, nK: a.nK, qPos0: a.qPos0, headDim: a.headDim, scale: a.scale };
}

/** Query head h of the group alone, as a one-head group (q copied into [nQ, d]; k, v shared). */
export function headGroupOf(a: HeadGroupInput, h: number): HeadGroupInput {
  const d = a.headDim;
  const q = new Float32Array(a.nQ * d);
  for (let i = 0; i < a.nQ; i++) q.set(a.q.subarray((i * a.nHeads + h) * d, (i * a.nHeads + h + 1) * d), i * d);
  return { ...a, q, nHeads: 1 };
}

/** Per-head indices for per-head patterns (online estimation where the pattern needs it). */
export function buildGroupIndex(a: HeadGroupInput, patterns: SparsePattern[], estimate?: VerticalSlashEstimate, block?: number): SparseIndex[] {
  return patterns.map((p, h) => buildIndex(p, headInput(a, h), block, estimate));
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

/** Ranges at least this wide go to the tile graph as zero-copy views; narrower ones and columns are gathered. */
export const GATHER_BELOW = 256;
/** Most keys per tile (64 query rows × 16K keys = 1M score floats per ORT run). */
const TILE_KEYS = 16384;

/**
 * Fast CPU path: CpuAttention's tile graph per head and query block. Wide ranges are passed as views of
 * the cache; narrow ranges (slash blocks) and columns are gathered, ascending, into one dense tile — as
 * MInference's kernel gathers columns (PIT) — so a block with many slash ranges costs a few ORT runs,
 * not one per range. Partial tiles merge exactly by lse.
 */
export function sparseAttentionCpu(attn: CpuAttention, a: HeadGroupInput, idx: SparseIndex[]): AttentionResult {
  const { nQ, nHeads, headDim: d } = a;
  const out = new Float32Array(nQ * nHeads * d);
  const lse = new Float32Array(nHeads * nQ).fill(-Infinity);
  for (let h = 0; h < nHeads; h++) {
    const x = idx[h];
    const input: CpuAttentionInput = { q: headInput(a, h).q, nQ, qPos0: a.qPos0, k: [a.k], v: [a.v], nK: a.nK, nHeads: 1, nKVHeads: 1, headDim: d, scale: a.scale };
    for (let b = 0; b < x.blocks.length; b++) {
      const q0 = b * x.block;
      const q1 = Math.min(nQ, q0 + x.block);
      const n = q1 - q0;
      const horizon = Math.min(a.nK, a.qPos0 + q1);
      const sel = x.blocks[b];
      let acc: AttentionResult | null = null;
      const fold = (r: AttentionResult) => {
        acc = acc ? mergeAttentionRef(acc.out, acc.lse, r.out, r.lse, n, 1, d) : r;
      };
      const gathered: number[] = [];
      let ci = 0;
      const cols = sel.columns ?? new Int32Array(0);
      for (const [s0, s1] of sel.ranges) {
        const e = Math.min(s1, horizon);
        if (s0 >= e) continue;
        while (ci < cols.length && cols[ci] < s0) gathered.push(cols[ci++]);
        if (e - s0 < GATHER_BELOW) {
          for (let j = s0; j < e; j++) gathered.push(j);
          continue;
        }
        for (let k0 = s0; k0 < e; k0 += TILE_KEYS) {
          const k1 = Math.min(e, k0 + TILE_KEYS);
          const kpos = new Float32Array(k1 - k0);
          for (let j = 0; j < kpos.length; j++) kpos[j] = k0 + j;
          fold(attn.tile(input, q0, q1, [a.k.subarray(k0 * d, k1 * d)], [a.v.subarray(k0 * d, k1 * d)], kpos));
        }
      }
      while (ci < cols.length && cols[ci] < horizon) gathered.push(cols[ci++]);
      for (let c0 = 0; c0 < gathered.length; c0 += TILE_KEYS) {
        const part = gathered.slice(c0, c0 + TILE_KEYS);
        const kt = new Float32Array(part.length * d);
        const vt = new Float32Array(part.length * d);
        for (let j = 0; j < part.length; j++) {
          kt.set(a.k.subarray(part[j] * d, (part[j] + 1) * d), j * d);
          vt.set(a.v.subarray(part[j] * d, (part[j] + 1) * d), j * d);
        }
        fold(attn.tile(input, q0, q1, [kt], [vt], Float32Array.from(part)));
      }
      const r = acc as AttentionResult | null;
      if (!r) continue; // attends nothing: out 0, lse −∞
      for (let i = 0; i < n; i++) out.set(r.out.subarray(i * d, (i + 1) * d), (q0 + i) * nHeads * d + h * d);
      lse.set(r.lse, h * nQ + q0);
    }
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

/** What sparse attention over token-major K/V keeps, for backends that take a `keep` predicate. */
export interface TokenMajorSparse {
  keep: (h: number, i: number, j: number) => boolean;
  /** (row, key) entries kept and causal entries in all, summed over the query heads. */
  kept: number;
  causal: number;
}

/**
 * Per-query-head indices for one attention call over a token-major cache: q [nQ, H·d], k [≥ nK, G·d].
 * Each KV head's keys are copied out contiguous once, each query head's index is built with its
 * pattern (vertical-slash estimated from the call's last 64 queries), and the result is a `keep`
 * predicate for attentionRef (the reference backend's sparse path).
 */
export function tokenMajorSparse(
  a: { q: Float32Array; k: Float32Array; nQ: number; nK: number; qPos0: number; nHeads: number; nKVHeads: number; headDim: number; scale: number },
  patterns: SparsePattern[],
): TokenMajorSparse {
  const { nQ, nK, nHeads: H, nKVHeads: G, headDim: d } = a;
  if (patterns.length !== H) throw new Error(`sparse attention: ${patterns.length} patterns for ${H} query heads`);
  const group = H / G;
  const masks: Uint8Array[][] = [];
  let kept = 0;
  let causal = 0;
  for (let g = 0; g < G; g++) {
    const k = new Float32Array(nK * d);
    for (let j = 0; j < nK; j++) k.set(a.k.subarray(j * G * d + g * d, j * G * d + (g + 1) * d), j * d);
    for (let hh = 0; hh < group; hh++) {
      const h = g * group + hh;
      const q = new Float32Array(nQ * d);
      for (let i = 0; i < nQ; i++) q.set(a.q.subarray(i * H * d + h * d, i * H * d + (h + 1) * d), i * d);
      const idx = buildIndex(patterns[h], { q, k, nQ, nK, qPos0: a.qPos0, headDim: d, scale: a.scale });
      masks[h] = indexMasks(idx);
      const dens = indexDensity(idx);
      let c = 0;
      for (let i = 0; i < nQ; i++) c += Math.min(nK, a.qPos0 + i + 1);
      kept += dens * c;
      causal += c;
    }
  }
  const block = SPARSE_BLOCK;
  return { keep: (h, i, j) => masks[h][Math.floor(i / block)][j] === 1, kept: Math.round(kept), causal };
}
