// ONNX emitters for the backend's ops. Each takes value names of [n, cols] f32 activations (n dynamic)
// and appends nodes to a GraphBuilder; the segment compiler (segment.ts) strings them into one graph
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
  /** Per KV head, the cached keys/values before these rows: inputs [lp, d]. */
  kPast: string[];
  vPast: string[];
  /** Additive causal mask among the new rows [n, n]: 0 on and below the diagonal, −∞ above. */
  mask: string;
  /**
   * [1]: 0, or −∞ when the past is a placeholder (no past: one zero key, excluded). Reductions over
   * an empty axis do not reduce in onnxruntime, so an empty past is never passed.
   */
  pastMask: string;
  /** Round the new K/V to f16 before use and storage (llama.cpp's f16 cache). */
  f16: boolean;
  /** Output names for the new K/V rows per KV head ([n, d]; the host stores them in the cache). */
  kNew: string[];
  vNew: string[];
}

/**
 * Causal GQA attention of n new rows over (cached past ‖ new) keys, inside the step's graph. Per KV
 * head: scores against the past (all visible) and against the new rows (causal mask), a softmax taken
 * over both parts without joining them (a shared row max m, exp of each part, the two sums), then
 * P·V of both parts. No copy of the cache and none of the score matrix: the cache is read through
 * zero-copy views and the new K/V leave the graph as outputs written straight into it.
 */
export function emitAttention(g: GraphBuilder, a: AttentionEmit): string {
  const { nHeads: H, nKVHeads: G, headDim: d } = a;
  const round = (x: string) => (a.f16 ? g.op('Cast', [g.op('Cast', [x], { to: DT.FLOAT16 })], { to: DT.FLOAT }) : x);
  // [n, G·d] → G × [n, d]
  const perHead = (x: string, names: string[]) => {
    const t = g.op('Transpose', [g.op('Reshape', [round(x), g.i64([0, G, d])])], { perm: [1, 0, 2] }); // [G, n, d]
    if (G === 1) return [g.node('Squeeze', [t, g.i64([0])], {}, { outputs: [names[0]] })[0]];
    const parts = g.node('Split', [t], { axis: 0 }, { nOut: G });
    return parts.map((p, i) => g.node('Squeeze', [p, g.i64([0])], {}, { outputs: [names[i]] })[0]);
  };
  const ks = perHead(a.k, a.kNew);
  const vs = perHead(a.v, a.vNew);
  // [n, H·d] → [H, n, d] → G × [grp, n, d]
  const qh = g.op('Transpose', [g.op('Reshape', [a.q, g.i64([0, H, d])])], { perm: [1, 0, 2] });
  const qs = G === 1 ? [qh] : g.node('Split', [qh], { axis: 0 }, { nOut: G });
  const outs: string[] = [];
  const rmax = (x: string) => g.op('ReduceMax', [x], { axes: [-1], keepdims: 1 });
  const rsum = (x: string) => g.op('ReduceSum', [x, g.i64([-1])], { keepdims: 1 });
  for (let i = 0; i < G; i++) {
    const mm = (b: string) => g.op('FusedMatMul', [qs[i], b], { transA: 0, transB: 1, alpha: new F(a.scale) }, 'com.microsoft');
    const sp = mm(a.kPast[i]); // [grp, n, lp]
    const sn = g.op('Add', [mm(ks[i]), a.mask]); // [grp, n, n]
    const m = g.op('Max', [g.op('Add', [rmax(sp), a.pastMask]), rmax(sn)]); // [grp, n, 1], finite (the diagonal is visible)
    const ep = g.op('Exp', [g.op('Sub', [sp, g.op('Sub', [m, a.pastMask])])]);
    const en = g.op('Exp', [g.op('Sub', [sn, m])]);
    const l = g.op('Add', [rsum(ep), rsum(en)]);
    const o = g.op('Add', [g.op('MatMul', [ep, a.vPast[i]]), g.op('MatMul', [en, vs[i]])]);
    outs.push(g.op('Div', [o, l])); // [grp, n, d]
  }
  const o = G === 1 ? outs[0] : g.op('Concat', outs, { axis: 0 }); // [H, n, d]
  return g.op('Reshape', [g.op('Transpose', [o], { perm: [1, 0, 2] }), g.i64([0, H * d])]);
}
