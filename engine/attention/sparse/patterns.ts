// MInference's three sparse-prefill patterns (research/seed_systems.md §1.2) as key selections per
// 64-row query block: for query rows [q0, q1) a list of contiguous key ranges plus single gathered key
// columns — the `KeySelection` that engine/attention/cpu-attention.ts consumes, and the
// (block_offset, column_index) layout of MInference's VS kernel. The causal mask is always applied on
// top by the attention kernel, so a selection may name keys right of a row's diagonal.
//
// - A-shape: sink columns [0, sink) and a causal local window of `local` keys. Static, no estimation.
// - Vertical-slash: estimated online from the last 64 queries (Alg. 2): Â = causal softmax of their
//   scores over all keys; column sums → top-k_v vertical columns (first 30 forced: sinks), sums along
//   diagonals (offset o = i − j) → top-k_s slash offsets (offsets 0..99 forced: the local window);
//   k_v = min(nK, max(k_v, 30)), k_s = min(nK, max(k_s, 100)) (MInference floors k_s at 50; see below). Then per query block every slash becomes
//   the key range it crosses ([p0 − o, p1 − o), 64 wide), ranges that touch are merged, and verticals
//   not inside a range become gathered columns (Alg. 4, the point–range merge).
// - Block-sparse: q and k mean-pooled over 64-token blocks, pooled scores with a block-causal mask,
//   top-k key blocks per query block (Alg. 3). The diagonal key block(s) and block 0 are always kept —
//   without the diagonal a row could attend nothing, and block 0 holds the sink.
//
// Everything is plain TypeScript, deterministic (ties break toward the lower index), written to be the
// reference of the WGSL index kernels. Positions: query row i sits at absolute position qPos0 + i (a
// chunk after a cached prefix), keys 0 .. nK−1 exist, query i sees keys ≤ qPos0 + i.

import type { KeySelection } from '../cpu-attention.js';

/** Query rows per block and key-block width: MInference's 64×64 tiles, our KV page size. */
export const SPARSE_BLOCK = 64;
/** Queries the vertical-slash estimate looks at (MInference `last_q`). */
export const LAST_Q = 64;
/** Vertical-slash: columns always kept (attention sinks), diagonals always kept (local window) [C: minference_forward.py]. */
export const VS_FORCED_COLUMNS = 30;
export const VS_FORCED_DIAGONALS = 100;
/**
 * Vertical-slash budget floors. MInference clamps k_v ≥ 30 and k_s ≥ 50 [C: minference_forward.py], so a
 * k_s below 100 would drop part of its own forced local window; we floor at the forced counts instead,
 * so forced entries are always present (issue 8's test).
 */
export const VS_MIN_VERTICAL = VS_FORCED_COLUMNS;
export const VS_MIN_SLASH = VS_FORCED_DIAGONALS;

export type SparsePattern =
  | { kind: 'dense' }
  | { kind: 'a-shape'; sink: number; local: number }
  | { kind: 'vertical-slash'; vertical: number; slash: number }
  | { kind: 'block-sparse'; blocks: number };

/** One query head's inputs: q [nQ, d] and k [≥ nK, d], both contiguous for this head. */
export interface HeadInput {
  q: Float32Array;
  k: Float32Array;
  nQ: number;
  nK: number;
  qPos0: number;
  headDim: number;
  scale: number;
}

/** Key selections for every query block of one head. */
export interface SparseIndex {
  block: number;
  nQ: number;
  qPos0: number;
  nK: number;
  /** One per query block: rows [b·block, min(nQ, (b+1)·block)). */
  blocks: KeySelection[];
}

/** The selected vertical columns (ascending) and slash offsets (ascending) of one head. */
export interface VerticalSlash {
  columns: Int32Array;
  offsets: Int32Array;
}

function queryBlocks(nQ: number, block: number): number {
  return Math.ceil(nQ / block);
}

/** Sorts and merges half-open ranges that overlap or touch; clips to [0, hi). */
export function mergeRanges(rs: [number, number][], hi: number): [number, number][] {
  const c = rs.map(([a, b]) => [Math.max(0, a), Math.min(hi, b)] as [number, number]).filter(([a, b]) => a < b);
  c.sort((x, y) => x[0] - y[0] || x[1] - y[1]);
  const out: [number, number][] = [];
  for (const r of c) {
    const last = out[out.length - 1];
    if (last && r[0] <= last[1]) last[1] = Math.max(last[1], r[1]);
    else out.push([r[0], r[1]]);
  }
  return out;
}

/** Indices of the k largest scores, ties toward the lower index, returned ascending. */
export function topK(score: Float64Array | Float32Array, k: number): Int32Array {
  const n = score.length;
  k = Math.max(0, Math.min(n, k));
  const idx = Array.from({ length: n }, (_, i) => i);
  idx.sort((a, b) => (score[b] === score[a] ? a - b : score[b] > score[a] ? 1 : -1));
  return Int32Array.from(idx.slice(0, k)).sort();
}

