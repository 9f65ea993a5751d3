// Unit tests of engine/gguf/quant.ts that need no oracle: conversions at their edge cases, the
// round-trip error of each quantizer, and dequantizeTensor on a real GGUF file.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { GGMLType, TYPE_TRAITS, typeName } from '../../engine/gguf/types.js';
import {
  QUANT_TYPES,
  bf16ToF32,
  dequantize,
  dequantizeTensor,
  f16ToF32,
  f32ToBf16,
  f32ToF16,
  nearestInt,
  quantize,
} from '../../engine/gguf/quant.js';
import { GGUFError, GGUFFile } from '../../engine/gguf/reader.js';
import { meta, writeGGUF } from '../../engine/gguf/writer.js';
import { Rng } from '../../engine/model/synthetic.js';

test('f32 -> f16 edge cases (round to nearest even, overflow, subnormals, NaN)', () => {
  const cases: [number, number][] = [
    [0, 0x0000],
    [-0, 0x8000],
    [1, 0x3c00],
    [-2, 0xc000],
    [65504, 0x7bff],
    [65519.99, 0x7bff],
    [65520, 0x7c00], // the tie above the largest half rounds to infinity (even)
    [Infinity, 0x7c00],
    [-Infinity, 0xfc00],
    [2 ** -24, 0x0001],
    [2 ** -25, 0x0000], // tie between 0 and the smallest subnormal: even is 0
    [3 * 2 ** -25, 0x0002], // tie between 1 and 2 units: even is 2
    [2 ** -14, 0x0400],
    [1 + 2 ** -11, 0x3c00], // tie: stays on even 1.0
    [1 + 3 * 2 ** -11, 0x3c02], // tie: goes up to even
    [1e-10, 0x0000],
  ];
  for (const [x, h] of cases) assert.equal(f32ToF16(x), h, `f32ToF16(${x})`);
  assert.equal(f32ToF16(NaN) & 0x7fff, 0x7e00);
  for (let h = 0; h < 0x10000; h++) {
    if ((h & 0x7c00) === 0x7c00 && (h & 0x3ff) !== 0) continue; // NaN
    assert.equal(f32ToF16(f16ToF32(h)), h, `half 0x${h.toString(16)} round trip`);
  }
});

test('f32 -> bf16 edge cases', () => {
  assert.equal(f32ToBf16(1), 0x3f80);
  assert.equal(f32ToBf16(-1), 0xbf80);
  assert.equal(f32ToBf16(1 + 2 ** -8), 0x3f80); // tie, even stays
  assert.equal(f32ToBf16(1 + 3 * 2 ** -8), 0x3f82); // tie, odd goes up
  assert.equal(f32ToBf16(1 + 2 ** -8 + 2 ** -20), 0x3f81);
  assert.equal(f32ToBf16(Infinity), 0x7f80);
  assert.equal(f32ToBf16(NaN) & 0x7fc0, 0x7fc0);
  assert.equal(bf16ToF32(0x4049), 3.140625);
  assert.equal(bf16ToF32(f32ToBf16(3.14159)), 3.140625);
});

test('nearestInt rounds ties to even like ggml', () => {
  const cases: [number, number][] = [
    [0.5, 0],
    [1.5, 2],
    [2.5, 2],
    [-0.5, 0],
    [-1.5, -2],
    [-2.5, -2],
    [2.4999998, 2],
    [-3.7, -4],
    [7, 7],
  ];
  for (const [v, r] of cases) assert.equal(nearestInt(v) + 0, r, `nearestInt(${v})`);
});

test('quantize -> dequantize keeps the values within each type\'s error', () => {
  const rng = new Rng(7);
  const x = rng.fillNormal(new Float32Array(256 * 64), 0.05);
  const bound: Partial<Record<GGMLType, number>> = {
    [GGMLType.F32]: 0,
    [GGMLType.F16]: 1e-3,
    [GGMLType.BF16]: 5e-3,
    [GGMLType.Q8_0]: 1e-2,
    [GGMLType.Q6_K]: 3e-2,
    [GGMLType.Q5_0]: 6e-2,
    [GGMLType.Q4_K]: 1e-1,
    [GGMLType.Q4_0]: 1.2e-1,
  };
  for (const type of QUANT_TYPES) {
    const q = quantize(type, x);
    assert.equal(q.length, (x.length / TYPE_TRAITS[type].blockSize) * TYPE_TRAITS[type].typeSize);
    const y = dequantize(type, q, x.length);
    let se = 0;
    let ss = 0;
    for (let i = 0; i < x.length; i++) {
      se += (y[i] - x[i]) ** 2;
      ss += x[i] ** 2;
    }
    const rel = Math.sqrt(se / ss);
    const b = bound[type];
    assert.ok(b !== undefined, `no error bound for ${typeName(type)}`);
    assert.ok(rel <= b, `${typeName(type)}: relative RMS error ${rel} > ${b}`);
  }
});

test('values already on a quantization grid survive exactly', () => {
  // Q8_0: integers -127..127 times a power of two; Q4_0: -8..7 with the -8 present.
  const x8 = new Float32Array(32).map((_, i) => (i - 16) * 4 * 0.125);
  x8[0] = -127 * 0.125;
  const y8 = dequantize(GGMLType.Q8_0, quantize(GGMLType.Q8_0, x8), 32);
  // d = 127*0.125/127 is exact, so every multiple of it comes back.
  assert.deepEqual(Array.from(y8), Array.from(x8));
  const x4 = new Float32Array(32).map((_, i) => ((i % 16) - 8) * 0.25);
  assert.deepEqual(Array.from(dequantize(GGMLType.Q4_0, quantize(GGMLType.Q4_0, x4), 32)), Array.from(x4));
  const zeros = new Float32Array(256);
  for (const type of QUANT_TYPES) {
    // (Q4_0 maps zeros to -0: its scale is max / -8.)
    assert.ok(dequantize(type, quantize(type, zeros), 256).every((v) => v === 0), `${typeName(type)} of zeros`);
  }
});

test('bad sizes are refused', () => {
  assert.throws(() => quantize(GGMLType.Q4_K, new Float32Array(100)), /multiple of Q4_K's block of 256/);
  assert.throws(() => dequantize(GGMLType.Q8_0, new Uint8Array(33), 32), /need 34 bytes/);
  assert.throws(() => quantize(GGMLType.IQ2_XXS, new Float32Array(256)), /cannot quantize to IQ2_XXS/);
});

test('dequantizeTensor reads a tensor of a GGUF file', () => {
  const dir = mkdtempSync(join(tmpdir(), 'repokv-quant-'));
  try {
    const rng = new Rng(3);
    const x = rng.fillNormal(new Float32Array(512 * 2), 1);
    const path = join(dir, 'm.gguf');
    writeGGUF(path, {
      metadata: [['general.architecture', meta.str('llama')]],
      tensors: [
        { name: 'a', dims: [512, 2], type: GGMLType.Q6_K, data: quantize(GGMLType.Q6_K, x) },
        { name: 'b', dims: [256], type: GGMLType.IQ2_XXS, data: new Uint8Array(66) },
      ],
    });
    const f = GGUFFile.open(path);
    try {
      const a = dequantizeTensor(f, f.tensor('a')!);
      assert.deepEqual(Array.from(a), Array.from(dequantize(GGMLType.Q6_K, quantize(GGMLType.Q6_K, x), x.length)));
      assert.throws(() => dequantizeTensor(f, f.tensor('b')!), (e: unknown) => e instanceof GGUFError && /IQ2_XXS, which RepoKV cannot compute with/.test(e.message));
    } finally {
      f.close();
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
