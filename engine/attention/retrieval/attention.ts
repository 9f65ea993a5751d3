// Split decode attention (RetrievalAttention §3, App. B.1): for one decode token and one KV head group,
// a resident *static* part — the first `sink` and last `window` keys, attended exactly — and a
// *retrieved* part — the top-k keys an index finds among the rest — each computed as a partial
// attention returning (out, lse), merged exactly by lse (mergeAttentionRef). When the retrieved set is
// every non-static key the result is dense attention; otherwise it is attention restricted to
// static ∪ retrieved, and exp(lse − lse_dense) is the attention mass it kept.
//
// Conventions as everywhere in engine/attention: out [nHeads·d] for the token, lse [nHeads], natural log,
// −Infinity for a part that attends nothing.
import { mergeAttentionRef } from '../../model/ref-ops.js';
import type { RetrievalIndex, SearchOptions } from './types.js';
import { dot } from './vectors.js';

export interface RetrievalInput {
  /** The decode token's queries of this group, [nHeads·d] (head h at h·d). */
  q: Float32Array;
  /** The KV head's keys and values, [≥ n, d] contiguous (head-major cache views). */
  k: Float32Array;
  v: Float32Array;
  /** Keys 0 .. n−1 exist (the token's own key included: it is the last). */
  n: number;
  /** Query heads in the group. */
  nHeads: number;
  headDim: number;
  scale: number;
}

export interface RetrievalOptions {
  /** First keys always attended (default 128, the paper's). */
  sink?: number;
  /** Last keys always attended (default 512). */
  window?: number;
  /** Keys retrieved per query head (default 100; the paper uses 2000 for hard retrieval). */
  topK?: number;
  /**
   * GQA: 'union' — every head of the group attends the union of the group's retrieved keys (a
   * superset of its own: never lower recall, ≤ G× the retrieved attention); 'per-head' — each head its
   * own top-k. Both run one search per query head.
   */
  gqa?: 'union' | 'per-head';
  search?: SearchOptions;
}

export interface RetrievalResult {
  out: Float32Array;
  lse: Float32Array;
  /** Keys whose inner product the searches computed (all heads). */
  scanned: number;
  /** Keys attended per head from the index (mean over heads). */
  retrieved: number;
  /** Keys attended per head exactly (sink, window and what the index does not cover). */
  staticKeys: number;
}

export const RETRIEVAL_DEFAULTS = { sink: 128, window: 512, topK: 100 } as const;

export interface PartialResult {
  out: Float32Array;
  lse: Float32Array;
}

/**
 * Attention of the group's heads over the keys in `ranges` ([start, end) pairs, disjoint) plus `ids`
 * (per head, or one list for all heads; disjoint from the ranges). out [nHeads·d], lse [nHeads].
 */
export function partialAttention(a: RetrievalInput, ranges: [number, number][], ids: Int32Array | Int32Array[] | null = null): PartialResult {
  const { nHeads, headDim: d, scale, k, v, q } = a;
  const out = new Float32Array(nHeads * d);
  const lse = new Float32Array(nHeads).fill(-Infinity);
  let len = 0;
  for (const [s, e] of ranges) len += Math.max(0, e - s);
  let maxIds = 0;
  if (ids) for (const x of Array.isArray(ids) ? ids : [ids]) maxIds = Math.max(maxIds, x.length);
  const sc = new Float64Array(len + maxIds);
  const acc = new Float64Array(d);
  for (let h = 0; h < nHeads; h++) {
    const qo = h * d;
    const hid = ids ? (Array.isArray(ids) ? ids[h] : ids) : null;
    const nid = hid ? hid.length : 0;
    // scores: the ranges' keys, then the ids' keys, in sc[0 .. c)
    let m = -Infinity;
    let c = 0;
    for (let ri = 0; ri < ranges.length; ri++) {
      const e = ranges[ri][1];
      for (let j = ranges[ri][0]; j < e; j++) {
        const s = dot(q, qo, k, j * d, d) * scale;
        sc[c++] = s;
        if (s > m) m = s;
      }
    }
    for (let i = 0; i < nid; i++) {
      const s = dot(q, qo, k, hid![i] * d, d) * scale;
      sc[c++] = s;
      if (s > m) m = s;
    }
    if (c === 0) continue;
    let sum = 0;
    for (let i = 0; i < c; i++) {
      const p = Math.exp(sc[i] - m);
      sc[i] = p;
      sum += p;
    }
    acc.fill(0);
    c = 0;
    for (let ri = 0; ri < ranges.length; ri++) {
      const e = ranges[ri][1];
      for (let j = ranges[ri][0]; j < e; j++) axpy(acc, sc[c++], v, j * d, d);
    }
    for (let i = 0; i < nid; i++) axpy(acc, sc[c++], v, hid![i] * d, d);
    const inv = 1 / sum;
    for (let t = 0; t < d; t++) out[qo + t] = acc[t] * inv;
    lse[h] = m + Math.log(sum);
  }
  return { out, lse };
}

