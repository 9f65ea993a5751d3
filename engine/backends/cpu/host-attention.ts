// Attention computed by the host around onnxruntime tiles, for the CPU backend's sparse prefill (issue 8).
//
// The backend's usual attention lives inside the step graph (emitAttention). A sparse index depends on
// the layer's own queries and keys (the last-64-query estimate), so a sparse layer cannot be one graph
// node: with sparse prefill enabled the step graph is cut around every attention op (index.ts
// `partition`) and a sparse op runs here instead —
//   1. the slice's new K/V rows are written into the cache (the KV type's rounding, like the graph's
//      `kvn` output), through the page table;
//   2. each KV head's keys/values 0 … pos+n−1 are read out as contiguous f32 [nK, d] (zero-copy for an
//      f32 cache held in one run, engine/kv/f16.ts's bulk conversion for f16);
//   3. per KV head, the index of each of its query heads is built (vertical-slash: Â of the last 64
//      queries on onnxruntime, CpuVerticalSlashEstimator; A-shape and block-sparse on the host), and
//      BatchedSparseCpu computes (out, lse): each (head, 64-row block) attends its gathered selection,
//      many of them per onnxruntime run.
// Slices shorter than SPARSE_MIN_ROWS (decode rows batched with a prefill chunk) attend densely here.

import type { AttentionParams, SeqSlice, SparseStats } from '../../model/backend.js';
import { SPARSE_MIN_ROWS } from '../../model/backend.js';
import { CpuAttention } from '../../attention/cpu-attention.js';
import { attentionRecall, buildGroupIndex, headGroupOf, type HeadGroupInput } from '../../attention/sparse/attention.js';
import { BatchedSparseCpu } from '../../attention/sparse/batched-cpu.js';
import { CpuVerticalSlashEstimator } from '../../attention/sparse/estimate-cpu.js';
import { indexDensity, type SparseIndex } from '../../attention/sparse/patterns.js';
import { f16ToF32Array, f32ToF16Array } from '../../kv/f16.js';
import { kvRuns, kvStoreOf, type KVStore } from './kv.js';
import type { SessionConfig } from './ort.js';

export const CPU_SPARSE_BLOCK = 128;

/** A head whose sparse index keeps more than this share of the causal entries is computed dense. */
export const DENSE_ABOVE = 0.6;

/** Per [layer][query head], sampled attention recall rows (the last 64 rows of each sparse call). */
export type RecallSamples = number[][][];

export class HostAttention {
  private readonly attn: CpuAttention;
  private readonly est: CpuVerticalSlashEstimator;
  private readonly batched: BatchedSparseCpu;
  /** When set, every sparse call also computes dense lse for its last 64 rows and records their recall. */
  recall: RecallSamples | null = null;
  /** When set, sees every sparse call's head group before it is computed (`repokv calibrate`). */
  capture: ((layer: number, kvHead: number, a: HeadGroupInput) => void) | null = null;
  /** Heads whose index keeps more than this share run dense (1: never; exact sparse semantics, tests). */
  denseAbove = DENSE_ABOVE;
  /**
   * Query rows per index block. 128, not MInference's 64: every key a block selects is read once per
   * block, and on onnxruntime's CPU GEMMs a 128-row block costs about 1.5× less per entry than a 64-row
   * one for ~2% more entries (README). 64 reproduces the reference backend's index exactly (tests).
   */
  block = CPU_SPARSE_BLOCK;

  constructor(cfg: SessionConfig) {
    this.attn = new CpuAttention(cfg);
    this.est = new CpuVerticalSlashEstimator(cfg);
    this.batched = new BatchedSparseCpu(cfg);
  }

  dispose(): void {
    this.attn.dispose();
    this.est.dispose();
    this.batched.dispose();
  }

