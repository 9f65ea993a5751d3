// GGUF weights → the layouts onnxruntime's CPU provider computes with (README.md has the table).
//
// Every ggml block type we compute with is, per sub-block of 16 or 32 elements, an affine map of small
// integers: x = a·q + b (a = the sub-block's scale, b = its offset: 0, or −dmin·m, or the Q4_1/Q5_1
// minimum). com.microsoft MatMulNBits stores w = s·(v − Z) with unsigned 4- or 8-bit v, an f32 scale s
// per block and (without a zero-point input) the default zero point Z = 2^(bits−1). So each sub-block
// becomes one MatMulNBits block with s = a and v = q + Z when that fits the bits (then c = b), else
// v = q − qmin, leaving a per-block constant
//   c = a·(Z + qmin) + b,
// added back by a small f32 product on block sums: y += Σ_blocks (Σ_{i∈block} x_i) · c. This is exact
// in real arithmetic (c is rounded once to f32); no requantization. Explicit zero points would also be
// exact but measured 3× (u8) to 70× (float) slower at one row (README, "MatMulNBits zero points").
//
// F32/F16/BF16 become f32 matrices (Gemm, transB) — exact; the f32 GEMM is as fast as MatMulNBits in
// prefill but moves 2–4× more bytes in decode.

import type { GGUFTensorInfo } from '../../gguf/reader.js';
import { dequantize, f16ToF32, kScaleMin } from '../../gguf/quant.js';
import { GGMLType, TYPE_TRAITS, typeName } from '../../gguf/types.js';

/** A matrix W [n, k] (ggml dims [k, n]) in MatMulNBits layout. */
export interface NBitsMatrix {
  kind: 'nbits';
  k: number;
  n: number;
  bits: 4 | 8;
  block: 16 | 32;
  /** [n, k/block, block·bits/8]; 4-bit: element 2i in the low nibble of byte i. */
  q: Uint8Array;
  /** [n · k/block] f32 scales. */
  scales: Float32Array;
  /** [k/block, n] per-block constants c (see above), or undefined when all are zero. */
  corr?: Float32Array;
}

/** A matrix W [n, k] as f32, row-major (used by Gemm with transB = 1). */
export interface F32Matrix {
  kind: 'f32';
  k: number;
  n: number;
  w: Float32Array;
}

export type PackedMatrix = NBitsMatrix | F32Matrix;

/** How a ggml type maps onto MatMulNBits: sub-block size, bits, and the integer range of q. */
interface AffineLayout {
  sub: 16 | 32;
  bits: 4 | 8;
  qmin: number;
  qmax: number;
  /** Whether sub-blocks have an offset b (a minimum); those need the correction product. */
  affine: boolean;
  /** Decodes super-block `blk` of `src`: q[e] for each element, a[j], b[j] for each sub-block. */
  decode(src: Uint8Array, blk: number, q: Int32Array, a: Float64Array, b: Float64Array): void;
}

function half(src: Uint8Array, o: number): number {
  return f16ToF32(src[o] | (src[o + 1] << 8));
}
function i8(v: number): number {
  return (v << 24) >> 24;
}
const f = Math.fround;

/**
 * Per ggml type. `a` and `b` are computed exactly as ggml's dequantizer rounds them (f32 products), so
 * a·q + b reproduces ggml's values (the last f32 rounding of ggml's `a·q − m` aside).
 */
