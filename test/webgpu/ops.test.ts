// Elementwise kernels against engine/model/ref-ops.ts on random inputs, ragged sizes included:
// embedding (every weight type, dequantized against engine/gguf/quant.ts), RMSNorm (whole rows and
// per-head groups), RoPE (norm and neox, partial rotation, mscale), SiLU·gate, add, row selection, argmax.
// Bound: max |y − ref| / max |ref| ≤ 1e-6 (exact f32 arithmetic up to operation order), RMSNorm and RoPE
// 2e-6 (a sum of squares in a different order; f32 vs f64 trigonometry in the reference).

import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { GGMLType } from '../../engine/gguf/types.js';
import { Rng } from '../../engine/model/sampler.js';
import { addRef, rmsNormRef, ropeRef, siluMulRef } from '../../engine/model/ref-ops.js';
import type { Act, RopeConfig } from '../../engine/model/backend.js';
import type { WebGPUBackend } from '../../engine/backends/webgpu/index.js';
import { ErrorLog, WEIGHT_TYPES, makeWeight, openBackend, randn } from './util.js';

let b: WebGPUBackend;
const log = new ErrorLog();
before(async () => {
  b = await openBackend();
});
after(() => {
  log.print('webgpu elementwise ops (worst case per kernel)');
  b.dispose();
});

test('add and siluMul', async () => {
  const rng = new Rng(1);
  for (const [rows, cols] of [[1, 1], [3, 37], [5, 1000], [2, 70000]]) {
    const a = randn(rng, rows * cols, 3);
    const c = randn(rng, rows * cols);
    const A = b.fromHost(a, rows, cols);
    const C = b.fromHost(c, rows, cols);
    log.check('add', await b.read(b.add(A, C)), addRef(a, c), 1e-6);
    log.check('siluMul', await b.read(b.siluMul(A, C)), siluMulRef(a, c), 1e-6);
    b.endStep();
  }
});

test('embed: every weight type', async () => {
  const rng = new Rng(2);
  for (const wt of WEIGHT_TYPES) {
    const cols = wt.block === 1 ? 37 : wt.block * 2;
    const vocab = 19;
    const w = makeWeight(rng, wt.type, [cols, vocab]);
    const W = b.uploadWeight(w.info, w.bytes);
    const tokens = Int32Array.from([0, 18, 5, 5, 7, 1, 12]);
    const ref = new Float32Array(tokens.length * cols);
    tokens.forEach((t, i) => ref.set(w.values.subarray(t * cols, (t + 1) * cols), i * cols));
    const y = await b.read(b.embed(W, tokens));
    log.check(`embed ${wt.name}`, y, ref, 0);
    b.endStep();
  }
});

test('rmsNorm: rows and per-head groups', async () => {
  const rng = new Rng(3);
  for (const [rows, cols, group] of [[1, 64, 64], [3, 37, 37], [4, 96, 32], [2, 1000, 1000], [5, 48, 16]]) {
    const x = randn(rng, rows * cols, 2);
    const g = randn(rng, group);
    const W = b.uploadWeight({ name: 'g', dims: [group], type: GGMLType.F32, offset: 0, fileOffset: 0, nElements: group, nBytes: group * 4 }, new Uint8Array(g.buffer));
    const y = await b.read(b.rmsNorm(b.fromHost(x, rows, cols), W, 1e-6, group === cols ? undefined : group));
    log.check('rmsNorm', y, rmsNormRef(x, rows, cols, g, 1e-6, group), 2e-6);
    b.endStep();
  }
});

test('rope: norm and neox, partial dims, mscale, large positions', async () => {
  const rng = new Rng(4);
  for (const kind of ['norm', 'neox'] as const) {
    for (const [rows, nHeads, headDim, dims, mscale] of [[3, 2, 8, 8, 1], [5, 3, 16, 12, 1.2], [2, 4, 64, 64, 1]]) {
      const invFreq = Float32Array.from({ length: dims / 2 }, (_, i) => Math.pow(10000, (-2 * i) / dims));
      const cfg: RopeConfig = { kind, dims, invFreq, mscale };
      const positions = Int32Array.from({ length: rows }, (_, i) => (i === rows - 1 ? 30000 : 7 * i));
      const x = randn(rng, rows * nHeads * headDim);
      const y = await b.read(b.rope(b.fromHost(x, rows, nHeads * headDim), positions, nHeads, headDim, cfg));
      log.check(`rope ${kind}`, y, ropeRef(x, rows, nHeads, headDim, positions, cfg), 2e-6);
      b.endStep();
    }
  }
});

test('selectRows and argmax', async () => {
  const rng = new Rng(5);
  const rows = 6;
  const cols = 1003;
  const x = randn(rng, rows * cols);
  x[2 * cols + 17] = 50;
  x[2 * cols + 900] = 50; // tie: the lowest index wins
  const X = b.fromHost(x, rows, cols);
  const pick = [5, 2, 2, 0];
  const ref = new Float32Array(pick.length * cols);
  pick.forEach((r, i) => ref.set(x.subarray(r * cols, (r + 1) * cols), i * cols));
  const S = b.selectRows(X, pick);
  log.check('selectRows', await b.read(S), ref, 0);
  const am = await b.argmax(S);
  const want = pick.map((r) => {
    let best = 0;
    for (let j = 1; j < cols; j++) if (x[r * cols + j] > x[r * cols + best]) best = j;
    return best;
  });
  assert.deepEqual([...am], want);
  assert.equal(am[1], 17);
  b.endStep();
});

test('an activation used after endStep is refused', () => {
  const X = b.fromHost(new Float32Array(4), 1, 4);
  b.endStep();
  assert.throws(() => b.add(X, X), /after release or after endStep/);
});

test('launch batching: a chain of ops is one submit, parameters in one arena', async () => {
  const x = b.fromHost(Float32Array.from({ length: 64 }, (_, i) => i), 2, 32);
  const s0 = b.submits;
  const d0 = b.dispatches;
  let y: Act = x;
  for (let i = 0; i < 20; i++) y = b.add(y, x);
  const out = await b.read(y);
  assert.equal(b.dispatches - d0, 20);
  assert.equal(b.submits - s0, 1, 'one submit for 20 dispatches and the readback');
  assert.equal(out[5], 21 * 5);
  b.endStep();
  assert.equal(b.submits - s0, 1, 'endStep with nothing recorded submits nothing');
});
