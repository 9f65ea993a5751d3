// ONNX emitters for the backend's ops. Each takes value names of [n, cols] f32 activations (n dynamic)
// and appends nodes to a GraphBuilder; the segment compiler (index.ts) strings them into one graph
// per fused segment. Semantics are those of engine/model/ref-ops.ts.

import { DT, F, type GraphBuilder } from './onnx.js';
import type { PackedMatrix } from './weights.js';

/** MatMulNBits accuracy_level 4: int8 activations per block, MLAS's fastest path (README). */
export const ACCURACY_INT8 = 4;

/** y = x · Wᵀ (+ bias). `x` is [n, k]; returns [n, N]. Initializers are added to `g`. */
export function emitMatmul(g: GraphBuilder, x: string, w: PackedMatrix, bias?: Float32Array, accuracy = ACCURACY_INT8): string {
  // Matrices go to onnxruntime as in-memory external data: no copy into the protobuf, no 2 GB limit.
  const ext = true;
  if (w.kind === 'f32') {
    const W = g.init(g.tmp('Ww'), DT.FLOAT, [w.n, w.k], w.w, ext);
    const ins = [x, W];
    if (bias) ins.push(g.init(g.tmp('Wbias'), DT.FLOAT, [w.n], bias));
    return g.op('Gemm', ins, { transB: 1 });
  }
  const kb = w.k / w.block;
  const B = g.init(g.tmp('Wq'), DT.UINT8, [w.n, kb, (w.block * w.bits) / 8], w.q, ext);
  const S = g.init(g.tmp('Ws'), DT.FLOAT, [w.n * kb], w.scales, ext);
  let y = g.op('MatMulNBits', [x, B, S], { K: w.k, N: w.n, bits: w.bits, block_size: w.block, accuracy_level: accuracy }, 'com.microsoft');
  if (w.corr) {
    // Per-block constants: y += (Σ of x over each block) · C, C [k/block, N] (weights.ts).
    const xb = g.op('Reshape', [x, g.i64([0, kb, w.block])]);
    const sums = g.op('ReduceSum', [xb, g.i64([2])], { keepdims: 0 });
    const C = g.init(g.tmp('Wcorr'), DT.FLOAT, [kb, w.n], w.corr, ext);
    y = g.op('Add', [y, g.op('MatMul', [sums, C])]);
  }
  if (bias) y = g.op('Add', [y, g.init(g.tmp('Wbias'), DT.FLOAT, [w.n], bias)]);
  return y;
}

/** RMSNorm over groups of `group` columns (group = cols, or headDim for Qwen3's per-head norm). */
export function emitRmsNorm(g: GraphBuilder, x: string, cols: number, w: Float32Array, eps: number, group: number): string {
  const W = g.init(g.tmp('Wnorm'), DT.FLOAT, [group], w);
  if (group === cols) return g.op('SimplifiedLayerNormalization', [x, W], { axis: -1, epsilon: new F(eps) });
  const x3 = g.op('Reshape', [x, g.i64([0, cols / group, group])]);
  const y3 = g.op('SimplifiedLayerNormalization', [x3, W], { axis: -1, epsilon: new F(eps) });
  return g.op('Reshape', [y3, g.i64([0, cols])]);
}

/**
 * RoPE on x [n, nHeads·headDim] with per-row cos/sin [n, dims/2] (mscale folded in, computed on the
 * host from each row's position) through com.microsoft RotaryEmbedding: `pos` is [1, n] = 0..n−1,
 * i.e. row r takes row r of the cos/sin "cache". 'norm' (llama) rotates (x[2i], x[2i+1]) —
 * interleaved; 'neox' (qwen) rotates (x[i], x[i+dims/2]). One node instead of ~12 elementwise ones.
 */
export function emitRope(g: GraphBuilder, x: string, cos: string, sin: string, pos: string, nHeads: number, headDim: number, dims: number, kind: 'norm' | 'neox'): string {
  const x3 = g.op('Unsqueeze', [x, g.i64([0])]);
  const attrs = { interleaved: kind === 'norm' ? 1 : 0, num_heads: nHeads, rotary_embedding_dim: dims };
  const y = g.op('RotaryEmbedding', [x3, pos, cos, sin], attrs, 'com.microsoft');
  void headDim;
  return g.op('Squeeze', [y, g.i64([0])]);
}

/** silu(gate) · up */
export function emitSiluMul(g: GraphBuilder, gate: string, up: string): string {
  return g.op('Mul', [g.op('Mul', [gate, g.op('Sigmoid', [gate])]), up]);
}

export function emitAdd(g: GraphBuilder, a: string, b: string): string {
  return g.op('Add', [a, b]);
}