const LAYOUTS: Partial<Record<GGMLType, AffineLayout>> = {
  [GGMLType.Q8_0]: {
    sub: 32,
    bits: 8,
    qmin: -128,
    qmax: 127,
    affine: false,
    decode(src, blk, q, a, b) {
      const o = 34 * blk;
      a[0] = half(src, o);
      b[0] = 0;
      for (let i = 0; i < 32; i++) q[i] = i8(src[o + 2 + i]);
    },
  },
  [GGMLType.Q4_0]: {
    sub: 32,
    bits: 4,
    qmin: -8,
    qmax: 7,
    affine: false,
    decode(src, blk, q, a, b) {
      const o = 18 * blk;
      a[0] = half(src, o);
      b[0] = 0;
      for (let j = 0; j < 16; j++) {
        const byte = src[o + 2 + j];
        q[j] = (byte & 0xf) - 8;
        q[j + 16] = (byte >>> 4) - 8;
      }
    },
  },
  [GGMLType.Q4_1]: {
    sub: 32,
    bits: 4,
    qmin: 0,
    qmax: 15,
    affine: true,
    decode(src, blk, q, a, b) {
      const o = 20 * blk;
      a[0] = half(src, o);
      b[0] = half(src, o + 2);
      for (let j = 0; j < 16; j++) {
        const byte = src[o + 4 + j];
        q[j] = byte & 0xf;
        q[j + 16] = byte >>> 4;
      }
    },
  },
  [GGMLType.Q5_0]: {
    sub: 32,
    bits: 8,
    qmin: -16,
    qmax: 15,
    affine: false,
    decode(src, blk, q, a, b) {
      const o = 22 * blk;
      a[0] = half(src, o);
      b[0] = 0;
      const qh = (src[o + 2] | (src[o + 3] << 8) | (src[o + 4] << 16) | (src[o + 5] << 24)) >>> 0;
      for (let j = 0; j < 16; j++) {
        const byte = src[o + 6 + j];
        q[j] = ((byte & 0xf) | (((qh >>> j) & 1) << 4)) - 16;
        q[j + 16] = ((byte >>> 4) | (((qh >>> (j + 16)) & 1) << 4)) - 16;
      }
    },
  },
  [GGMLType.Q5_1]: {
    sub: 32,
    bits: 8,
    qmin: 0,
    qmax: 31,
    affine: true,
    decode(src, blk, q, a, b) {
      const o = 24 * blk;
      a[0] = half(src, o);
      b[0] = half(src, o + 2);
      const qh = (src[o + 4] | (src[o + 5] << 8) | (src[o + 6] << 16) | (src[o + 7] << 24)) >>> 0;
      for (let j = 0; j < 16; j++) {
        const byte = src[o + 8 + j];
        q[j] = (byte & 0xf) | (((qh >>> j) & 1) << 4);
        q[j + 16] = (byte >>> 4) | (((qh >>> (j + 16)) & 1) << 4);
      }
    },
  },
  [GGMLType.Q2_K]: {
    sub: 16,
    bits: 4,
    qmin: 0,
    qmax: 3,
    affine: true,
    decode(src, blk, q, a, b) {
      const o = 84 * blk;
      const d = half(src, o + 80);
      const dmin = half(src, o + 82);
      for (let j = 0; j < 16; j++) {
        const sc = src[o + j];
        a[j] = f(d * (sc & 0xf));
        b[j] = -f(dmin * (sc >>> 4));
      }
      for (let e = 0; e < 256; e++) q[e] = (src[o + 16 + 32 * (e >>> 7) + (e & 31)] >>> (2 * ((e & 127) >>> 5))) & 3;
    },
  },
  [GGMLType.Q3_K]: {
    sub: 16,
    bits: 4,
    qmin: -4,
    qmax: 3,
    affine: false,
    decode(src, blk, q, a, b) {
      const o = 110 * blk;
      const d = half(src, o + 108);
      for (let j = 0; j < 16; j++) {
        const low = j < 8 ? src[o + 96 + j] & 0xf : src[o + 96 + j - 8] >>> 4;
        const high = (src[o + 104 + (j & 3)] >>> (2 * (j >>> 2))) & 3;
        a[j] = f(d * ((low | (high << 4)) - 32));
        b[j] = 0;
      }
      for (let e = 0; e < 256; e++) {
        const h = e >>> 7;
        const k = (e & 127) >>> 5;
        const low = (src[o + 32 + 32 * h + (e & 31)] >>> (2 * k)) & 3;
        const hi = (src[o + (e & 31)] >>> (4 * h + k)) & 1;
        q[e] = low - (hi ? 0 : 4);
      }
    },
  },
  [GGMLType.Q4_K]: {
    sub: 32,
    bits: 4,
    qmin: 0,
    qmax: 15,
    affine: true,
    decode(src, blk, q, a, b) {
      const o = 144 * blk;
      const d = half(src, o);
      const dmin = half(src, o + 2);
      for (let j = 0; j < 8; j++) {
        const [sc, m] = kScaleMin(src, o + 4, j);
        a[j] = f(d * sc);
        b[j] = -f(dmin * m);
      }
      for (let e = 0; e < 256; e++) {
        const byte = src[o + 16 + 32 * (e >>> 6) + (e & 31)];
        q[e] = e & 32 ? byte >>> 4 : byte & 0xf;
      }
    },
  },
  [GGMLType.Q5_K]: {
    sub: 32,
    bits: 8,
    qmin: 0,
    qmax: 31,
    affine: true,
    decode(src, blk, q, a, b) {
      const o = 176 * blk;
      const d = half(src, o);
      const dmin = half(src, o + 2);
      for (let j = 0; j < 8; j++) {
        const [sc, m] = kScaleMin(src, o + 4, j);
        a[j] = f(d * sc);
        b[j] = -f(dmin * m);
      }
      for (let e = 0; e < 256; e++) {
        const byte = src[o + 48 + 32 * (e >>> 6) + (e & 31)];
        const low = e & 32 ? byte >>> 4 : byte & 0xf;
        q[e] = low + (((src[o + 16 + (e & 31)] >>> (e >>> 5)) & 1) << 4);
      }
    },
  },
  [GGMLType.Q6_K]: {
    sub: 16,
    bits: 8,
    qmin: -32,
    qmax: 31,
    affine: false,
    decode(src, blk, q, a, b) {
      const o = 210 * blk;
      const d = half(src, o + 208);
      for (let j = 0; j < 16; j++) {
        a[j] = f(d * i8(src[o + 192 + j]));
        b[j] = 0;
      }
      for (let e = 0; e < 256; e++) {
        const h = e >>> 7;
        const k = (e & 127) >>> 5;
        const l = e & 31;
        const lo = src[o + 64 * h + l + 32 * (k & 1)];
        const low = k < 2 ? lo & 0xf : lo >>> 4;
        const high = (src[o + 128 + 32 * h + l] >>> (2 * k)) & 3;
        q[e] = (low | (high << 4)) - 32;
      }
    },
  },
};

