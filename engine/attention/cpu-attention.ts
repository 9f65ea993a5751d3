// Causal GQA attention on the CPU through onnxruntime (MLAS GEMMs), returning (out, lse).
//
// Work is cut into tiles of (query block × key tile). One ONNX graph computes a tile for all heads:
// scores S = scale·Q·Kᵀ per KV head (FusedMatMul, transB), a causal mask from the query and key
// positions, the tile's row max m and sum l, O = softmax·V, and lse = m + log l. Tiles of one query
// block are merged on the host with the exact lse-weighted rule (mergeAttentionRef's), so a query
// block may attend any set of keys: contiguous ranges of the cache are passed as zero-copy views, and
// scattered columns are gathered into a dense tile with their positions — the MInference layout
// (64-wide key blocks from slash lines + gathered vertical columns, seed_systems.md §1.2) plugs in as
// a `KeySelection` per query block.
//
// The K/V of each KV head must be contiguous [nK, headDim] (a head-major cache), so a decode step
// passes views of the cache and copies nothing.

import { DT, F, GraphBuilder } from '../backends/cpu/onnx.js';
import { f32Tensor, Graph, type SessionConfig } from '../backends/cpu/ort.js';

/** Keys one query block attends (before the causal mask, which is always applied). */
export interface KeySelection {
  /** Half-open key ranges [start, end), ascending and disjoint. */
  ranges: [number, number][];
  /** Single key columns (not inside any range), ascending. */
  columns?: Int32Array;
}

export interface CpuAttentionInput {
  /** Queries [nQ, nHeads·headDim]; query i sits at position qPos0 + i. */
  q: Float32Array;
  nQ: number;
  qPos0: number;
  /** Per KV head, keys and values [≥ nK, headDim] contiguous (views of a head-major cache). */
  k: Float32Array[];
  v: Float32Array[];
  /** Keys 0 .. nK−1 exist. */
  nK: number;
  nHeads: number;
  nKVHeads: number;
  headDim: number;
  scale: number;
  /** Sparse attention: the keys of query rows [q0, q1) (default: all keys, causal). */
  select?: (q0: number, q1: number) => KeySelection;
  /** Query rows per block when `select` is given (default 64, MInference's block). */
  selectBlock?: number;
}

export interface AttentionResult {
  /** [nQ, nHeads·headDim] */
  out: Float32Array;
  /** [nHeads, nQ], natural log; −Infinity where a row attends nothing. */
  lse: Float32Array;
}

/** Largest score tile (heads × query rows × keys) per run, in floats: bounds ORT's temporaries. */
const TILE_FLOATS = 1 << 22;

const NEG_INF = -Infinity;

interface TileGraph {
  graph: Graph;
}

/** Runs attention tiles; graphs are cached per head layout (one per model, shared by all layers). */
export class CpuAttention {
  private graphs = new Map<string, TileGraph>();
  private arange = new Float32Array(0);

  /** `tileFloats`: score-tile budget (heads × query rows × keys) per run; small values force splits (tests). */
  constructor(
    private readonly cfg: SessionConfig = {},
    private readonly tileFloats = TILE_FLOATS,
  ) {}

  dispose(): void {
    for (const g of this.graphs.values()) g.graph.dispose();
    this.graphs.clear();
  }

  private positions(n: number): Float32Array {
    if (this.arange.length < n) {
      this.arange = new Float32Array(Math.max(n, 2 * this.arange.length, 4096));
      for (let i = 0; i < this.arange.length; i++) this.arange[i] = i;
    }
    return this.arange;
  }

  private tileGraph(nHeads: number, nKV: number, d: number, scale: number, masked: boolean): TileGraph {
    const key = `${nHeads}/${nKV}/${d}/${scale}/${masked}`;
    let t = this.graphs.get(key);
    if (!t) {
      t = { graph: new Graph(buildTileGraph(nHeads, nKV, d, scale, masked), this.cfg) };
      this.graphs.set(key, t);
    }
    return t;
  }