/** Which query-block rows' absolute positions: [p0, p1) and the causal key horizon (exclusive). */
function blockSpan(idx: { nQ: number; qPos0: number; nK: number; block: number }, b: number): { q0: number; q1: number; p0: number; p1: number; horizon: number } {
  const q0 = b * idx.block;
  const q1 = Math.min(idx.nQ, q0 + idx.block);
  const p0 = idx.qPos0 + q0;
  const p1 = idx.qPos0 + q1;
  return { q0, q1, p0, p1, horizon: Math.min(idx.nK, p1) };
}

// ---------------------------------------------------------------- A-shape

export function aShapeIndex(sink: number, local: number, nQ: number, qPos0: number, nK: number, block = SPARSE_BLOCK): SparseIndex {
  const idx: SparseIndex = { block, nQ, qPos0, nK, blocks: [] };
  for (let b = 0; b < queryBlocks(nQ, block); b++) {
    const { p0, horizon } = blockSpan(idx, b);
    // Row p sees [p − local + 1, p]; the block's union is [p0 − local + 1, p1).
    idx.blocks.push({ ranges: mergeRanges([[0, sink], [p0 - local + 1, horizon]], horizon) });
  }
  return idx;
}

// ---------------------------------------------------------------- vertical-slash

/**
 * Â for the vertical-slash estimate: the causal softmax of the last L = min(64, nQ) queries over all
 * keys, [L, nK] row-major (zeros right of each row's diagonal). Plain reference; the CPU path computes
 * the same with one ORT graph (estimate-cpu.ts).
 */
export function lastQueryProbs(h: HeadInput): Float32Array {
  const { nQ, nK, qPos0, headDim: d, scale } = h;
  const L = Math.min(LAST_Q, nQ);
  const probs = new Float32Array(L * nK);
  const s = new Float64Array(nK);
  for (let r = 0; r < L; r++) {
    const row = nQ - L + r;
    const last = Math.min(nK - 1, qPos0 + row);
    let m = -Infinity;
    for (let j = 0; j <= last; j++) {
      let dot = 0;
      for (let t = 0; t < d; t++) dot += h.q[row * d + t] * h.k[j * d + t];
      s[j] = dot * scale;
      if (s[j] > m) m = s[j];
    }
    let sum = 0;
    for (let j = 0; j <= last; j++) {
      s[j] = Math.exp(s[j] - m);
      sum += s[j];
    }
    for (let j = 0; j <= last; j++) probs[r * nK + j] = s[j] / sum;
  }
  return probs;
}

/**
 * Selection from Â (Alg. 2): column sums and sums along diagonals (offset o = i − j of row position
 * i = qPos0 + nQ − L + r), forced sinks and local diagonals, top-k of each.
 */
export function verticalSlashFromProbs(probs: Float32Array, L: number, nK: number, rowPos0: number, vertical: number, slash: number): VerticalSlash {
  const vert = new Float64Array(nK);
  const diag = new Float64Array(nK);
  for (let r = 0; r < L; r++) {
    const last = Math.min(nK - 1, rowPos0 + r);
    for (let j = 0; j <= last; j++) {
      const p = probs[r * nK + j];
      vert[j] += p;
      diag[rowPos0 + r - j] += p;
    }
  }
  for (let j = 0; j < Math.min(nK, VS_FORCED_COLUMNS); j++) vert[j] = Infinity;
  for (let o = 0; o < Math.min(nK, VS_FORCED_DIAGONALS); o++) diag[o] = Infinity;
  const kv = Math.min(nK, Math.max(vertical, VS_MIN_VERTICAL));
  const ks = Math.min(nK, Math.max(slash, VS_MIN_SLASH));
  return { columns: topK(vert, kv), offsets: topK(diag, ks) };
}

/** Online estimate (Alg. 2) from the last min(64, nQ) queries, plain reference. */
export function estimateVerticalSlash(h: HeadInput, vertical: number, slash: number): VerticalSlash {
  const L = Math.min(LAST_Q, h.nQ);
  return verticalSlashFromProbs(lastQueryProbs(h), L, h.nK, h.qPos0 + h.nQ - L, vertical, slash);
}

/**
 * Index conversion (Alg. 4): per query block with positions [p0, p1), slash offset o covers keys
 * [p0 − o, p1 − o); touching ranges merge; verticals outside every range (and before the block's causal
 * horizon) become single columns.
 */
