// Sparse attention on the CPU with few onnxruntime runs: every (query head, 64-row query block) of a
// head group is one item whose selected keys (its ranges and columns, cut at the causal horizon) are
// gathered into a padded row of a batch; one batched graph computes many items at once —
// scores [B, 64, S] = q·kᵀ (FusedMatMul), the causal mask from query and key positions (padding keys
// sit at +∞, so every row masks them), softmax statistics, out and lse. Each item attends its whole
// selection in one tile, so no merge is needed.
//
// Why: sparseAttentionCpu runs 2–3 tiles per (head, block), and a run costs about as much as the
// arithmetic of a 64 × 2K tile here; batching B items per run turns thousands of runs per layer into
// tens (measured in README.md). Same semantics as sparseAttentionRef (test/sparse/batched.test.ts).

import { DT, F, GraphBuilder } from '../../backends/cpu/onnx.js';
import { f32Tensor, Graph, type SessionConfig } from '../../backends/cpu/ort.js';
import type { AttentionResult } from '../cpu-attention.js';
import type { HeadGroupInput } from './attention.js';
import type { SparseIndex } from './patterns.js';

/** Key position of padding: after every query, so the causal mask drops it. */
const PAD = 3e38;

export function buildBatchedTileGraph(d: number, scale: number): Uint8Array {
  const g = new GraphBuilder('sparse_batched_tile');
  const q = g.input('q', DT.FLOAT, ['b', 'r', d]);
  const k = g.input('k', DT.FLOAT, ['b', 's', d]);
  const v = g.input('v', DT.FLOAT, ['b', 's', d]);
  const qpos = g.input('qpos', DT.FLOAT, ['b', 'r']);
  const kpos = g.input('kpos', DT.FLOAT, ['b', 's']);
  const future = g.op('Less', [g.op('Unsqueeze', [qpos, g.i64([2])]), g.op('Unsqueeze', [kpos, g.i64([1])])]); // [b, r, s]
  const mask = g.op('Where', [future, g.f32([-Infinity], []), g.f32([0], [])]);
  const s = g.op('FusedMatMul', [q, k], { transA: 0, transB: 1, alpha: new F(scale) }, 'com.microsoft'); // [b, r, s]
  const sm = g.op('Add', [s, mask]);
  const mx = g.op('Max', [g.op('ReduceMax', [sm], { axes: [-1], keepdims: 1 }), g.f32([-3.4e38], [])]);
  const e = g.op('Exp', [g.op('Sub', [sm, mx])]);
  const l = g.op('ReduceSum', [e, g.i64([-1])], { keepdims: 1 });
  g.node('Div', [g.op('MatMul', [e, v]), g.op('Max', [l, g.f32([1e-38], [])])], {}, { outputs: ['o'] });
  g.node('Squeeze', [g.op('Add', [mx, g.op('Log', [l])]), g.i64([-1])], {}, { outputs: ['l'] });
  g.output('o', DT.FLOAT, ['b', 'r', d]);
  g.output('l', DT.FLOAT, ['b', 'r']);
  return g.build();
}

/**
 * The unmasked batch: keys strictly before every row of the item (no causal mask needed). Padding keys
 * are masked without a mask tensor: q and k carry one extra dimension, 1 in every query and −1e30 in a
 * padding key (0 in a real one), so a padding score is −∞ for softmax's purposes. Softmax, ·V and
 * lse = max s − log(max p), as CpuAttention's unmasked tiles.
 */