  /**
   * One attention op: q [rows, H·d], k/v [rows, G·d] (this step's new rows), per sequence slice. Writes
   * the new K/V rows and returns [rows, H·d].
   */
  run(q: Float32Array, k: Float32Array, v: Float32Array, rows: number, seqs: SeqSlice[], p: AttentionParams, stats: SparseStats): Float32Array {
    const t0 = performance.now();
    const { nHeads: H, nKVHeads: G, headDim: d } = p;
    const group = H / G;
    const out = new Float32Array(rows * H * d);
    for (const s of seqs) {
      const store = kvStoreOf(s.kv)!;
      writeRows(store, s, p.layer, k, v, G, d);
      const nK = s.pos + s.n;
      const sparse = p.sparse && s.n >= SPARSE_MIN_ROWS ? p.sparse : null;
      const rm = s.retrieval ?? null;
      // Retrieval keeps an f32 copy of the sequence's keys/values (the index and its exact parts read
      // them by position); the mirror follows the cache, filled from the pages when it lags behind.
      const mirror = rm ? this.mirror(s, store, p.layer, G, d) : null;
      for (let g = 0; g < G; g++) {
        const K = mirror ? mirror.view(p.layer, g, 0, nK) : readHead(store, s, p.layer, 0, g, nK, d);
        const V = mirror ? mirror.view(p.layer, g, 1, nK) : readHead(store, s, p.layer, 1, g, nK, d);
        const qg = new Float32Array(s.n * group * d);
        for (let i = 0; i < s.n; i++) qg.set(q.subarray((s.row + i) * H * d + g * group * d, (s.row + i) * H * d + (g + 1) * group * d), i * group * d);
        const a: HeadGroupInput = { q: qg, k: K, v: V, nQ: s.n, nK, qPos0: s.pos, nHeads: group, headDim: d, scale: p.scale };
        let r: { out: Float32Array; lse: Float32Array };
        if (rm && s.n >= SPARSE_MIN_ROWS) rm.observePrefillQueries(p.layer, g, qg, s.pos, s.n);
        if (rm && s.n < SPARSE_MIN_ROWS && rm.useRetrieval(nK)) {
          // Decode rows (and short appends): static sink + window exactly, top-k from the index.
          const tr = performance.now();
          const o = new Float32Array(s.n * group * d);
          for (let i = 0; i < s.n; i++) {
            const n = s.pos + i + 1;
            const res = rm.attend(p.layer, g, { q: qg.subarray(i * group * d, (i + 1) * group * d), k: K, v: V, n, nHeads: group, headDim: d, scale: p.scale });
            o.set(res.out, i * group * d);
            stats.retrievalRows = (stats.retrievalRows ?? 0) + 1;
            stats.retrievalKeys = (stats.retrievalKeys ?? 0) + n;
            stats.retrievalScanned = (stats.retrievalScanned ?? 0) + res.scanned;
            stats.retrievalAttended = (stats.retrievalAttended ?? 0) + res.staticKeys + res.retrieved;
          }
          stats.retrievalMs = (stats.retrievalMs ?? 0) + performance.now() - tr;
          r = { out: o, lse: new Float32Array(0) };
        } else if (!sparse) {
          r = this.attn.run({ q: qg, nQ: s.n, qPos0: s.pos, k: [K], v: [V], nK, nHeads: group, nKVHeads: 1, headDim: d, scale: p.scale });
        } else {
          this.capture?.(p.layer, g, a);
          const te = performance.now();
          const idx = buildGroupIndex(a, sparse.slice(g * group, (g + 1) * group), (h, vert, sl) => this.est.estimate(h, vert, sl), this.block);
          stats.estimateMs += performance.now() - te;
          let causal = 0;
          for (let i = 0; i < s.n; i++) causal += Math.min(nK, s.pos + i + 1);
          for (const x of idx) {
            stats.keptEntries += Math.round(indexDensity(x) * causal);
            stats.causalEntries += causal;
          }
          stats.calls++;
          r = this.sparseOrDense(a, idx);
          if (this.recall) this.sampleRecall(a, r.lse, p.layer, g * group);
        }
        for (let i = 0; i < s.n; i++) out.set(r.out.subarray(i * group * d, (i + 1) * group * d), (s.row + i) * H * d + g * group * d);
      }
    }
    stats.attentionMs += performance.now() - t0;
    return out;
  }

  private mirrors = new WeakMap<object, KVMirror>();
  /** The f32 mirror of a sequence's K/V, synced to this step's rows at `layer`. */
  private mirror(s: SeqSlice, store: KVStore, layer: number, G: number, d: number): KVMirror {
    let m = this.mirrors.get(s.kv);
    if (!m) {
      m = new KVMirror(G, d);
      this.mirrors.set(s.kv, m);
    }
    m.sync(store, s, layer);
    return m;
  }

  /**
   * The batched sparse kernel for the heads whose index is sparse enough to pay for its gathers; a
   * head whose index keeps more than DENSE_ABOVE of the causal entries runs dense (large tiles, and
   * exact) — the index would cost more than it saves. The index's kept count is reported either way.
   */
  private sparseOrDense(a: HeadGroupInput, idx: SparseIndex[]): { out: Float32Array; lse: Float32Array } {
    const dense = idx.map((x) => indexDensity(x) > this.denseAbove);
    if (!dense.some(Boolean)) return this.batched.run(a, idx);
    const d = a.headDim;
    const out = new Float32Array(a.nQ * a.nHeads * d);
    const lse = new Float32Array(a.nHeads * a.nQ);
    for (let h = 0; h < a.nHeads; h++) {
      const one = headGroupOf(a, h);
      const r = dense[h] ? this.attn.run({ q: one.q, nQ: a.nQ, qPos0: a.qPos0, k: [a.k], v: [a.v], nK: a.nK, nHeads: 1, nKVHeads: 1, headDim: d, scale: a.scale }) : this.batched.run(one, [idx[h]]);
      for (let i = 0; i < a.nQ; i++) out.set(r.out.subarray(i * d, (i + 1) * d), (i * a.nHeads + h) * d);
      lse.set(r.lse, h * a.nQ);
    }
    return { out, lse };
  }

