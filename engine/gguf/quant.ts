// Reference (de)quantization of ggml tensor types, in plain TypeScript.
//
// This file is the yardstick that faster kernels (WGSL, CPU graphs) are tested against, so every
// function favours being obviously right over being fast: one element or one block at a time, the
// block layout spelled out in a comment above each type.
//
// Exactness: ggml computes these in 32-bit floats (scalar SSE in the shipped libggml-base, no FMA).
// JavaScript numbers are doubles, so every float operation here is rounded back to f32 with
// Math.fround right after it. A single + - * / or sqrt of two f32 values computed in double and then
// rounded to f32 gives the same result as doing it in f32 (double has more than 2*24+2 bits), so
// following ggml's order of operations step by step reproduces its results bit for bit. The oracle test
// (test/oracle/ggml-quant.test.ts) checks exactly that against libggml-base.so.
//
// The quantizers follow the semantics of ggml's reference quantizers (`quantize_row_*_ref`, used by
// ggml_quantize_chunk when no importance matrix is given): same scale search, same rounding rules.

import { GGUFError, type GGUFFile, type GGUFTensorInfo } from './reader.js';
import { GGMLType, TYPE_TRAITS, typeName } from './types.js';

const f = Math.fround;

// ---- scalar conversions ------------------------------------------------------------------------

const scratch = new ArrayBuffer(4);
const scratchF32 = new Float32Array(scratch);
const scratchU32 = new Uint32Array(scratch);

/** The bits of `x` rounded to f32. */
export function f32Bits(x: number): number {
  scratchF32[0] = x;
  return scratchU32[0];
}

/** The f32 whose bits are `u` (NaN payloads may not survive as a JS number). */
export function f32FromBits(u: number): number {
  scratchU32[0] = u >>> 0;
  return scratchF32[0];
}

/**
 * f32 -> IEEE half bits, round to nearest, ties to even. Overflow gives infinity, NaN gives the quiet
 * NaN 0x7e00 with the sign kept (as ggml does).
 */
export function f32ToF16(x: number): number {
  const u = f32Bits(x);
  const sign = (u >>> 16) & 0x8000;
  const exp = (u >>> 23) & 0xff;
  const mant = u & 0x7fffff;
  if (exp === 0xff) return sign | (mant !== 0 ? 0x7e00 : 0x7c00);
  const e = exp - 127; // unbiased exponent; f32 subnormals have e = -127 and round to zero below
  if (e > 15) return sign | 0x7c00; // |x| >= 65536: infinity
  if (e >= -14) {
    // A normal half: keep the top 10 of the 23 mantissa bits, round on the 13 dropped ones. A carry
    // out of the mantissa moves into the exponent, which is exactly right (up to 0x7c00 = infinity).
    let h = ((e + 15) << 10) | (mant >>> 13);
    const rest = mant & 0x1fff;
    if (rest > 0x1000 || (rest === 0x1000 && (h & 1) === 1)) h += 1;
    return sign | h;
  }
  if (e < -25) return sign; // below half of the smallest subnormal (2^-24): zero
  // A subnormal half counts units of 2^-24. The value is m * 2^(e-23) with the implicit bit in m, so
  // the count is m >> (-e-1), rounded on the dropped bits.
  const m = mant | 0x800000;
  const shift = -e - 1; // 14..24
  let q = m >>> shift;
  const rest = m & ((1 << shift) - 1);
  const half = 1 << (shift - 1);
  if (rest > half || (rest === half && (q & 1) === 1)) q += 1;
  return sign | q;
}

/**
 * Half bits -> the f32 bits of the same value (exact). A NaN keeps its payload and comes out quiet,
 * as an IEEE conversion (and ggml on x86) makes it.
 */
export function f16BitsToF32Bits(h: number): number {
  const sign = (h & 0x8000) << 16;
  const exp = (h >>> 10) & 0x1f;
  const mant = h & 0x3ff;
  if (exp === 0x1f) return (sign | 0x7f800000 | (mant << 13) | (mant !== 0 ? 0x400000 : 0)) >>> 0;
  if (exp !== 0) return (sign | ((exp - 15 + 127) << 23) | (mant << 13)) >>> 0;
  if (mant === 0) return sign >>> 0;
  // Subnormal half: normalise the mantissa into an f32 normal.
  let e = -14;
  let m = mant;
  while ((m & 0x400) === 0) {
    m <<= 1;
    e -= 1;
  }
  return (sign | ((e + 127) << 23) | ((m & 0x3ff) << 13)) >>> 0;
}

/** Half bits -> number (exact). */
export function f16ToF32(h: number): number {
  const exp = (h >>> 10) & 0x1f;
  const mant = h & 0x3ff;
  const s = h & 0x8000 ? -1 : 1;
  if (exp === 0x1f) return mant ? NaN : s * Infinity;
  if (exp === 0) return s * mant * 2 ** -24;
  return s * (1 + mant / 1024) * 2 ** (exp - 15);
}

