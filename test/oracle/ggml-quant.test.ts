// Bit-for-bit proof of engine/gguf/quant.ts against ggml itself (libggml-base.so from node-llama-cpp):
//  - dequantization: ggml's to_float and ours must give the same f32 bits, on random block bytes (every
//    field pattern, not only what a quantizer would write) and on blocks our quantizers wrote;
//  - quantization: our quantizers and ggml_quantize_chunk (reference path, no imatrix) must write the
//    same bytes; the number of differing blocks is reported and must be zero.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { GGMLType, TYPE_TRAITS, typeName } from '../../engine/gguf/types.js';
import { DEQUANT_TYPES, QUANT_TYPES, dequantize, quantize } from '../../engine/gguf/quant.js';
import { Rng } from '../../engine/model/synthetic.js';
import { ggmlDequantize, ggmlQuantize, ggmlTraits } from './ggml-oracle.js';

/** Elements whose f32 bits differ (two NaNs of any payload count as equal when `nanEqual`). */
function bitMismatches(a: Float32Array, b: Float32Array, nanEqual: boolean): { count: number; first: number } {
  assert.equal(a.length, b.length);
  const ua = new Uint32Array(a.buffer, a.byteOffset, a.length);
  const ub = new Uint32Array(b.buffer, b.byteOffset, b.length);
  let count = 0;
  let first = -1;
  for (let i = 0; i < a.length; i++) {
    if (ua[i] === ub[i]) continue;
    if (nanEqual && Number.isNaN(a[i]) && Number.isNaN(b[i])) continue;
    if (first < 0) first = i;
    count++;
  }
  return { count, first };
}

function differingBlocks(a: Uint8Array, b: Uint8Array, blockBytes: number): number {
  assert.equal(a.length, b.length);
  let n = 0;
  for (let o = 0; o < a.length; o += blockBytes) {
    for (let i = 0; i < blockBytes; i++) {
      if (a[o + i] !== b[o + i]) {
        n++;
        break;
      }
    }
  }
  return n;
}

/**
 * Test data: rows of normal values at scales from 1e-6 to 1e3, plus blocks that stress the edge cases
 * of the scale searches (all zero, constant, one spike, one sign only, exact ties, tiny values).
 */
function testMatrix(rng: Rng, nRows: number, perRow: number): Float32Array {
  const x = new Float32Array(nRows * perRow);
  for (let r = 0; r < nRows; r++) {
    const scale = 10 ** (-6 + (9 * r) / Math.max(1, nRows - 1));
    for (let i = 0; i < perRow; i++) x[r * perRow + i] = scale * rng.normal();
  }
  const special = (k: number, fill: (i: number) => number): void => {
    const o = (k * 256) % x.length;
    for (let i = 0; i < 256; i++) x[o + i] = fill(i);
  };
  special(1, () => 0);
  special(3, () => 0.5);
  special(5, () => -2);
  special(7, (i) => (i === 17 ? 40 : 0.01 * rng.normal()));
  special(9, () => Math.abs(rng.normal()));
  special(11, () => -Math.abs(rng.normal()) - 3);
  special(13, (i) => (i % 8) - 4); // integer grid: exact ties in the roundings
  special(15, (i) => (i % 2 ? 1 : -1) * 1e-20);
  special(17, (i) => (i % 3) * 0.25);
  special(19, (i) => (i % 16 === 0 ? 1e4 : rng.normal()));
  return x;
}

test('our traits agree with ggml_get_type_traits (struct layout check)', () => {
  for (const t of DEQUANT_TYPES) {
    const g = ggmlTraits(t);
    assert.equal(g.name.toUpperCase(), TYPE_TRAITS[t].name.toUpperCase(), `name of type ${t}`);
    assert.equal(g.blockSize, TYPE_TRAITS[t].blockSize, `block size of ${g.name}`);
    assert.equal(g.typeSize, TYPE_TRAITS[t].typeSize, `type size of ${g.name}`);
    assert.equal(g.hasToFloat, t !== GGMLType.F32, `to_float of ${g.name}`);
  }
});