export function verticalSlashIndex(vs: VerticalSlash, nQ: number, qPos0: number, nK: number, block = SPARSE_BLOCK): SparseIndex {
  const idx: SparseIndex = { block, nQ, qPos0, nK, blocks: [] };
  for (let b = 0; b < queryBlocks(nQ, block); b++) {
    const { p0, p1, horizon } = blockSpan(idx, b);
    // Offsets descending give ranges ascending: one linear merge, no sort (O(k_s) per block, Alg. 4).
    const ranges: [number, number][] = [];
    for (let x = vs.offsets.length - 1; x >= 0; x--) {
      const o = vs.offsets[x];
      const a = Math.max(0, p0 - o);
      const e = Math.min(horizon, p1 - o);
      if (a >= e) continue;
      const last = ranges[ranges.length - 1];
      if (last && a <= last[1]) last[1] = Math.max(last[1], e);
      else ranges.push([a, e]);
    }
    const cols: number[] = [];
    let r = 0;
    for (const c of vs.columns) {
      if (c >= horizon) break;
      while (r < ranges.length && ranges[r][1] <= c) r++;
      if (r < ranges.length && ranges[r][0] <= c) continue;
      cols.push(c);
    }
    idx.blocks.push({ ranges, columns: Int32Array.from(cols) });
  }
  return idx;
}

// ---------------------------------------------------------------- block-sparse

/** Mean-pooled 64-row blocks, top-k key blocks per query block (Alg. 3), diagonal block(s) and block 0 forced. */
export function blockSparseIndex(h: HeadInput, topBlocks: number, block = SPARSE_BLOCK): SparseIndex {
  const { nQ, nK, qPos0, headDim: d, scale } = h;
  const idx: SparseIndex = { block, nQ, qPos0, nK, blocks: [] };
  const nKB = Math.ceil(nK / block);
  const kp = new Float64Array(nKB * d);
  for (let kb = 0; kb < nKB; kb++) {
    const j1 = Math.min(nK, (kb + 1) * block);
    for (let j = kb * block; j < j1; j++) for (let t = 0; t < d; t++) kp[kb * d + t] += h.k[j * d + t];
    for (let t = 0; t < d; t++) kp[kb * d + t] /= j1 - kb * block;
  }
  const qp = new Float64Array(d);
  for (let b = 0; b < queryBlocks(nQ, block); b++) {
    const { q0, q1, p0, horizon } = blockSpan(idx, b);
    qp.fill(0);
    for (let i = q0; i < q1; i++) for (let t = 0; t < d; t++) qp[t] += h.q[i * d + t] / (q1 - q0);
    const visible = Math.ceil(horizon / block); // key blocks starting before the horizon
    const score = new Float64Array(visible);
    for (let kb = 0; kb < visible; kb++) {
      let dot = 0;
      for (let t = 0; t < d; t++) dot += qp[t] * kp[kb * d + t];
      score[kb] = dot * scale;
    }
    const diag0 = Math.floor(Math.min(p0, horizon - 1) / block);
    score[0] = Infinity;
    for (let kb = diag0; kb < visible; kb++) score[kb] = Infinity; // diagonal block(s)
    const forced = visible - diag0 + (diag0 > 0 ? 1 : 0);
    const chosen = topK(score, Math.max(topBlocks, forced));
    idx.blocks.push({ ranges: mergeRanges(Array.from(chosen, (kb) => [kb * block, (kb + 1) * block] as [number, number]), horizon) });
  }
  return idx;
}

// ---------------------------------------------------------------- common

/** How the vertical-slash estimate is computed (default: the plain reference; CPU: estimate-cpu.ts). */
export type VerticalSlashEstimate = (h: HeadInput, vertical: number, slash: number) => VerticalSlash;

/** The index of a pattern for one head (dense: every causal key). */
export function buildIndex(p: SparsePattern, h: HeadInput, block = SPARSE_BLOCK, estimate: VerticalSlashEstimate = estimateVerticalSlash): SparseIndex {
  switch (p.kind) {
    case 'dense':
      return aShapeIndex(0, h.nK, h.nQ, h.qPos0, h.nK, block);
    case 'a-shape':
      return aShapeIndex(p.sink, p.local, h.nQ, h.qPos0, h.nK, block);
    case 'vertical-slash':
      return verticalSlashIndex(estimate(h, p.vertical, p.slash), h.nQ, h.qPos0, h.nK, block);
    case 'block-sparse':
      return blockSparseIndex(h, p.blocks, block);
  }
}

/** Membership masks per query block over keys (for the reference and tests): mask[b][j] = 1 if selected. */
export function indexMasks(idx: SparseIndex): Uint8Array[] {
  return idx.blocks.map((sel) => {
    const m = new Uint8Array(idx.nK);
    for (const [a, b] of sel.ranges) m.fill(1, a, b);
    if (sel.columns) for (const c of sel.columns) m[c] = 1;
    return m;
  });
}

/** Fraction of the causal (query, key) entries that the index computes (per row: O(ranges + columns)). */
export function indexDensity(idx: SparseIndex): number {
  let kept = 0;
  let all = 0;
  for (let i = 0; i < idx.nQ; i++) {
    const end = Math.min(idx.nK, idx.qPos0 + i + 1);
    const sel = idx.blocks[Math.floor(i / idx.block)];
    for (const [a, b] of sel.ranges) kept += Math.max(0, Math.min(b, end) - a);
    if (sel.columns) for (const c of sel.columns) if (c < end) kept++;
    all += end;
  }
  return all ? kept / all : 1;
}