/**
 * f32 -> bfloat16 bits: the top half of the f32, rounded to nearest, ties to even. NaN keeps its top
 * bits and is forced quiet (ggml's rule); subnormals are kept, not flushed.
 */
export function f32ToBf16(x: number): number {
  const u = f32Bits(x);
  if ((u & 0x7fffffff) > 0x7f800000) return ((u >>> 16) | 0x40) & 0xffff;
  return ((u + 0x7fff + ((u >>> 16) & 1)) >>> 16) & 0xffff; // sum < 2^32 for every non-NaN u
}

/** bfloat16 bits -> the f32 bits of the same value. */
export function bf16BitsToF32Bits(h: number): number {
  return (h << 16) >>> 0;
}

export function bf16ToF32(h: number): number {
  return f32FromBits(bf16BitsToF32Bits(h));
}

/**
 * ggml's nearest_int: round an f32 to the nearest integer, ties to even (valid for |v| < 2^22). Same
 * trick as ggml: in [2^23, 2^24) the f32 spacing is exactly 1, so adding 1.5 * 2^23 and rounding to
 * f32 rounds v to an integer, ties to even.
 */
export function nearestInt(v: number): number {
  return f(v + 12582912) - 12582912;
}

function clampInt(v: number, lo: number, hi: number): number {
  return v < lo ? lo : v > hi ? hi : v;
}

/** C's roundf: ties away from zero. */
function roundAway(v: number): number {
  return v < 0 ? -Math.round(-v) : Math.round(v);
}

// ---- little-endian field access ------------------------------------------------------------------

function halfAt(b: Uint8Array, o: number): number {
  return f16ToF32(b[o] | (b[o + 1] << 8));
}
function putHalf(b: Uint8Array, o: number, x: number): void {
  const h = f32ToF16(x);
  b[o] = h & 0xff;
  b[o + 1] = h >>> 8;
}
function i8(v: number): number {
  return (v << 24) >> 24;
}

// ---- block layouts and dequantization ---------------------------------------------------------------
//
// Every dequantizer below reads `nBlocks` consecutive blocks from `src` (starting at byte 0) and
// writes blockSize floats per block to `dst`. Element order inside a block is the order ggml uses.

type Dequant = (src: Uint8Array, dst: Float32Array, nBlocks: number) => void;

/** F32: 4 bytes per element, little-endian IEEE single. Copied bit for bit. */
const dequantF32: Dequant = (src, dst, n) => {
  const out = new Uint32Array(dst.buffer, dst.byteOffset, n);
  for (let i = 0; i < n; i++) {
    const o = 4 * i;
    out[i] = (src[o] | (src[o + 1] << 8) | (src[o + 2] << 16) | (src[o + 3] << 24)) >>> 0;
  }
};

/** F16: 2 bytes per element, IEEE half. Written as bits so that even NaN payloads survive. */
const dequantF16: Dequant = (src, dst, n) => {
  const out = new Uint32Array(dst.buffer, dst.byteOffset, n);
  for (let i = 0; i < n; i++) out[i] = f16BitsToF32Bits(src[2 * i] | (src[2 * i + 1] << 8));
};

/** BF16: 2 bytes per element, the top 16 bits of an f32. */
const dequantBF16: Dequant = (src, dst, n) => {
  const out = new Uint32Array(dst.buffer, dst.byteOffset, n);
  for (let i = 0; i < n; i++) out[i] = bf16BitsToF32Bits(src[2 * i] | (src[2 * i + 1] << 8));
};

/**
 * Q8_0, 32 elements in 34 bytes:
 *   [0..2)   d: f16 scale
 *   [2..34)  q[32]: int8
 * x[i] = q[i] * d
 */
const dequantQ8_0: Dequant = (src, dst, n) => {
  for (let b = 0; b < n; b++) {
    const o = 34 * b;
    const d = halfAt(src, o);
    for (let i = 0; i < 32; i++) dst[32 * b + i] = f(i8(src[o + 2 + i]) * d);
  }
};

/**
 * Q4_0, 32 elements in 18 bytes:
 *   [0..2)   d: f16 scale
 *   [2..18)  16 bytes of 4-bit quants: byte j holds element j in its low nibble, element j+16 in its
 *            high nibble
 * x[i] = (q[i] - 8) * d
 */
const dequantQ4_0: Dequant = (src, dst, n) => {
  for (let b = 0; b < n; b++) {
    const o = 18 * b;
    const d = halfAt(src, o);
    for (let j = 0; j < 16; j++) {
      const byte = src[o + 2 + j];
      dst[32 * b + j] = f(((byte & 0xf) - 8) * d);
      dst[32 * b + j + 16] = f(((byte >>> 4) - 8) * d);
    }
  }
};

/**
 * Q4_1, 32 elements in 20 bytes:
 *   [0..2)   d: f16 scale      [2..4) m: f16 minimum
 *   [4..20)  nibbles as in Q4_0 (low: element j, high: element j+16)
 * x[i] = q[i] * d + m
 */