  /**
   * One tile: queries rows [q0, q1) of `a` against keys given per KV head as [m, d] arrays with their
   * positions `kpos` [m]. Returns out [n, nHeads·d] and lse [nHeads, n].
   * The graph takes the queries of KV head i as [grp, n, d] (head-major); for one query row that is
   * a view of q, and the outputs are views of out / lse: a decode step copies nothing.
   */
  tile(a: CpuAttentionInput, q0: number, q1: number, k: Float32Array[], v: Float32Array[], kpos: Float32Array): AttentionResult {
    const { nHeads, nKVHeads: G, headDim: d } = a;
    const grp = nHeads / G;
    const n = q1 - q0;
    const m = kpos.length;
    // Keys are ascending in every tile (ranges, sorted columns): the last key decides the mask.
    const masked = kpos[m - 1] > a.qPos0 + q0;
    const t = this.tileGraph(nHeads, G, d, a.scale, masked);
    const q = a.q.subarray(q0 * nHeads * d, q1 * nHeads * d);
    const out = new Float32Array(n * nHeads * d);
    const lse = new Float32Array(nHeads * n);
    const feeds: Record<string, ReturnType<typeof f32Tensor>> = {};
    const fetches: Record<string, ReturnType<typeof f32Tensor>> = {};
    const oh: Float32Array[] = [];
    for (let i = 0; i < G; i++) {
      let qi: Float32Array;
      if (n === 1) qi = q.subarray(i * grp * d, (i + 1) * grp * d);
      else {
        qi = new Float32Array(grp * n * d);
        for (let j = 0; j < grp; j++) for (let r = 0; r < n; r++) qi.set(q.subarray(r * nHeads * d + (i * grp + j) * d, r * nHeads * d + (i * grp + j + 1) * d), (j * n + r) * d);
      }
      feeds[`q${i}`] = f32Tensor(qi, [grp, n, d]);
      feeds[`k${i}`] = f32Tensor(k[i].subarray(0, m * d), [m, d]);
      feeds[`v${i}`] = f32Tensor(v[i].subarray(0, m * d), [m, d]);
      oh.push(n === 1 ? out.subarray(i * grp * d, (i + 1) * grp * d) : new Float32Array(grp * n * d));
      fetches[`o${i}`] = f32Tensor(oh[i], [grp, n, d]);
      fetches[`l${i}`] = f32Tensor(lse.subarray(i * grp * n, (i + 1) * grp * n), [grp, n]);
    }
    if (masked) {
      feeds.qpos = f32Tensor(this.positions(a.qPos0 + q1).subarray(a.qPos0 + q0, a.qPos0 + q1), [n]);
      feeds.kpos = f32Tensor(kpos, [m]);
    }
    t.graph.run(feeds, fetches);
    if (n > 1) {
      for (let i = 0; i < G; i++) {
        for (let j = 0; j < grp; j++) for (let r = 0; r < n; r++) out.set(oh[i].subarray((j * n + r) * d, (j * n + r + 1) * d), r * nHeads * d + (i * grp + j) * d);
      }
    }
    return { out, lse };
  }

  /** Dense causal attention (or sparse with `a.select`), tiled and merged. */
  run(a: CpuAttentionInput): AttentionResult {
    const { nQ, nHeads, headDim: d } = a;
    const out = new Float32Array(nQ * nHeads * d);
    const lse = new Float32Array(nHeads * nQ).fill(NEG_INF);
    // Query block: the whole query set when it fits a reasonable tile, else blocks of 64·k rows.
    let bq = a.select ? (a.selectBlock ?? 64) : Math.max(1, Math.min(nQ, Math.floor(this.tileFloats / (nHeads * Math.min(a.nK, 2048)))));
    if (!a.select && bq < nQ) bq = Math.max(64, bq - (bq % 64));
    for (let q0 = 0; q0 < nQ; q0 += bq) {
      const q1 = Math.min(nQ, q0 + bq);
      const lastKey = Math.min(a.nK, a.qPos0 + q1); // exclusive: causal horizon of the block's last row
      const sel: KeySelection = a.select ? a.select(q0, q1) : { ranges: [[0, lastKey]] };
      const bk = Math.max(64, Math.floor(this.tileFloats / (nHeads * (q1 - q0))));
      let acc: AttentionResult | null = null;
      const fold = (r: AttentionResult) => {
        acc = acc ? mergeInto(acc, r, q1 - q0, nHeads, d) : r;
      };
      for (const [s0, s1] of sel.ranges) {
        const e = Math.min(s1, lastKey);
        for (let k0 = s0; k0 < e; k0 += bk) {
          const k1 = Math.min(e, k0 + bk);
          const kv = (arr: Float32Array[]) => arr.map((x) => x.subarray(k0 * d, k1 * d));
          fold(this.tile(a, q0, q1, kv(a.k), kv(a.v), this.positions(k1).subarray(k0, k1)));
        }
      }
      const cols = sel.columns ? sel.columns.filter((c) => c < lastKey) : undefined;
      if (cols && cols.length) {
        for (let c0 = 0; c0 < cols.length; c0 += bk) {
          const part = cols.subarray(c0, Math.min(cols.length, c0 + bk));
          const gather = (arr: Float32Array[]) =>
            arr.map((x) => {
              const t = new Float32Array(part.length * d);
              for (let j = 0; j < part.length; j++) t.set(x.subarray(part[j] * d, (part[j] + 1) * d), j * d);
              return t;
            });
          fold(this.tile(a, q0, q1, gather(a.k), gather(a.v), Float32Array.from(part)));
        }
      }
      const r = acc as AttentionResult | null;
      if (!r) continue; // attends nothing: out stays 0, lse −∞
      out.set(r.out, q0 * nHeads * d);
      const n = q1 - q0;
      for (let h = 0; h < nHeads; h++) lse.set(r.lse.subarray(h * n, (h + 1) * n), h * nQ + q0);
    }
    return { out, lse };
  }
}