test('dequantization of random block bytes equals ggml to_float bit for bit', (t) => {
  const rng = new Rng(1234);
  for (const type of DEQUANT_TYPES) {
    if (type === GGMLType.F32) continue; // ggml has no to_float for F32 (it is the identity)
    const tr = TYPE_TRAITS[type];
    let bytes: Uint8Array;
    let n: number;
    if (tr.blockSize === 1 && tr.typeSize === 2) {
      // F16 / BF16: every one of the 65536 bit patterns, NaNs and subnormals included.
      n = 65536;
      bytes = new Uint8Array(2 * n);
      for (let h = 0; h < n; h++) {
        bytes[2 * h] = h & 0xff;
        bytes[2 * h + 1] = h >>> 8;
      }
    } else {
      const nBlocks = 2048;
      n = nBlocks * tr.blockSize;
      bytes = new Uint8Array(nBlocks * tr.typeSize);
      for (let i = 0; i < bytes.length; i++) bytes[i] = rng.u32() & 0xff;
    }
    const ours = dequantize(type, bytes, n);
    const theirs = ggmlDequantize(type, bytes, n);
    // 16-bit floats are converted bit for bit, NaN payloads included; in block types a NaN or infinite
    // scale gives NaNs whose payload depends on the FPU, so any NaN matches any NaN there.
    const m = bitMismatches(ours, theirs, tr.blockSize > 1);
    t.diagnostic(`${typeName(type)}: ${n} elements from random bytes, ${m.count} differ`);
    assert.equal(m.count, 0, `${typeName(type)}: ${m.count} elements differ, first at ${m.first}: ours ${ours[m.first]} ggml ${theirs[m.first]}`);
  }
});

test('f32 -> f16 / bf16 rounding equals ggml at every rounding boundary', (t) => {
  const rng = new Rng(99);
  const vals: number[] = [0, -0, Infinity, -Infinity, NaN, 65504, 65519.99, 65520, 1e9, 6e-8, 5.96e-8, 2.98e-8, 2.9802322387695312e-8, 1e-40, -1e-45];
  // For every finite positive half, the value, the midpoint to the next half, and one f32 ulp on each
  // side of that midpoint: every tie-breaking and carry case of the conversion.
  const f32 = new Float32Array(1);
  const u32 = new Uint32Array(f32.buffer);
  const half = (h: number): number => {
    const e = (h >>> 10) & 31;
    const m = h & 1023;
    return e === 0 ? m * 2 ** -24 : (1 + m / 1024) * 2 ** (e - 15);
  };
  for (let h = 0; h < 0x7c00; h++) {
    const a = half(h);
    const mid = h + 1 < 0x7c00 ? (a + half(h + 1)) / 2 : 65520;
    f32[0] = mid;
    const bits = u32[0];
    for (const b of [bits - 1, bits, bits + 1]) {
      u32[0] = b;
      vals.push(f32[0], -f32[0]);
    }
    vals.push(a, -a);
  }
  for (let i = 0; i < 100000; i++) {
    u32[0] = rng.u32();
    vals.push(f32[0]); // random bit patterns: all exponents, subnormals, NaNs (payload may be lost in JS)
  }
  // bf16: ties and near-ties of the top 16 bits.
  for (let i = 0; i < 20000; i++) {
    const top = rng.u32() & 0xffff0000;
    for (const low of [0x7fff, 0x8000, 0x8001, 0x0001, 0xffff]) {
      u32[0] = (top | low) >>> 0;
      vals.push(f32[0]);
    }
  }
  const n = vals.length - (vals.length % 256);
  const x = Float32Array.from(vals.slice(0, n));
  for (const type of [GGMLType.F16, GGMLType.BF16]) {
    const ours = quantize(type, x);
    const theirs = ggmlQuantize(type, x, 1, n);
    const diff = differingBlocks(ours, theirs, 2);
    t.diagnostic(`${typeName(type)}: ${n} values, ${diff} encodings differ from ggml_quantize_chunk`);
    assert.equal(diff, 0, `${typeName(type)}: ${diff} of ${n} values encode differently`);
  }
});

test('our quantizers match ggml_quantize_chunk byte for byte, and ggml decodes our blocks exactly like we do', (t) => {
  const nRows = 128;
  const perRow = 2048;
  const x = testMatrix(new Rng(42), nRows, perRow);
  for (const type of QUANT_TYPES) {
    const tr = TYPE_TRAITS[type];
    const ours = quantize(type, x);
    const theirs = ggmlQuantize(type, x, nRows, perRow);
    const blocks = ours.length / tr.typeSize;
    const diff = differingBlocks(ours, theirs, tr.typeSize);
    const n = x.length;
    const ggmlOfOurs = type === GGMLType.F32 ? new Float32Array(ours.buffer.slice(0)) : ggmlDequantize(type, ours, n);
    const mine = dequantize(type, ours, n);
    const m = bitMismatches(mine, ggmlOfOurs, false);
    // The round trip is also a sanity check of the quantizer's quality (relative RMS error).
    let se = 0;
    let ss = 0;
    for (let i = 0; i < n; i++) {
      se += (mine[i] - x[i]) ** 2;
      ss += x[i] ** 2;
    }
    t.diagnostic(`${typeName(type)}: ${diff}/${blocks} blocks differ from ggml_quantize_chunk; dequantized ${m.count}/${n} elements differ; relative RMS error ${Math.sqrt(se / ss).toExponential(2)}`);
    assert.equal(m.count, 0, `${typeName(type)}: ggml decodes ${m.count} of our elements differently`);
    assert.equal(diff, 0, `${typeName(type)}: ${diff} of ${blocks} blocks differ from ggml_quantize_chunk`);
  }
});