const dequantQ4_1: Dequant = (src, dst, n) => {
  for (let b = 0; b < n; b++) {
    const o = 20 * b;
    const d = halfAt(src, o);
    const m = halfAt(src, o + 2);
    for (let j = 0; j < 16; j++) {
      const byte = src[o + 4 + j];
      dst[32 * b + j] = f(f((byte & 0xf) * d) + m);
      dst[32 * b + j + 16] = f(f((byte >>> 4) * d) + m);
    }
  }
};

/** Bit `k` (0..31) of the little-endian u32 at src[o..o+4). */
function bit32(src: Uint8Array, o: number, k: number): number {
  return (src[o + (k >>> 3)] >>> (k & 7)) & 1;
}

/**
 * Q5_0, 32 elements in 22 bytes:
 *   [0..2)   d: f16 scale
 *   [2..6)   qh: u32, bit i is the 5th (high) bit of element i
 *   [6..22)  low nibbles as in Q4_0 (low: element j, high: element j+16)
 * x[i] = (q[i] - 16) * d, q[i] = low nibble | (qh bit i) << 4
 */
const dequantQ5_0: Dequant = (src, dst, n) => {
  for (let b = 0; b < n; b++) {
    const o = 22 * b;
    const d = halfAt(src, o);
    for (let j = 0; j < 16; j++) {
      const byte = src[o + 6 + j];
      const q0 = (byte & 0xf) | (bit32(src, o + 2, j) << 4);
      const q1 = (byte >>> 4) | (bit32(src, o + 2, j + 16) << 4);
      dst[32 * b + j] = f((q0 - 16) * d);
      dst[32 * b + j + 16] = f((q1 - 16) * d);
    }
  }
};

/**
 * Q5_1, 32 elements in 24 bytes:
 *   [0..2)   d: f16 scale      [2..4) m: f16 minimum
 *   [4..8)   qh: u32 of high bits, as in Q5_0
 *   [8..24)  low nibbles as in Q4_0
 * x[i] = q[i] * d + m
 */
const dequantQ5_1: Dequant = (src, dst, n) => {
  for (let b = 0; b < n; b++) {
    const o = 24 * b;
    const d = halfAt(src, o);
    const m = halfAt(src, o + 2);
    for (let j = 0; j < 16; j++) {
      const byte = src[o + 8 + j];
      const q0 = (byte & 0xf) | (bit32(src, o + 4, j) << 4);
      const q1 = (byte >>> 4) | (bit32(src, o + 4, j + 16) << 4);
      dst[32 * b + j] = f(f(q0 * d) + m);
      dst[32 * b + j + 16] = f(f(q1 * d) + m);
    }
  }
};

// K-quants: 256-element super-blocks made of 8 sub-blocks of 32 or 16 sub-blocks of 16 elements.

/**
 * The 6-bit scale and 6-bit min of sub-block j (0..7) from the 12 packed bytes `s` used by Q4_K and
 * Q5_K: sub-blocks 0..3 keep their scale in s[j] and min in s[j+4] (low 6 bits); sub-blocks 4..7 keep
 * their low 4 bits in the nibbles of s[j+4] (scale low, min high) and their top 2 bits in the top two
 * bits of s[j-4] (scale) and s[j] (min).
 */
export function kScaleMin(s: Uint8Array, o: number, j: number): [number, number] {
  if (j < 4) return [s[o + j] & 63, s[o + j + 4] & 63];
  const sc = (s[o + j + 4] & 0xf) | ((s[o + j - 4] >>> 6) << 4);
  const m = (s[o + j + 4] >>> 4) | ((s[o + j] >>> 6) << 4);
  return [sc, m];
}

/**
 * Q2_K, 256 elements in 84 bytes:
 *   [0..16)   scales[16]: per 16-element sub-block, low nibble = scale, high nibble = min
 *   [16..80)  qs[64]: 2-bit quants. Element e lives in half h = e>>7, at byte qs[32h + (e&31)], in
 *             bits 2k..2k+1 where k = (e&127)>>5
 *   [80..82)  d: f16 super-scale     [82..84) dmin: f16 super-scale of the mins
 * x[e] = (d * sc) * q - (dmin * m), with (sc, m) from scales[e>>4]
 */
const dequantQ2_K: Dequant = (src, dst, n) => {
  for (let b = 0; b < n; b++) {
    const o = 84 * b;
    const d = halfAt(src, o + 80);
    const dmin = halfAt(src, o + 82);
    for (let e = 0; e < 256; e++) {
      const sc = src[o + (e >>> 4)];
      const dl = f(d * (sc & 0xf));
      const ml = f(dmin * (sc >>> 4));
      const q = (src[o + 16 + 32 * (e >>> 7) + (e & 31)] >>> (2 * ((e & 127) >>> 5))) & 3;
      dst[256 * b + e] = f(f(dl * q) - ml);
    }
  }
};

