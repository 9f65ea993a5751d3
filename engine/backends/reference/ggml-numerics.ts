// llama.cpp's CPU numerics, emulated, so the reference backend can be compared with llama.cpp token
// for token rather than only within a tolerance.
//
// ggml's CPU matmul converts the activations to the weight type's "vec_dot_type" before the dot
// products (ggml-cpu.c type_traits_cpu): F16 weights → f16 activations, BF16 → bf16, Q4_0/Q5_0/Q8_0 →
// Q8_0 blocks of 32 (f16 scale), K-quants → Q8_K blocks of 256 (f32 scale). The integer dot products
// are exact, so the result equals an f32 dot product of the dequantized weights with the activations
// quantized and dequantized again ("fake-quantized") — up to float summation order. Its KV cache is f16
// by default and, without flash attention, K·Q runs with q in f16 and softmax·V with the
// probabilities in f16.

import { GGMLType } from '../../gguf/types.js';
import { bf16ToF32, f16ToF32, f32ToBf16, f32ToF16, nearestInt } from '../../gguf/quant.js';

const fr = Math.fround;

export function roundF16(x: number): number {
  return f16ToF32(f32ToF16(x));
}

export function roundBf16(x: number): number {
  return bf16ToF32(f32ToBf16(x));
}

/** Round half to even, as _mm256_round_ps(_MM_FROUND_TO_NEAREST_INT) does. */
function roundEven(v: number): number {
  const r = Math.round(v);
  return Math.abs(v - Math.trunc(v)) === 0.5 && r % 2 !== 0 ? r - 1 : r;
}

/** Q8_0 as ggml's x86 quantize_row_q8_0 computes it: d = amax/127 (stored f16), q = round(x·127/amax). */
function fakeQ8_0(x: Float32Array, o: number, n: number): void {
  for (let b = o; b < o + n; b += 32) {
    let amax = 0;
    for (let i = 0; i < 32; i++) amax = Math.max(amax, Math.abs(x[b + i]));
    const d = roundF16(fr(amax / 127));
    const id = amax !== 0 ? fr(127 / amax) : 0;
    for (let i = 0; i < 32; i++) x[b + i] = fr(d * roundEven(fr(x[b + i] * id)));
  }
}

/** Q8_K as quantize_row_q8_K_ref: iscale = -127/max (max: the signed value of largest magnitude), d = 1/iscale. */
function fakeQ8_K(x: Float32Array, o: number, n: number): void {
  for (let b = o; b < o + n; b += 256) {
    let amax = 0;
    let max = 0;
    for (let i = 0; i < 256; i++) {
      const ax = Math.abs(x[b + i]);
      if (ax > amax) {
        amax = ax;
        max = x[b + i];
      }
    }
    if (amax === 0) {
      x.fill(0, b, b + 256);
      continue;
    }
    const iscale = fr(-127 / max);
    const d = fr(1 / iscale);
    for (let i = 0; i < 256; i++) x[b + i] = fr(d * Math.min(127, nearestInt(fr(iscale * x[b + i]))));
  }
}

/** The activation rows as ggml's CPU matmul sees them for a weight of type `t` (in place). */
export function toVecDotType(x: Float32Array, rows: number, k: number, t: GGMLType): void {
  switch (t) {
    case GGMLType.F32:
      return;
    case GGMLType.F16:
      for (let i = 0; i < x.length; i++) x[i] = roundF16(x[i]);
      return;
    case GGMLType.BF16:
      for (let i = 0; i < x.length; i++) x[i] = roundBf16(x[i]);
      return;
    case GGMLType.Q4_0:
    case GGMLType.Q5_0:
    case GGMLType.Q8_0:
      if (k % 32 === 0) for (let r = 0; r < rows; r++) fakeQ8_0(x, r * k, k);
      return;
    case GGMLType.Q2_K:
    case GGMLType.Q3_K:
    case GGMLType.Q4_K:
    case GGMLType.Q5_K:
    case GGMLType.Q6_K:
      if (k % 256 === 0) for (let r = 0; r < rows; r++) fakeQ8_K(x, r * k, k);
      return;
    default:
      return;
  }
}