const FLOAT_TYPES = new Set<GGMLType>([GGMLType.F32, GGMLType.F16, GGMLType.BF16]);

export type Precision = 'int8' | 'f32';

/** Whether the CPU backend can compute with a matrix of this type. */
export function canPack(type: GGMLType): boolean {
  return FLOAT_TYPES.has(type) || LAYOUTS[type] !== undefined;
}

export function supportedTypes(): string[] {
  return [...FLOAT_TYPES, ...Object.keys(LAYOUTS).map(Number)].map((t) => typeName(t));
}

/** The MatMulNBits layout of a type: bits, block, whether it needs the correction product. */
export function nbitsLayout(type: GGMLType): { bits: 4 | 8; block: 16 | 32 } | undefined {
  const l = LAYOUTS[type];
  return l ? { bits: l.bits, block: l.sub } : undefined;
}

/**
 * Packs a 2-D GGUF matrix. `precision: 'f32'` dequantizes every type to f32 (exact products, 4 bytes a
 * weight); 'int8' keeps quantized types as MatMulNBits (activations quantized to int8 per block at
 * accuracy_level 4, as llama.cpp's CPU dot products quantize them to Q8_0/Q8_K).
 */
export function packMatrix(t: GGUFTensorInfo, bytes: Uint8Array, precision: Precision): PackedMatrix {
  if (t.dims.length !== 2 && !(t.dims.length > 2 && t.dims.slice(2).every((d) => d === 1))) {
    throw new Error(`tensor ${t.name} has dims [${t.dims.join(', ')}], not a matrix`);
  }
  const [k, n] = t.dims;
  const layout = LAYOUTS[t.type];
  if (FLOAT_TYPES.has(t.type) || (layout && precision === 'f32')) {
    return { kind: 'f32', k, n, w: dequantize(t.type, bytes, k * n) };
  }
  if (!layout) throw new Error(`tensor ${t.name} has type ${typeName(t.type)}, which the CPU backend cannot compute with (supported: ${supportedTypes().join(', ')})`);
  return packNBits(t.type, layout, bytes, k, n);
}

function packNBits(type: GGMLType, L: AffineLayout, src: Uint8Array, k: number, n: number): NBitsMatrix {
  const tr = TYPE_TRAITS[type];
  const perBlock = tr.blockSize;
  const subs = perBlock / L.sub;
  const kb = k / L.sub;
  const blob = (L.sub * L.bits) / 8;
  const Z = 1 << (L.bits - 1);
  const q = new Uint8Array(n * kb * blob);
  const scales = new Float32Array(n * kb);
  const corr = new Float32Array(kb * n);
  let anyCorr = false;
  const qi = new Int32Array(perBlock);
  const a = new Float64Array(subs);
  const b = new Float64Array(subs);
  const blocksPerRow = k / perBlock;
  const vmax = (1 << L.bits) - 1;
  // Symmetric types keep q's zero on the default zero point (no constant); otherwise shift to 0.
  const off = L.qmin + Z >= 0 && L.qmax + Z <= vmax ? Z : -L.qmin;
  for (let r = 0; r < n; r++) {
    for (let bi = 0; bi < blocksPerRow; bi++) {
      L.decode(src, r * blocksPerRow + bi, qi, a, b);
      for (let j = 0; j < subs; j++) {
        const sb = bi * subs + j; // sub-block index within the row
        scales[r * kb + sb] = a[j];
        const c = f(a[j] * (Z - off) + b[j]);
        if (c !== 0) anyCorr = true;
        corr[sb * n + r] = c;
        const base = (r * kb + sb) * blob;
        for (let i = 0; i < L.sub; i++) {
          const v = qi[j * L.sub + i] + off;
          if (v < 0 || v > vmax) throw new Error(`${typeName(type)}: quant ${qi[j * L.sub + i]} outside the ${L.bits}-bit range`);
          if (L.bits === 8) q[base + i] = v;
          else q[base + (i >> 1)] |= i & 1 ? v << 4 : v;
        }
      }
    }
  }
  return { kind: 'nbits', k, n, bits: L.bits, block: L.sub, q, scales, corr: anyCorr ? corr : undefined };
}