export interface AttentionEmit {
  /** q [n, H·d], k and v [n, G·d] (after RoPE) of the new rows. */
  q: string;
  k: string;
  v: string;
  nHeads: number;
  nKVHeads: number;
  headDim: number;
  scale: number;
  /** Part A, per KV head: keys/values of one run of the cache, f32 [la, d] (zero-copy views, cast). */
  kA: string[];
  vA: string[];
  /** Part B, per KV head: the other cached keys/values, gathered by the host, f32 [nb, d]. */
  kB: string[];
  vB: string[];
  /** [1]: 0, or −∞ when part A is a placeholder (one zero key: reductions over an empty axis do not reduce in onnxruntime). */
  aMask: string;
  /** Additive mask of part B, [n, nb] (which sequence of a batch sees which key; declared [n, nb] so that shapes stay inferable). */
  bMask: string;
  /** Additive mask among the new rows [n, n]: causal within a sequence, −∞ across sequences. */
  nMask: string;
  /** Round the new K/V to f16 (llama.cpp's f16 cache); the returned new rows are then FLOAT16. */
  f16: boolean;
}

/**
 * Causal GQA attention of n new rows over three parts of keys — a run of the cache (A, zero-copy
 * views), the rest of the cache gathered (B), and the new rows themselves (N) — inside the step's
 * graph. Per KV head: one softmax over all three parts without joining them (a shared row max m, exp
 * of each part, the sums), then P·V of each part. Returns the output [n, H·d] and the new K/V rows
 * [G, n, d] (in the cache's element type) for the host to store.
 *
 * Every shape here must stay inferable by onnxruntime (symbolic n, la, lb): its planner then reuses
 * the big score buffers from layer to layer. One mask of unknown shape made every score tensor a fresh
 * allocation — page faults, 2.7× slower at a 512-row prefill over 3.5K keys (the memory arena is off).
 */
export function emitAttention(g: GraphBuilder, a: AttentionEmit): { out: string; kNew: string; vNew: string } {
  const { nHeads: H, nKVHeads: G, headDim: d } = a;
  const f32 = (x: string) => (a.f16 ? g.op('Cast', [x], { to: DT.FLOAT }) : x);
  const perHead = (x: string) => {
    if (G === 1) return [g.op('Squeeze', [x, g.i64([0])])];
    return g.node('Split', [x], { axis: 0 }, { nOut: G }).map((p) => g.op('Squeeze', [p, g.i64([0])]));
  };
  // [n, G·d] → [G, n, d] (rounded to f16 first: what the cache will hold is what is attended)
  const heads = (x: string) => g.op('Transpose', [g.op('Reshape', [a.f16 ? g.op('Cast', [x], { to: DT.FLOAT16 }) : x, g.i64([0, G, d])])], { perm: [1, 0, 2] });
  const kNew = heads(a.k);
  const vNew = heads(a.v);
  const kN = perHead(f32(kNew)); // G × [n, d]
  const vN = perHead(f32(vNew));
  // [n, H·d] → [H, n, d] → G × [grp, n, d]
  const qh = g.op('Transpose', [g.op('Reshape', [a.q, g.i64([0, H, d])])], { perm: [1, 0, 2] });
  const qs = G === 1 ? [qh] : g.node('Split', [qh], { axis: 0 }, { nOut: G });
  const rmax = (x: string) => g.op('ReduceMax', [x], { axes: [-1], keepdims: 1 });
  const rsum = (x: string) => g.op('ReduceSum', [x, g.i64([-1])], { keepdims: 1 });
  const outs: string[] = [];
  for (let i = 0; i < G; i++) {
    const mm = (k: string) => g.op('FusedMatMul', [qs[i], k], { transA: 0, transB: 1, alpha: new F(a.scale) }, 'com.microsoft');
    const sA = mm(a.kA[i]); // [grp, n, la]
    const sB = g.op('Add', [mm(a.kB[i]), a.bMask]); // [grp, n, nb]
    const sN = g.op('Add', [mm(kN[i]), a.nMask]); // [grp, n, n]
    const m = g.op('Max', [g.op('Add', [rmax(sA), a.aMask]), rmax(sB), rmax(sN)]); // [grp, n, 1], finite (the diagonal is visible)
    const eA = g.op('Exp', [g.op('Sub', [sA, g.op('Sub', [m, a.aMask])])]); // a placeholder A: exp(−∞) = 0
    const eB = g.op('Exp', [g.op('Sub', [sB, m])]);
    const eN = g.op('Exp', [g.op('Sub', [sN, m])]);
    const l = g.op('Sum', [rsum(eA), rsum(eB), rsum(eN)]);
    const o = g.op('Sum', [g.op('MatMul', [eA, a.vA[i]]), g.op('MatMul', [eB, a.vB[i]]), g.op('MatMul', [eN, vN[i]])]);
    outs.push(g.op('Div', [o, l])); // [grp, n, d]
  }
  const o = G === 1 ? outs[0] : g.op('Concat', outs, { axis: 0 }); // [H, n, d]
  return { out: g.op('Reshape', [g.op('Transpose', [o], { perm: [1, 0, 2] }), g.i64([0, H * d])]), kNew, vNew };
}