/** The signed 6-bit scale (−32..31) of 16-element sub-block j (0..15) of a Q3_K block. */
function q3kScale(src: Uint8Array, o: number, j: number): number {
  const low = j < 8 ? src[o + j] & 0xf : src[o + j - 8] >>> 4;
  const high = (src[o + 8 + (j & 3)] >>> (2 * (j >>> 2))) & 3;
  return (low | (high << 4)) - 32;
}

/**
 * Q3_K, 256 elements in 110 bytes:
 *   [0..32)    hmask[32]: element e's high bit is bit (4h + k) of hmask[e&31], h = e>>7, k = (e&127)>>5
 *   [32..96)   qs[64]: low 2 bits, placed as in Q2_K
 *   [96..108)  scales: sixteen 6-bit scales; the low nibbles of sub-blocks 0..7 / 8..15 are the low /
 *              high nibbles of bytes 0..7, the top 2 bits of sub-block j are bits 2(j>>2).. of byte 8+(j&3);
 *              stored with a +32 bias
 *   [108..110) d: f16 super-scale
 * x[e] = (d * scale) * (q - (high bit set ? 0 : 4))
 */
const dequantQ3_K: Dequant = (src, dst, n) => {
  for (let b = 0; b < n; b++) {
    const o = 110 * b;
    const d = halfAt(src, o + 108);
    for (let e = 0; e < 256; e++) {
      const h = e >>> 7;
      const k = (e & 127) >>> 5;
      const dl = f(d * q3kScale(src, o + 96, e >>> 4));
      const low = (src[o + 32 + 32 * h + (e & 31)] >>> (2 * k)) & 3;
      const hi = (src[o + (e & 31)] >>> (4 * h + k)) & 1;
      dst[256 * b + e] = f(dl * (low - (hi ? 0 : 4)));
    }
  }
};

/**
 * Q4_K, 256 elements in 144 bytes:
 *   [0..2)    d: f16 super-scale of the scales     [2..4) dmin: f16 super-scale of the mins
 *   [4..16)   12 bytes: eight 6-bit scales and eight 6-bit mins (see kScaleMin)
 *   [16..144) qs[128]: 4-bit quants in 4 chunks of 64 elements; chunk c uses bytes 32c..32c+31, its
 *             first 32 elements in the low nibbles, the next 32 in the high nibbles
 * x[e] = (d * sc) * q - (dmin * m), with (sc, m) of sub-block e>>5
 */
const dequantQ4_K: Dequant = (src, dst, n) => {
  for (let b = 0; b < n; b++) {
    const o = 144 * b;
    const d = halfAt(src, o);
    const dmin = halfAt(src, o + 2);
    for (let e = 0; e < 256; e++) {
      const [sc, m] = kScaleMin(src, o + 4, e >>> 5);
      const byte = src[o + 16 + 32 * (e >>> 6) + (e & 31)];
      const q = e & 32 ? byte >>> 4 : byte & 0xf;
      dst[256 * b + e] = f(f(f(d * sc) * q) - f(dmin * m));
    }
  }
};

/**
 * Q5_K, 256 elements in 176 bytes:
 *   [0..2) d, [2..4) dmin: f16 super-scales     [4..16) scales and mins as in Q4_K
 *   [16..48)   qh[32]: element e's 5th bit is bit (e>>5) of qh[e&31]
 *   [48..176)  qs[128]: low 4 bits, placed as in Q4_K
 * x[e] = (d * sc) * q - (dmin * m)
 */
const dequantQ5_K: Dequant = (src, dst, n) => {
  for (let b = 0; b < n; b++) {
    const o = 176 * b;
    const d = halfAt(src, o);
    const dmin = halfAt(src, o + 2);
    for (let e = 0; e < 256; e++) {
      const [sc, m] = kScaleMin(src, o + 4, e >>> 5);
      const byte = src[o + 48 + 32 * (e >>> 6) + (e & 31)];
      const low = e & 32 ? byte >>> 4 : byte & 0xf;
      const q = low + (((src[o + 16 + (e & 31)] >>> (e >>> 5)) & 1) << 4);
      dst[256 * b + e] = f(f(f(d * sc) * q) - f(dmin * m));
    }
  }
};

/**
 * Q6_K, 256 elements in 210 bytes:
 *   [0..128)   ql[128]: low 4 bits. In half h = e>>7 with k = (e&127)>>5 and l = e&31, the nibble is
 *              ql[64h + l + 32(k&1)], low nibble for k < 2, high nibble for k >= 2
 *   [128..192) qh[64]: high 2 bits, bits 2k..2k+1 of qh[32h + l]
 *   [192..208) scales[16]: int8, one per 16-element sub-block e>>4
 *   [208..210) d: f16 super-scale
 * x[e] = (d * scale) * (q - 32)
 */
const dequantQ6_K: Dequant = (src, dst, n) => {
  for (let b = 0; b < n; b++) {
    const o = 210 * b;
    const d = halfAt(src, o + 208);
    for (let e = 0; e < 256; e++) {
      const h = e >>> 7;
      const k = (e & 127) >>> 5;
      const l = e & 31;
      const lo = src[o + 64 * h + l + 32 * (k & 1)];
      const low = k < 2 ? lo & 0xf : lo >>> 4;
      const high = (src[o + 128 + 32 * h + l] >>> (2 * k)) & 3;
      const q = (low | (high << 4)) - 32;
      dst[256 * b + e] = f(f(d * i8(src[o + 192 + (e >>> 4)])) * q);
    }
  }
};