  /** Recall of the last ≤ 64 rows of a sparse call against dense attention over the same keys. */
  private sampleRecall(a: HeadGroupInput, lse: Float32Array, layer: number, head0: number): void {
    const L = Math.min(64, a.nQ);
    const r0 = a.nQ - L;
    const dense = this.attn.run({ q: a.q.subarray(r0 * a.nHeads * a.headDim), nQ: L, qPos0: a.qPos0 + r0, k: [a.k], v: [a.v], nK: a.nK, nHeads: a.nHeads, nKVHeads: 1, headDim: a.headDim, scale: a.scale });
    for (let h = 0; h < a.nHeads; h++) {
      const rec = attentionRecall(lse.subarray(h * a.nQ + r0, (h + 1) * a.nQ), dense.lse.subarray(h * L, (h + 1) * L));
      const byLayer = (this.recall![layer] ??= []);
      const arr = (byLayer[head0 + h] ??= []);
      for (const x of rec) arr.push(x);
    }
  }
}

/** Writes slice `s`'s new K/V rows (token-major [rows, G·d] in `k`/`v`) into its cache at layer `layer`. */
export function writeRows(store: KVStore, s: SeqSlice, layer: number, k: Float32Array, v: Float32Array, G: number, d: number): void {
  const half = store.precision === 'f16';
  for (const r of kvRuns(s.kv, s.pos, s.pos + s.n)) {
    for (const which of [0, 1] as const) {
      const src = which === 0 ? k : v;
      const dst = store.array(r.block, layer, which);
      for (let h = 0; h < G; h++) {
        const o = (h * store.blockRows(r.block) + r.row) * d;
        for (let t = 0; t < r.n; t++) {
          const from = (s.row + r.t0 - s.pos + t) * G * d + h * d;
          if (half) f32ToF16Array(src, dst as Uint16Array, d, from, o + t * d);
          else (dst as Float32Array).set(src.subarray(from, from + d), o + t * d);
        }
      }
    }
  }
}

/** KV head h's keys (which 0) or values (1) of tokens 0 … nK−1 as contiguous f32 [nK, d]. */
export function readHead(store: KVStore, s: SeqSlice, layer: number, which: 0 | 1, h: number, nK: number, d: number): Float32Array {
  const runs = kvRuns(s.kv, 0, nK);
  if (store.precision === 'f32' && runs.length === 1) {
    const r = runs[0];
    const o = (h * store.blockRows(r.block) + r.row) * d;
    return (store.array(r.block, layer, which) as Float32Array).subarray(o, o + nK * d);
  }
  const out = new Float32Array(nK * d);
  copyRows(store, s.kv, layer, which, h, 0, nK, d, out);
  return out;
}

/** KV head h's keys (which 0) or values (1) of tokens t0 … t1−1 into `dst` as f32, row t at t·d. */
function copyRows(store: KVStore, kv: SeqSlice['kv'], layer: number, which: 0 | 1, h: number, t0: number, t1: number, d: number, dst: Float32Array): void {
  for (const r of kvRuns(kv, t0, t1)) {
    const o = (h * store.blockRows(r.block) + r.row) * d;
    const src = store.array(r.block, layer, which);
    if (store.precision === 'f16') f16ToF32Array(src as Uint16Array, dst, r.n * d, o, r.t0 * d);
    else dst.set((src as Float32Array).subarray(o, o + r.n * d), r.t0 * d);
  }
}

/**
 * An f32 copy of one sequence's keys and values per (layer, KV head), grown as it grows: what the
 * retrieval index and its exact parts read by position (the cache's own f16 pages would need a
 * conversion per read). Rows equal the cache's (f16-rounded when the cache is f16).
 */
export class KVMirror {
  private data: Float32Array[][] = []; // [layer][(head·2 + which)]
  private lens: number[] = [];
  private cap = 0;
  constructor(
    readonly G: number,
    readonly d: number,
  ) {}

  /** Rows 0 … s.pos + s.n − 1 of `layer`, copied from the cache where the mirror lags. */
  sync(store: KVStore, s: SeqSlice, layer: number): void {
    const need = s.pos + s.n;
    const d = this.d;
    let have = Math.min(this.lens[layer] ?? 0, s.pos); // a rewound sequence rewrites its tail
    if (need > this.cap) {
      const cap = Math.max(need, Math.ceil(this.cap * 1.5), 1024);
      this.data = this.data.map((l) =>
        l.map((a) => {
          const b = new Float32Array(cap * d);
          b.set(a);
          return b;
        }),
      );
      this.cap = cap;
    }
    let arrs = this.data[layer];
    if (!arrs) {
      arrs = this.data[layer] = Array.from({ length: 2 * this.G }, () => new Float32Array(this.cap * d));
      have = 0;
    }
    if (have >= need) return;
    for (let h = 0; h < this.G; h++) for (const which of [0, 1] as const) copyRows(store, s.kv, layer, which, h, have, need, d, arrs[h * 2 + which]);
    this.lens[layer] = need;
  }

  view(layer: number, h: number, which: 0 | 1, n: number): Float32Array {
    return this.data[layer][h * 2 + which].subarray(0, n * this.d);
  }
}