/** Stacks matrices of one layout along n (their outputs side by side): q/k/v or gate/up as one product. */
export function concatMatrices(ms: PackedMatrix[]): PackedMatrix {
  const k = ms[0].k;
  const n = ms.reduce((s, m) => s + m.n, 0);
  if (ms.some((m) => m.k !== k || m.kind !== ms[0].kind)) throw new Error('concatMatrices: different shapes or kinds');
  const cat = <T extends Float32Array | Uint8Array>(parts: T[], make: (len: number) => T): T => {
    const out = make(parts.reduce((s, p) => s + p.length, 0));
    let o = 0;
    for (const p of parts) {
      out.set(p, o);
      o += p.length;
    }
    return out;
  };
  if (ms[0].kind === 'f32') return { kind: 'f32', k, n, w: cat(ms.map((m) => (m as F32Matrix).w), (l) => new Float32Array(l)) };
  const nb = ms as NBitsMatrix[];
  const { bits, block } = nb[0];
  if (nb.some((m) => m.bits !== bits || m.block !== block)) throw new Error('concatMatrices: different MatMulNBits layouts');
  let corr: Float32Array | undefined;
  if (nb.some((m) => m.corr)) {
    const kb = k / block;
    corr = new Float32Array(kb * n);
    let o = 0;
    for (const m of nb) {
      if (m.corr) for (let b = 0; b < kb; b++) corr.set(m.corr.subarray(b * m.n, (b + 1) * m.n), b * n + o);
      o += m.n;
    }
  }
  return {
    kind: 'nbits',
    k,
    n,
    bits,
    block,
    q: cat(nb.map((m) => m.q), (l) => new Uint8Array(l)),
    scales: cat(nb.map((m) => m.scales), (l) => new Float32Array(l)),
    corr,
  };
}

/** The f32 matrix [n, k] a packed matrix stands for (tests: compare with quant.ts's dequantize). */
export function unpackMatrix(m: PackedMatrix): Float32Array {
  if (m.kind === 'f32') return m.w;
  const { k, n, bits, block } = m;
  const kb = k / block;
  const blob = (block * bits) / 8;
  const Z = 1 << (bits - 1);
  const out = new Float32Array(n * k);
  for (let r = 0; r < n; r++) {
    for (let sb = 0; sb < kb; sb++) {
      const s = m.scales[r * kb + sb];
      const c = m.corr ? m.corr[sb * n + r] : 0;
      const base = (r * kb + sb) * blob;
      for (let i = 0; i < block; i++) {
        const v = bits === 8 ? m.q[base + i] : (m.q[base + (i >> 1)] >> ((i & 1) * 4)) & 15;
        out[r * k + sb * block + i] = s * (v - Z) + c;
      }
    }
  }
  return out;
}

/** Bytes the packed form keeps resident. */
export function packedBytes(m: PackedMatrix): number {
  return m.kind === 'f32' ? m.w.byteLength : m.q.byteLength + m.scales.byteLength + (m.corr?.byteLength ?? 0);
}

/** Estimated resident bytes of a tensor once packed, without packing it (memory check before loading). */
export function estimatePackedBytes(t: GGUFTensorInfo, precision: Precision): number {
  const layout = LAYOUTS[t.type];
  if (t.dims.length < 2 || !layout || precision === 'f32') return t.nElements * 4;
  const blocks = t.nElements / layout.sub;
  const hasCorr = layout.affine;
  return blocks * ((layout.sub * layout.bits) / 8 + 4 + (hasCorr ? 4 : 0));
}