const DEQUANT: Partial<Record<GGMLType, Dequant>> = {
  [GGMLType.F32]: dequantF32,
  [GGMLType.F16]: dequantF16,
  [GGMLType.BF16]: dequantBF16,
  [GGMLType.Q8_0]: dequantQ8_0,
  [GGMLType.Q4_0]: dequantQ4_0,
  [GGMLType.Q4_1]: dequantQ4_1,
  [GGMLType.Q5_0]: dequantQ5_0,
  [GGMLType.Q5_1]: dequantQ5_1,
  [GGMLType.Q2_K]: dequantQ2_K,
  [GGMLType.Q3_K]: dequantQ3_K,
  [GGMLType.Q4_K]: dequantQ4_K,
  [GGMLType.Q5_K]: dequantQ5_K,
  [GGMLType.Q6_K]: dequantQ6_K,
};

/** Types this module can turn into f32. */
export const DEQUANT_TYPES: readonly GGMLType[] = Object.keys(DEQUANT).map(Number) as GGMLType[];

export function canDequantize(type: GGMLType): boolean {
  return DEQUANT[type] !== undefined;
}

function blocksOf(type: GGMLType, nElements: number, what: string): number {
  const tr = TYPE_TRAITS[type];
  if (!tr) throw new Error(`${what}: unknown tensor type ${type}`);
  if (nElements % tr.blockSize !== 0) throw new Error(`${what}: ${nElements} elements is not a multiple of ${tr.name}'s block of ${tr.blockSize}`);
  return nElements / tr.blockSize;
}

/**
 * Dequantizes `dst.length` elements of `type` from the encoded blocks in `src` (row by row is the same
 * as all at once: every block stands alone).
 */
export function dequantizeInto(type: GGMLType, src: Uint8Array, dst: Float32Array): Float32Array {
  const fn = DEQUANT[type];
  if (!fn) throw new Error(`cannot dequantize ${typeName(type)}: not supported`);
  const nBlocks = blocksOf(type, dst.length, 'dequantize');
  const need = nBlocks * TYPE_TRAITS[type].typeSize;
  if (src.length < need) throw new Error(`dequantize ${typeName(type)}: ${dst.length} elements need ${need} bytes, got ${src.length}`);
  fn(src, dst, nBlocks);
  return dst;
}

/** Dequantizes `nElements` elements of `type` from `src` into a new Float32Array. */
export function dequantize(type: GGMLType, src: Uint8Array, nElements: number): Float32Array {
  return dequantizeInto(type, src, new Float32Array(nElements));
}

/** Reads one tensor of a GGUF file and returns it as f32 (nElements values, ne[0] contiguous). */
export function dequantizeTensor(file: GGUFFile, info: GGUFTensorInfo): Float32Array {
  if (!canDequantize(info.type)) {
    throw new GGUFError(file.path, `tensor "${info.name}" has type ${typeName(info.type)}, which RepoKV cannot compute with (supported: ${DEQUANT_TYPES.map(typeName).join(', ')})`);
  }
  const bytes = file.readTensorBytes(info);
  return dequantize(info.type, new Uint8Array(bytes.buffer, bytes.byteOffset, bytes.byteLength), info.nElements);
}

// ---- quantization -------------------------------------------------------------------------------------
//
// Each quantizer reads blockSize floats per block from `x` (values taken as f32) and writes typeSize
// bytes per block to `y`.

type Quant = (x: Float32Array, y: Uint8Array, nBlocks: number) => void;

const quantF32: Quant = (x, y, n) => {
  y.set(new Uint8Array(x.buffer, x.byteOffset, 4 * n));
};

const quantF16: Quant = (x, y, n) => {
  for (let i = 0; i < n; i++) {
    const h = f32ToF16(x[i]);
    y[2 * i] = h & 0xff;
    y[2 * i + 1] = h >>> 8;
  }
};

const quantBF16: Quant = (x, y, n) => {
  for (let i = 0; i < n; i++) {
    const h = f32ToBf16(x[i]);
    y[2 * i] = h & 0xff;
    y[2 * i + 1] = h >>> 8;
  }
};

/** Q8_0: d = max|x| / 127, q = round(x / d) (ties away from zero). */
const quantQ8_0: Quant = (x, y, n) => {
  for (let b = 0; b < n; b++) {
    const xo = 32 * b;
    const o = 34 * b;
    let amax = 0;
    for (let i = 0; i < 32; i++) amax = Math.max(amax, Math.abs(x[xo + i]));
    const d = f(amax / 127);
    const id = d !== 0 ? f(1 / d) : 0;
    putHalf(y, o, d);
    for (let i = 0; i < 32; i++) y[o + 2 + i] = roundAway(f(x[xo + i] * id)) & 0xff;
  }
};

