// ONNX emitters for the backend's ops. Each takes value names of [n, cols] f32 activations (n dynamic)
// and appends nodes to a GraphBuilder; the segment compiler (segment.ts) strings them into one graph
// per fused segment. Semantics are those of engine/model/ref-ops.ts.

import { DT, F, type GraphBuilder } from './onnx.js';
import type { PackedMatrix } from './weights.js';

/** MatMulNBits accuracy_level 4: int8 activations per block, MLAS's fastest path (README). */
export const ACCURACY_INT8 = 4;

/** y = x · Wᵀ (+ bias). `x` is [n, k]; returns [n, N]. Initializers are added to `g`. */
export function emitMatmul(g: GraphBuilder, x: string, w: PackedMatrix, bias?: Float32Array, accuracy = ACCURACY_INT8): string {
  if (w.kind === 'f32') {
    const W = g.init(g.tmp('Ww'), DT.FLOAT, [w.n, w.k], w.w);
    const ins = [x, W];
    if (bias) ins.push(g.init(g.tmp('Wbias'), DT.FLOAT, [w.n], bias));
    return g.op('Gemm', ins, { transB: 1 });
  }
  const kb = w.k / w.block;
  const B = g.init(g.tmp('Wq'), DT.UINT8, [w.n, kb, (w.block * w.bits) / 8], w.q);
  const S = g.init(g.tmp('Ws'), DT.FLOAT, [w.n * kb], w.scales);
  let y = g.op('MatMulNBits', [x, B, S], { K: w.k, N: w.n, bits: w.bits, block_size: w.block, accuracy_level: accuracy }, 'com.microsoft');
  if (w.corr) {
    // Per-block constants: y += (Σ of x over each block) · C, C [k/block, N] (weights.ts).
    const xb = g.op('Reshape', [x, g.i64([0, kb, w.block])]);
    const sums = g.op('ReduceSum', [xb, g.i64([2])], { keepdims: 0 });
    const C = g.init(g.tmp('Wcorr'), DT.FLOAT, [kb, w.n], w.corr);
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
 * host from the row's position). 'neox' rotates (x[i], x[i+dims/2]); 'norm' rotates (x[2i], x[2i+1]).
 */
export function emitRope(g: GraphBuilder, x: string, cos: string, sin: string, nHeads: number, headDim: number, dims: number, kind: 'norm' | 'neox'): string {
  const half = dims / 2;
  const x3 = g.op('Reshape', [x, g.i64([0, nHeads, headDim])]);
  const slice = (v: string, s: number, e: number, axis: number) => g.op('Slice', [v, g.i64([s]), g.i64([e]), g.i64([axis])]);
  const rot = dims < headDim ? slice(x3, 0, dims, 2) : x3;
  let y: string;
  if (kind === 'neox') {
    const c = g.op('Unsqueeze', [cos, g.i64([1])]); // [n, 1, half]
    const s = g.op('Unsqueeze', [sin, g.i64([1])]);
    const x1 = slice(rot, 0, half, 2);
    const x2 = slice(rot, half, dims, 2);
    const y1 = g.op('Sub', [g.op('Mul', [x1, c]), g.op('Mul', [x2, s])]);
    const y2 = g.op('Add', [g.op('Mul', [x1, s]), g.op('Mul', [x2, c])]);
    y = g.op('Concat', [y1, y2], { axis: 2 });
  } else {
    const c = g.op('Unsqueeze', [cos, g.i64([1, 3])]); // [n, 1, half, 1]
    const s = g.op('Unsqueeze', [sin, g.i64([1, 3])]);
    const pairs = g.op('Reshape', [rot, g.i64([0, nHeads, half, 2])]);
    const x1 = slice(pairs, 0, 1, 3);
    const x2 = slice(pairs, 1, 2, 3);
    const y1 = g.op('Sub', [g.op('Mul', [x1, c]), g.op('Mul', [x2, s])]);
    const y2 = g.op('Add', [g.op('Mul', [x1, s]), g.op('Mul', [x2, c])]);
    y = g.op('Reshape', [g.op('Concat', [y1, y2], { axis: 3 }), g.i64([0, nHeads, dims])]);
  }
  if (dims < headDim) y = g.op('Concat', [y, slice(x3, dims, headDim, 2)], { axis: 2 });
  return g.op('Reshape', [y, g.i64([0, nHeads * headDim])]);
}

/** silu(gate) · up */
export function emitSiluMul(g: GraphBuilder, gate: string, up: string): string {
  return g.op('Mul', [g.op('Mul', [gate, g.op('Sigmoid', [gate])]), up]);
}

export function emitAdd(g: GraphBuilder, a: string, b: string): string {
  return g.op('Add', [a, b]);
}
