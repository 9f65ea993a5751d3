// GGUF → onnxruntime weight mapping (engine/backends/cpu/weights.ts): the packed MatMulNBits form must
// stand for exactly the values ggml's dequantizer gives (quant.ts, bit-exact with libggml), and the ORT
// products must match matmulRef: to f32 rounding at accuracy_level 0 and with the stated int8-activation
// error at accuracy_level 4. Also checks the elementwise emitters (rmsnorm, rope, silu·mul).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { dequantize, f32ToF16, quantize } from '../../engine/gguf/quant.js';
import { GGMLType, TYPE_TRAITS, typeName } from '../../engine/gguf/types.js';
import type { GGUFTensorInfo } from '../../engine/gguf/reader.js';
import { Rng } from '../../engine/model/synthetic.js';
import { matmulRef, rmsNormRef, ropeRef, siluMulRef } from '../../engine/model/ref-ops.js';
import { packMatrix, unpackMatrix } from '../../engine/backends/cpu/weights.js';
import { emitMatmul, emitRmsNorm, emitRope, emitSiluMul } from '../../engine/backends/cpu/ops.js';
import { DT, GraphBuilder } from '../../engine/backends/cpu/onnx.js';
import { f32Tensor, Graph, i64Tensor } from '../../engine/backends/cpu/ort.js';

/** Random but well-formed blocks: random bytes with finite, moderate f16 super-scales. */
const HALF_FIELDS: Partial<Record<GGMLType, number[]>> = {
  [GGMLType.Q4_1]: [0, 2],
  [GGMLType.Q5_1]: [0, 2],
  [GGMLType.Q2_K]: [80, 82],
  [GGMLType.Q3_K]: [108],
  [GGMLType.Q5_K]: [0, 2],
  [GGMLType.Q8_0]: [0],
  [GGMLType.Q4_0]: [0],
  [GGMLType.Q5_0]: [0],
  [GGMLType.Q4_K]: [0, 2],
  [GGMLType.Q6_K]: [208],
};

function randomBlocks(type: GGMLType, nElements: number, rng: Rng): Uint8Array {
  const tr = TYPE_TRAITS[type];
  const nb = nElements / tr.blockSize;
  const out = new Uint8Array(nb * tr.typeSize);
  for (let i = 0; i < out.length; i++) out[i] = rng.u32() & 0xff;
  for (let b = 0; b < nb; b++) {
    for (const o of HALF_FIELDS[type] ?? []) {
      const h = f32ToF16((rng.uniform() - 0.3) * 0.02);
      out[b * tr.typeSize + o] = h & 0xff;
      out[b * tr.typeSize + o + 1] = h >> 8;
    }
  }
  return out;
}

function info(name: string, type: GGMLType, k: number, n: number): GGUFTensorInfo {
  const nb = (k * n) / TYPE_TRAITS[type].blockSize;
  return { name, dims: [k, n], type, offset: 0, fileOffset: 0, nElements: k * n, nBytes: nb * TYPE_TRAITS[type].typeSize };
}

function relErr(got: Float32Array, want: Float32Array): number {
  let e = 0;
  let m = 0;
  for (let i = 0; i < want.length; i++) {
    e = Math.max(e, Math.abs(got[i] - want[i]));
    m = Math.max(m, Math.abs(want[i]));
  }
  return e / Math.max(m, 1e-30);
}

const TYPES = [GGMLType.Q8_0, GGMLType.Q4_0, GGMLType.Q4_1, GGMLType.Q5_0, GGMLType.Q5_1, GGMLType.Q2_K, GGMLType.Q3_K, GGMLType.Q4_K, GGMLType.Q5_K, GGMLType.Q6_K];

for (const type of TYPES) {
  test(`pack ${typeName(type)}: MatMulNBits form reproduces ggml's dequantized values`, () => {
    const rng = new Rng(type);
    const [k, n] = [512, 24];
    const bytes = randomBlocks(type, k * n, rng);
    const want = dequantize(type, bytes, k * n);
    const packed = packMatrix(info('w', type, k, n), bytes, 'int8');
    assert.equal(packed.kind, 'nbits');
    const got = unpackMatrix(packed);
    // Exact but for the one f32 rounding of each block's constant (weights.ts): a few ulps of the
    // block's magnitude (ggml's own a·q − m cancels within the block the same way).
    let worst = 0;
    for (let i = 0; i < want.length; i++) {
      let blockMax = 0;
      for (let j = i & ~31; j < (i & ~31) + 32; j++) blockMax = Math.max(blockMax, Math.abs(want[j]));
      const tol = 2 ** -22 * Math.max(blockMax, 1e-6);
      worst = Math.max(worst, Math.abs(got[i] - want[i]) / tol);
    }
    assert.ok(worst <= 1, `worst error ${worst} × tolerance`);
  });
}

function runMatmul(packedW: ReturnType<typeof packMatrix>, x: Float32Array, rows: number, bias: Float32Array | undefined, acc: number): Float32Array {
  const g = new GraphBuilder();
  const xi = g.input('x', DT.FLOAT, ['n', packedW.k]);
  g.node('Identity', [emitMatmul(g, xi, packedW, bias, acc)], {}, { outputs: ['y'] });
  g.output('y', DT.FLOAT, ['n', packedW.n]);
  const s = new Graph(g.build(), { threads: 1, externalData: g.externalData });
  const out = s.run({ x: f32Tensor(x, [rows, packedW.k]) }).y.data as Float32Array;
  s.dispose();
  return out;
}