/** The element with the largest magnitude (the first one on ties), with its sign. */
function signedAbsMax(x: Float32Array, from: number, n: number): number {
  let amax = 0;
  let max = 0;
  for (let i = 0; i < n; i++) {
    const v = x[from + i];
    if (Math.abs(v) > amax) {
      amax = Math.abs(v);
      max = v;
    }
  }
  return max;
}

/**
 * Q4_0: the element of largest magnitude maps to -8 exactly (d = max / -8), so the 16 levels -8..7
 * cover both signs; q = min(15, trunc(x/d + 8.5)).
 */
const quantQ4_0: Quant = (x, y, n) => {
  for (let b = 0; b < n; b++) {
    const xo = 32 * b;
    const o = 18 * b;
    const d = f(signedAbsMax(x, xo, 32) / -8);
    const id = d !== 0 ? f(1 / d) : 0;
    putHalf(y, o, d);
    for (let j = 0; j < 16; j++) {
      const q0 = Math.min(15, Math.trunc(f(f(x[xo + j] * id) + 8.5)));
      const q1 = Math.min(15, Math.trunc(f(f(x[xo + j + 16] * id) + 8.5)));
      y[o + 2 + j] = q0 | (q1 << 4);
    }
  }
};

/** Q5_0: as Q4_0 with 32 levels: d = max / -16, q = min(31, trunc(x/d + 16.5)). */
const quantQ5_0: Quant = (x, y, n) => {
  for (let b = 0; b < n; b++) {
    const xo = 32 * b;
    const o = 22 * b;
    const d = f(signedAbsMax(x, xo, 32) / -16);
    const id = d !== 0 ? f(1 / d) : 0;
    putHalf(y, o, d);
    y[o + 2] = y[o + 3] = y[o + 4] = y[o + 5] = 0;
    for (let j = 0; j < 16; j++) {
      const q0 = Math.min(31, Math.trunc(f(f(x[xo + j] * id) + 16.5)));
      const q1 = Math.min(31, Math.trunc(f(f(x[xo + j + 16] * id) + 16.5)));
      y[o + 6 + j] = (q0 & 0xf) | ((q1 & 0xf) << 4);
      if (q0 & 0x10) y[o + 2 + (j >>> 3)] |= 1 << (j & 7);
      if (q1 & 0x10) y[o + 4 + (j >>> 3)] |= 1 << (j & 7); // bit j+16 of the u32
    }
  }
};

/**
 * Fits x ≈ scale * L + min over one sub-block (ggml's make_qkx2_quants): L in 0..nmax, min <= 0,
 * minimising the weighted squared error. Starts from the plain (max-min)/nmax grid, then tries
 * nstep+1 other grid spacings (nmax + rmin + rdelta*k levels over the range); for each it solves the
 * weighted least-squares scale and min for the rounded levels and keeps the best.
 * Returns the scale and -min (a non-negative offset); writes the levels to L.
 */
const fitScratch = new Uint8Array(256);

function fitScaleMin(
  x: Float32Array,
  xo: number,
  n: number,
  nmax: number,
  w: Float32Array,
  L: Uint8Array,
  Lo: number,
  rmin: number,
  rdelta: number,
  nstep: number,
): { scale: number; negMin: number } {
  let min = x[xo];
  let max = x[xo];
  let sumW = w[0];
  let sumX = f(sumW * x[xo]);
  for (let i = 1; i < n; i++) {
    const v = x[xo + i];
    if (v < min) min = v;
    if (v > max) max = v;
    sumW = f(sumW + w[i]);
    sumX = f(sumX + f(w[i] * v));
  }
  if (min > 0) min = 0;
  if (max === min) {
    L.fill(0, Lo, Lo + n);
    return { scale: 0, negMin: -min };
  }
  let iscale = f(nmax / f(max - min));
  let scale = f(1 / iscale);
  let bestError = 0;
  for (let i = 0; i < n; i++) {
    const l = clampInt(nearestInt(f(iscale * f(x[xo + i] - min))), 0, nmax);
    L[Lo + i] = l;
    const diff = f(f(f(scale * l) + min) - x[xo + i]);
    bestError = f(bestError + f(w[i] * f(diff * diff)));
  }
  const Laux = fitScratch;
  for (let step = 0; step <= nstep; step++) {
    // As in ggml, `min` is the best fit so far, so later grids are laid from the improved minimum.
    iscale = f(f(f(rmin + f(rdelta * step)) + nmax) / f(max - min));
    let sumL = 0;
    let sumL2 = 0;
    let sumXL = 0;
    for (let i = 0; i < n; i++) {
      const l = clampInt(nearestInt(f(iscale * f(x[xo + i] - min))), 0, nmax);
      Laux[i] = l;
      const wl = f(w[i] * l);
      sumL = f(sumL + wl);
      sumL2 = f(sumL2 + f(wl * l));
      sumXL = f(sumXL + f(wl * x[xo + i]));
    }
    const D = f(f(sumW * sumL2) - f(sumL * sumL));
    if (D > 0) {
      let thisScale = f(f(f(sumW * sumXL) - f(sumX * sumL)) / D);
      let thisMin = f(f(f(sumL2 * sumX) - f(sumL * sumXL)) / D);
      if (thisMin > 0) {
        thisMin = 0;
        thisScale = f(sumXL / sumL2);
      }
      let err = 0;
      for (let i = 0; i < n; i++) {
        const diff = f(f(f(thisScale * Laux[i]) + thisMin) - x[xo + i]);
        err = f(err + f(w[i] * f(diff * diff)));
      }
      if (err < bestError) {
        for (let i = 0; i < n; i++) L[Lo + i] = Laux[i];
        bestError = err;
        scale = thisScale;
        min = thisMin;
      }
    }
  }
  return { scale, negMin: -min };
}