export function buildBatchedPastGraph(d: number, scale: number): Uint8Array {
  const g = new GraphBuilder('sparse_batched_past');
  const q = g.input('q', DT.FLOAT, ['b', 'r', d + 1]);
  const k = g.input('k', DT.FLOAT, ['b', 's', d + 1]);
  const v = g.input('v', DT.FLOAT, ['b', 's', d]);
  const s = g.op('FusedMatMul', [q, k], { transA: 0, transB: 1, alpha: new F(scale) }, 'com.microsoft'); // [b, r, s]
  const p = g.op('Softmax', [s], { axis: -1 });
  g.node('MatMul', [p, v], {}, { outputs: ['o'] });
  const ms = g.op('ReduceMax', [s], { axes: [-1], keepdims: 0 });
  const mp = g.op('ReduceMax', [p], { axes: [-1], keepdims: 0 });
  g.node('Sub', [ms, g.op('Log', [mp])], {}, { outputs: ['l'] });
  g.output('o', DT.FLOAT, ['b', 'r', d]);
  g.output('l', DT.FLOAT, ['b', 'r']);
  return g.build();
}

interface Item {
  h: number;
  q0: number;
  n: number;
  /** Selected keys: ranges then columns, each ascending. */
  ranges: [number, number][];
  cols: Int32Array;
  size: number;
}

/** The part of a selection in [lo, hi): its ranges cut and its columns filtered. */
function part(ranges: [number, number][], cols: Int32Array, lo: number, hi: number): { ranges: [number, number][]; cols: Int32Array; size: number } {
  const rs: [number, number][] = [];
  let size = 0;
  for (const [a, b] of ranges) {
    const s0 = Math.max(a, lo);
    const s1 = Math.min(b, hi);
    if (s0 < s1) {
      rs.push([s0, s1]);
      size += s1 - s0;
    }
  }
  let i0 = 0;
  while (i0 < cols.length && cols[i0] < lo) i0++;
  let i1 = i0;
  while (i1 < cols.length && cols[i1] < hi) i1++;
  return { ranges: rs, cols: cols.subarray(i0, i1), size: size + (i1 - i0) };
}

export class BatchedSparseCpu {
  private graphs = new Map<string, Graph>();
  /** Score floats (items × rows × keys) per run. */
  constructor(
    private readonly cfg: SessionConfig = {},
    private readonly tileFloats = 1 << 22,
  ) {}

  dispose(): void {
    for (const g of this.graphs.values()) g.dispose();
    this.graphs.clear();
  }

  private graph(kind: 'past' | 'diag', d: number, scale: number): Graph {
    const key = `${kind}/${d}/${scale}`;
    let g = this.graphs.get(key);
    if (!g) {
      g = new Graph(kind === 'past' ? buildBatchedPastGraph(d, scale) : buildBatchedTileGraph(d, scale), this.cfg);
      this.graphs.set(key, g);
    }
    return g;
  }

  /** Runs made so far (benchmarks, tests). */
  runs = 0;

  /**
   * (out [nQ, nHeads·d], lse [nHeads, nQ]) of a head group under per-head indices. Each item's keys
   * before its block (no causal mask: the unmasked, padding-by-extra-dimension graph) and inside it
   * (≤ one block of keys, masked) run as two batches and merge exactly by lse.
   */
  run(a: HeadGroupInput, idx: SparseIndex[]): AttentionResult {
    const { nQ, nHeads, headDim: d } = a;
    const out = new Float32Array(nQ * nHeads * d);
    const lse = new Float32Array(nHeads * nQ).fill(-Infinity);
    const past: Item[] = [];
    const diag: Item[] = [];
    for (let h = 0; h < nHeads; h++) {
      const x = idx[h];
      for (let b = 0; b < x.blocks.length; b++) {
        const q0 = b * x.block;
        const n = Math.min(nQ, q0 + x.block) - q0;
        const p0 = a.qPos0 + q0;
        const horizon = Math.min(a.nK, p0 + n);
        const sel = x.blocks[b];
        const cols = sel.columns ?? new Int32Array(0);
        const before = part(sel.ranges, cols, 0, Math.min(p0, horizon));
        if (before.size) past.push({ h, q0, n, ...before });
        const inside = part(sel.ranges, cols, p0, horizon);
        if (inside.size) diag.push({ h, q0, n, ...inside });
      }
    }
    const R = idx[0]?.block ?? 64;
    this.batches(a, past, R, 'past', out, lse);
    this.batches(a, diag, R, 'diag', out, lse);
    return { out, lse };
  }