/** Exact merge of two partial results over disjoint keys (in place into `a`). */
function mergeInto(a: AttentionResult, b: AttentionResult, n: number, nHeads: number, d: number): AttentionResult {
  for (let h = 0; h < nHeads; h++) {
    for (let i = 0; i < n; i++) {
      const la = a.lse[h * n + i];
      const lb = b.lse[h * n + i];
      if (lb === NEG_INF) continue;
      const o = i * nHeads * d + h * d;
      if (la === NEG_INF) {
        a.lse[h * n + i] = lb;
        for (let t = 0; t < d; t++) a.out[o + t] = b.out[o + t];
        continue;
      }
      const mx = Math.max(la, lb);
      const wa = Math.exp(la - mx);
      const wb = Math.exp(lb - mx);
      const tot = wa + wb;
      const fa = wa / tot;
      const fb = wb / tot;
      for (let t = 0; t < d; t++) a.out[o + t] = a.out[o + t] * fa + b.out[o + t] * fb;
      a.lse[h * n + i] = mx + Math.log(tot);
    }
  }
  return a;
}

/**
 * The tile graph, per KV head i: q_i [grp, n, d] (its query heads), k_i/v_i [m, d]; when `masked`,
 * qpos [n] and kpos [m] (positions; key after query → excluded). Outputs o_i [grp, n, d] and
 * lse_i [grp, n]. Unmasked tiles (every key at or before every query: decode, and tiles left of the
 * diagonal) are 4 nodes per head: scores, Softmax, ·V, ReduceLogSumExp. Masked ones guard rows that
 * see no key of the tile (out 0, lse −∞).
 */
export function buildTileGraph(nHeads: number, G: number, d: number, scale: number, masked: boolean): Uint8Array {
  const g = new GraphBuilder('attention_tile');
  const grp = nHeads / G;
  let mask = '';
  if (masked) {
    const qpos = g.input('qpos', DT.FLOAT, ['n']);
    const kpos = g.input('kpos', DT.FLOAT, ['m']);
    const future = g.op('Less', [g.op('Unsqueeze', [qpos, g.i64([1])]), kpos]); // [n, m]
    mask = g.op('Where', [future, g.f32([-Infinity], []), g.f32([0], [])]);
  }
  for (let i = 0; i < G; i++) {
    const q = g.input(`q${i}`, DT.FLOAT, [grp, 'n', d]);
    const k = g.input(`k${i}`, DT.FLOAT, ['m', d]);
    const v = g.input(`v${i}`, DT.FLOAT, ['m', d]);
    const s = g.op('FusedMatMul', [q, k], { transA: 0, transB: 1, alpha: new F(scale) }, 'com.microsoft'); // [grp, n, m]
    if (!masked) {
      const p = g.op('Softmax', [s], { axis: -1 });
      g.node('MatMul', [p, v], {}, { outputs: [`o${i}`] });
      // lse = max s − log(max p): softmax's largest probability is exp(0)/Σ = 1/Σ. Two ReduceMax
      // are ~8× faster here than ReduceLogSumExp (measured, README).
      const ms = g.op('ReduceMax', [s], { axes: [-1], keepdims: 0 });
      const mp = g.op('ReduceMax', [p], { axes: [-1], keepdims: 0 });
      g.node('Sub', [ms, g.op('Log', [mp])], {}, { outputs: [`l${i}`] });
    } else {
      const sm = g.op('Add', [s, mask]);
      const mx = g.op('Max', [g.op('ReduceMax', [sm], { axes: [-1], keepdims: 1 }), g.f32([-3.4e38], [])]); // finite when a row sees nothing
      const e = g.op('Exp', [g.op('Sub', [sm, mx])]);
      const l = g.op('ReduceSum', [e, g.i64([-1])], { keepdims: 1 });
      g.node('Div', [g.op('MatMul', [e, v]), g.op('Max', [l, g.f32([1e-38], [])])], {}, { outputs: [`o${i}`] });
      g.node('Squeeze', [g.op('Add', [mx, g.op('Log', [l])]), g.i64([-1])], {}, { outputs: [`l${i}`] });
    }
    g.output(`o${i}`, DT.FLOAT, [grp, 'n', d]);
    g.output(`l${i}`, DT.FLOAT, [grp, 'n']);
  }
  return g.build();
}