// accuracy_level 4 quantizes each 32-block of activations to int8 (as llama.cpp does for Q8_0/Q4_0
// dot products): expect ~1e-2 of the output scale, never more.
const TOL_INT8 = 2e-2;
const TOL_F32 = 2e-5;

for (const type of [...TYPES, GGMLType.F16, GGMLType.F32]) {
  test(`matmul ${typeName(type)} through onnxruntime matches matmulRef`, () => {
    const rng = new Rng(100 + type);
    const [k, n, rows] = [256, 40, 3];
    let bytes: Uint8Array;
    if (type === GGMLType.F32 || type === GGMLType.F16) bytes = quantize(type, rng.fillNormal(new Float32Array(k * n), 0.05));
    else bytes = randomBlocks(type, k * n, rng);
    const W = dequantize(type, bytes, k * n);
    const x = rng.fillNormal(new Float32Array(rows * k), 1);
    const bias = rng.fillNormal(new Float32Array(n), 0.1);
    const want = matmulRef(x, rows, k, W, n, bias);
    const pk = packMatrix(info('w', type, k, n), bytes, 'int8');
    const exact = runMatmul(pk, x, rows, bias, 0);
    assert.ok(relErr(exact, want) < TOL_F32, `accuracy 0: ${relErr(exact, want)}`);
    const fast = runMatmul(pk, x, rows, bias, 4);
    assert.ok(relErr(fast, want) < (pk.kind === 'f32' ? TOL_F32 : TOL_INT8), `accuracy 4: ${relErr(fast, want)}`);
    const f32 = runMatmul(packMatrix(info('w', type, k, n), bytes, 'f32'), x, rows, bias, 4);
    assert.ok(relErr(f32, want) < TOL_F32, `f32 precision: ${relErr(f32, want)}`);
  });
}

function runUnary(build: (g: GraphBuilder, x: string, extra: string[]) => string, x: Float32Array, rows: number, cols: number, extras: [string, Float32Array, number][] = [], outCols = cols): Float32Array {
  const g = new GraphBuilder();
  const xi = g.input('x', DT.FLOAT, ['n', cols]);
  const ex = extras.map(([nm, , c]) => g.input(nm, DT.FLOAT, ['n', c]));
  ex.push(g.input('pos', DT.INT64, [1, 'n']));
  g.node('Identity', [build(g, xi, ex)], {}, { outputs: ['y'] });
  g.output('y', DT.FLOAT, ['n', outCols]);
  const s = new Graph(g.build(), { threads: 1 });
  const feeds: Record<string, ReturnType<typeof f32Tensor>> = { x: f32Tensor(x, [rows, cols]) };
  for (const [nm, data, c] of extras) feeds[nm] = f32Tensor(data, [rows, c]);
  feeds.pos = i64Tensor(BigInt64Array.from({ length: rows }, (_, i) => BigInt(i)), [1, rows]);
  const out = s.run(feeds).y.data as Float32Array;
  s.dispose();
  return out;
}

test('rmsnorm (whole row and per head) matches rmsNormRef', () => {
  const rng = new Rng(5);
  const [rows, cols] = [5, 96];
  const x = rng.fillNormal(new Float32Array(rows * cols), 2);
  for (const group of [cols, 32]) {
    const w = rng.fillNormal(new Float32Array(group), 1);
    const got = runUnary((g, xi) => emitRmsNorm(g, xi, cols, w, 1e-6, group), x, rows, cols);
    const want = rmsNormRef(x, rows, cols, w, 1e-6, group);
    assert.ok(relErr(got, want) < 1e-6, `group ${group}: ${relErr(got, want)}`);
  }
});

test('rope (norm and neox, full and partial rotary dims, mscale) matches ropeRef', () => {
  const rng = new Rng(6);
  const [rows, nHeads, headDim] = [4, 3, 16];
  const x = rng.fillNormal(new Float32Array(rows * nHeads * headDim), 1);
  const positions = Int32Array.from([0, 7, 8, 1000]);
  for (const kind of ['norm', 'neox'] as const) {
    for (const dims of [16, 8]) {
      const invFreq = Float32Array.from({ length: dims / 2 }, (_, i) => Math.pow(10000, (-2 * i) / dims));
      const cfg = { kind, dims, invFreq, mscale: 1.25 };
      const cos = new Float32Array(rows * (dims / 2));
      const sin = new Float32Array(rows * (dims / 2));
      for (let r = 0; r < rows; r++)
        for (let i = 0; i < dims / 2; i++) {
          cos[r * (dims / 2) + i] = Math.cos(positions[r] * invFreq[i]) * cfg.mscale;
          sin[r * (dims / 2) + i] = Math.sin(positions[r] * invFreq[i]) * cfg.mscale;
        }
      const got = runUnary((g, xi, [c, s, pos]) => emitRope(g, xi, c, s, pos, nHeads, headDim, dims, kind), x, rows, nHeads * headDim, [
        ['cos', cos, dims / 2],
        ['sin', sin, dims / 2],
      ]);
      const want = ropeRef(x, rows, nHeads, headDim, positions, cfg);
      assert.ok(relErr(got, want) < 1e-6, `${kind} dims ${dims}: ${relErr(got, want)}`);
    }
  }
});

test('silu·mul matches siluMulRef', () => {
  const rng = new Rng(8);
  const [rows, cols] = [3, 50];
  const gte = rng.fillNormal(new Float32Array(rows * cols), 3);
  const up = rng.fillNormal(new Float32Array(rows * cols), 1);
  const got = runUnary((g, xi, [u]) => emitSiluMul(g, xi, u), gte, rows, cols, [['up', up, cols]]);
  assert.ok(relErr(got, siluMulRef(gte, up)) < 1e-6);
});