  private batches(a: HeadGroupInput, items: Item[], R: number, kind: 'past' | 'diag', out: Float32Array, lse: Float32Array): void {
    const { nQ, nHeads, headDim: d } = a;
    const dq = kind === 'past' ? d + 1 : d;
    const g = this.graph(kind, d, a.scale);
    for (let i = 0; i < items.length; ) {
      // Greedy batch: consecutive items while B·R·max(size) fits the score budget.
      let S = items[i].size;
      let j = i + 1;
      while (j < items.length && (j - i + 1) * R * Math.max(S, items[j].size) <= this.tileFloats) S = Math.max(S, items[j++].size);
      const B = j - i;
      const q = new Float32Array(B * R * dq);
      const k = new Float32Array(B * S * dq);
      const v = new Float32Array(B * S * d);
      const qpos = kind === 'diag' ? new Float32Array(B * R).fill(-1) : null;
      const kpos = kind === 'diag' ? new Float32Array(B * S).fill(PAD) : null;
      for (let t = 0; t < B; t++) {
        const it = items[i + t];
        for (let r = 0; r < it.n; r++) {
          const src = (it.q0 + r) * nHeads * d + it.h * d;
          q.set(a.q.subarray(src, src + d), (t * R + r) * dq);
          if (kind === 'past') q[(t * R + r) * dq + d] = 1;
          else qpos![t * R + r] = a.qPos0 + it.q0 + r;
        }
        let at = t * S;
        const put = (j0: number, j1: number) => {
          if (dq === d) {
            k.set(a.k.subarray(j0 * d, j1 * d), at * d);
            v.set(a.v.subarray(j0 * d, j1 * d), at * d);
            if (kpos) for (let x = j0; x < j1; x++) kpos[at + x - j0] = x;
            at += j1 - j0;
          } else {
            v.set(a.v.subarray(j0 * d, j1 * d), at * d);
            for (let x = j0; x < j1; x++, at++) k.set(a.k.subarray(x * d, (x + 1) * d), at * dq);
          }
        };
        for (const [s0, s1] of it.ranges) put(s0, s1);
        for (const c of it.cols) put(c, c + 1);
        if (kind === 'past') for (; at < (t + 1) * S; at++) k[at * dq + d] = -1e30; // padding
      }
      const o = new Float32Array(B * R * d);
      const l = new Float32Array(B * R);
      const feeds: Record<string, ReturnType<typeof f32Tensor>> = { q: f32Tensor(q, [B, R, dq]), k: f32Tensor(k, [B, S, dq]), v: f32Tensor(v, [B, S, d]) };
      if (kind === 'diag') {
        feeds.qpos = f32Tensor(qpos!, [B, R]);
        feeds.kpos = f32Tensor(kpos!, [B, S]);
      }
      g.run(feeds, { o: f32Tensor(o, [B, R, d]), l: f32Tensor(l, [B, R]) });
      this.runs++;
      for (let t = 0; t < B; t++) {
        const it = items[i + t];
        for (let r = 0; r < it.n; r++) {
          const li = it.h * nQ + it.q0 + r;
          const oi = (it.q0 + r) * nHeads * d + it.h * d;
          const lb = l[t * R + r];
          const la = lse[li];
          if (lb === -Infinity) continue;
          if (la === -Infinity) {
            out.set(o.subarray((t * R + r) * d, (t * R + r + 1) * d), oi);
            lse[li] = lb;
            continue;
          }
          // Exact merge of two partial results over disjoint keys.
          const m = Math.max(la, lb);
          const wa = Math.exp(la - m);
          const wb = Math.exp(lb - m);
          const z = wa + wb;
          for (let x = 0; x < d; x++) out[oi + x] = (wa * out[oi + x] + wb * o[(t * R + r) * d + x]) / z;
          lse[li] = m + Math.log(z);
        }
      }
      i = j;
    }
  }
}