/**
 * Q4_K: each 32-element sub-block gets its own (scale, min) from fitScaleMin with weights
 * |x| + rms(sub-block); the eight scales and eight mins are then quantized to 6 bits against the
 * largest of each (d = max_scale/63, dmin = max_min/63), and the elements re-quantized with the
 * rounded scales: q = clamp(round((x + dmin*m) / (d*sc)), 0, 15).
 */
const quantQ4_K: Quant = (x, y, n) => {
  const L = new Uint8Array(256);
  const w = new Float32Array(32);
  const scales = new Float32Array(8);
  const mins = new Float32Array(8);
  for (let b = 0; b < n; b++) {
    const xo = 256 * b;
    const o = 144 * b;
    y.fill(0, o, o + 144);
    let maxScale = 0;
    let maxMin = 0;
    for (let j = 0; j < 8; j++) {
      const so = xo + 32 * j;
      let sumX2 = 0;
      for (let l = 0; l < 32; l++) sumX2 = f(sumX2 + f(x[so + l] * x[so + l]));
      const avX = f(Math.sqrt(f(sumX2 / 32)));
      for (let l = 0; l < 32; l++) w[l] = f(avX + Math.abs(x[so + l]));
      const r = fitScaleMin(x, so, 32, 15, w, L, 32 * j, -1, f(0.1), 20); // 0.1f in ggml
      scales[j] = r.scale;
      mins[j] = r.negMin;
      if (scales[j] > maxScale) maxScale = scales[j];
      if (mins[j] > maxMin) maxMin = mins[j];
    }
    const invScale = maxScale > 0 ? f(63 / maxScale) : 0;
    const invMin = maxMin > 0 ? f(63 / maxMin) : 0;
    const s = o + 4; // the 12 packed scale bytes
    for (let j = 0; j < 8; j++) {
      const ls = Math.min(63, nearestInt(f(invScale * scales[j])) & 0xff);
      const lm = Math.min(63, nearestInt(f(invMin * mins[j])) & 0xff);
      if (j < 4) {
        y[s + j] = ls;
        y[s + j + 4] = lm;
      } else {
        y[s + j + 4] = (ls & 0xf) | ((lm & 0xf) << 4);
        y[s + j - 4] |= (ls >>> 4) << 6;
        y[s + j] |= (lm >>> 4) << 6;
      }
    }
    putHalf(y, o, f(maxScale / 63));
    putHalf(y, o + 2, f(maxMin / 63));
    const d = halfAt(y, o);
    const dmin = halfAt(y, o + 2);
    for (let j = 0; j < 8; j++) {
      const [sc, m] = kScaleMin(y, s, j);
      const dl = f(d * sc);
      if (dl === 0) continue; // keep the levels from the fit
      const ml = f(dmin * m);
      for (let i = 0; i < 32; i++) {
        L[32 * j + i] = clampInt(nearestInt(f(f(x[xo + 32 * j + i] + ml) / dl)), 0, 15);
      }
    }
    for (let c = 0; c < 4; c++) {
      for (let l = 0; l < 32; l++) y[o + 16 + 32 * c + l] = L[64 * c + l] | (L[64 * c + 32 + l] << 4);
    }
  }
};

/**
 * Symmetric scale search for one sub-block (ggml's make_qx_quants with x^2 weights): levels
 * l in -nmax..nmax-1, scale chosen among 19 grids (the element of largest magnitude at -(nmax ± 0.9))
 * as the one with the best weighted least-squares fit. Returns the scale; writes l + nmax to L.
 */