/** acc += p · v[vo .. vo+d) */
function axpy(acc: Float64Array, p: number, v: Float32Array, vo: number, d: number): void {
  let t = 0;
  for (; t + 4 <= d; t += 4) {
    acc[t] += p * v[vo + t];
    acc[t + 1] += p * v[vo + t + 1];
    acc[t + 2] += p * v[vo + t + 2];
    acc[t + 3] += p * v[vo + t + 3];
  }
  for (; t < d; t++) acc[t] += p * v[vo + t];
}

/** Dense attention of the decode token over keys 0 .. n−1 (the baseline; same loops as the parts). */
export function denseDecodeAttention(a: RetrievalInput): PartialResult {
  return partialAttention(a, [[0, a.n]]);
}

/**
 * The split of keys 0 .. n−1: `middle` = the part the index answers for (its rows that are neither
 * sink nor window), `ranges` = everything else, attended exactly (so an index that lags behind the
 * window, or starts after the sink, still gives an exact merge).
 */
export function splitKeys(n: number, index: Pick<RetrievalIndex, 'base' | 'size'> | null, sink: number, window: number): { middle: [number, number]; ranges: [number, number][] } {
  const lo = index ? Math.max(sink, index.base) : 0;
  const hi = index ? Math.min(index.base + index.size, n - window) : 0;
  if (!index || hi <= lo) return { middle: [0, 0], ranges: [[0, n]] };
  const ranges: [number, number][] = [];
  if (lo > 0) ranges.push([0, lo]);
  if (hi < n) ranges.push([hi, n]);
  return { middle: [lo, hi], ranges };
}

/**
 * Split decode attention for one KV head group: static part exactly, retrieved part from `index`
 * (top-k per query head, restricted to the index's middle range), merged by lse. Without an index, or
 * when nothing is left between sink and window, it is dense.
 */
export function retrievalAttention(a: RetrievalInput, index: RetrievalIndex | null, opts: RetrievalOptions = {}): RetrievalResult {
  const sink = opts.sink ?? RETRIEVAL_DEFAULTS.sink;
  const window = opts.window ?? RETRIEVAL_DEFAULTS.window;
  const topK = opts.topK ?? RETRIEVAL_DEFAULTS.topK;
  const { nHeads, headDim: d } = a;
  const { middle, ranges } = splitKeys(a.n, index, sink, window);
  let staticKeys = 0;
  for (const [s, e] of ranges) staticKeys += e - s;
  const stat = partialAttention(a, ranges);
  if (!index || middle[1] <= middle[0]) return { ...stat, scanned: 0, retrieved: 0, staticKeys };
  const [lo, hi] = middle;
  let scanned = 0;
  const perHead: Int32Array[] = [];
  for (let h = 0; h < nHeads; h++) {
    // ask for a few more when the index reaches into the window (filtered out below)
    const extra = Math.max(0, index.base + index.size - hi) + Math.max(0, lo - index.base);
    const r = index.search(a.q.subarray(h * d, (h + 1) * d), topK + Math.min(extra, topK), opts.search);
    scanned += r.scanned;
    const keep = r.ids.filter((x) => x >= lo && x < hi);
    perHead.push(keep.subarray(0, Math.min(topK, keep.length)));
  }
  let ids: Int32Array | Int32Array[] = perHead;
  let retrieved = 0;
  if ((opts.gqa ?? 'union') === 'union') {
    const u = new Set<number>();
    for (const p of perHead) for (const x of p) u.add(x);
    ids = Int32Array.from(u).sort();
    retrieved = ids.length;
  } else retrieved = perHead.reduce((s, p) => s + p.length, 0) / nHeads;
  const got = partialAttention(a, [], ids);
  const merged = mergeAttentionRef(stat.out, stat.lse, got.out, got.lse, 1, nHeads, d);
  return { out: merged.out, lse: merged.lse, scanned, retrieved, staticKeys };
}