function fitSymmetric(x: Float32Array, xo: number, n: number, nmax: number, L: Uint8Array, Lo: number): number {
  let amax = 0;
  let max = 0;
  for (let i = 0; i < n; i++) {
    const ax = Math.abs(x[xo + i]);
    if (ax > amax) {
      amax = ax;
      max = x[xo + i];
    }
  }
  if (amax < 1e-15) {
    L.fill(0, Lo, Lo + n);
    return 0;
  }
  const levels = (iscale: number): { sumLX: number; sumL2: number } => {
    let sumLX = 0;
    let sumL2 = 0;
    for (let i = 0; i < n; i++) {
      const v = x[xo + i];
      const l = clampInt(nearestInt(f(iscale * v)), -nmax, nmax - 1);
      const w = f(v * v);
      sumLX = f(sumLX + f(f(w * v) * l));
      sumL2 = f(sumL2 + f(f(w * l) * l));
    }
    return { sumLX, sumL2 };
  };
  const setLevels = (iscale: number): void => {
    for (let i = 0; i < n; i++) L[Lo + i] = nmax + clampInt(nearestInt(f(iscale * x[xo + i])), -nmax, nmax - 1);
  };
  let iscale = f(-nmax / max);
  setLevels(iscale);
  let { sumLX, sumL2 } = levels(iscale);
  let scale = sumL2 !== 0 ? f(sumLX / sumL2) : 0;
  let best = f(scale * sumLX);
  for (let step = -9; step <= 9; step++) {
    if (step === 0) continue;
    iscale = f(-f(nmax + f(f(0.1) * step)) / max); // 0.1f * step, in f32
    ({ sumLX, sumL2 } = levels(iscale));
    if (sumL2 > 0 && f(sumLX * sumLX) > f(best * sumL2)) {
      setLevels(iscale);
      scale = f(sumLX / sumL2);
      best = f(scale * sumLX);
    }
  }
  return scale;
}

/**
 * Q6_K: each 16-element sub-block gets a symmetric scale from fitSymmetric (levels -32..31); the 16
 * scales are quantized to int8 against the one of largest magnitude (d = -max_scale/128), and the
 * elements re-quantized with the rounded scales: q = clamp(round(x / (d*sc)), -32, 31) + 32.
 */
const quantQ6_K: Quant = (x, y, n) => {
  const L = new Uint8Array(256);
  const scales = new Float32Array(16);
  for (let b = 0; b < n; b++) {
    const xo = 256 * b;
    const o = 210 * b;
    y.fill(0, o, o + 210);
    let maxScale = 0;
    let maxAbsScale = 0;
    for (let j = 0; j < 16; j++) {
      scales[j] = fitSymmetric(x, xo + 16 * j, 16, 32, L, 16 * j);
      if (Math.abs(scales[j]) > maxAbsScale) {
        maxAbsScale = Math.abs(scales[j]);
        maxScale = scales[j];
      }
    }
    if (maxAbsScale < 1e-15) continue; // an all-zero block: every byte zero
    const iscale = f(-128 / maxScale);
    putHalf(y, o + 208, f(1 / iscale));
    for (let j = 0; j < 16; j++) y[o + 192 + j] = Math.min(127, nearestInt(f(iscale * scales[j]))) & 0xff;
    const d = halfAt(y, o + 208);
    for (let j = 0; j < 16; j++) {
      const dl = f(d * i8(y[o + 192 + j]));
      if (dl === 0) continue;
      for (let i = 0; i < 16; i++) {
        L[16 * j + i] = 32 + clampInt(nearestInt(f(x[xo + 16 * j + i] / dl)), -32, 31);
      }
    }
    for (let h = 0; h < 2; h++) {
      for (let l = 0; l < 32; l++) {
        const e = 128 * h + l;
        const [q0, q1, q2, q3] = [L[e], L[e + 32], L[e + 64], L[e + 96]];
        y[o + 64 * h + l] = (q0 & 0xf) | ((q2 & 0xf) << 4);
        y[o + 64 * h + 32 + l] = (q1 & 0xf) | ((q3 & 0xf) << 4);
        y[o + 128 + 32 * h + l] = (q0 >>> 4) | ((q1 >>> 4) << 2) | ((q2 >>> 4) << 4) | ((q3 >>> 4) << 6);
      }
    }
  }
};

const QUANT: Partial<Record<GGMLType, Quant>> = {
  [GGMLType.F32]: quantF32,
  [GGMLType.F16]: quantF16,
  [GGMLType.BF16]: quantBF16,
  [GGMLType.Q8_0]: quantQ8_0,
  [GGMLType.Q4_0]: quantQ4_0,
  [GGMLType.Q5_0]: quantQ5_0,
  [GGMLType.Q4_K]: quantQ4_K,
  [GGMLType.Q6_K]: quantQ6_K,
};

/** Types this module can encode from f32. */
export const QUANT_TYPES: readonly GGMLType[] = Object.keys(QUANT).map(Number) as GGMLType[];

export function canQuantize(type: GGMLType): boolean {
  return QUANT[type] !== undefined;
}

/** Encodes `x` (length a multiple of the type's block size) as blocks of `type`. */
export function quantize(type: GGMLType, x: Float32Array): Uint8Array {
  const fn = QUANT[type];
  if (!fn) throw new Error(`cannot quantize to ${typeName(type)}: not supported`);
  const nBlocks = blocksOf(type, x.length, 'quantize');
  const y = new Uint8Array(nBlocks * TYPE_TRAITS[type].typeSize);
  fn(x, y, nBlocks);
  return y;
}
