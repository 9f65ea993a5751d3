// Tensors larger than one storage binding: with a forced binding limit of 4 KiB, a weight is split into
// chunks of whole rows (one dispatch per chunk), for matvec, the tiled matmul (with bias) and the
// embedding lookup, and compared to the unsplit reference. Also: a type without a WGSL decoder (Q5_0)
// is dequantized at upload and still computes, and an activation over the limit is a clear error.

import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { GGMLType } from '../../engine/gguf/types.js';
import { Rng } from '../../engine/model/sampler.js';
import { matmulRef } from '../../engine/model/ref-ops.js';
import type { GpuWeight, WebGPUBackend } from '../../engine/backends/webgpu/index.js';
import { ErrorLog, makeWeight, openBackend, randn } from './util.js';

const LIMIT = 4096;
let b: WebGPUBackend;
const log = new ErrorLog();
before(async () => {
  b = await openBackend({ maxBindingBytes: LIMIT });
});
after(() => {
  log.print('webgpu split weights (4 KiB binding limit)');
  b.dispose();
});

test('matmul and embed over a weight split into chunks', async () => {
  const rng = new Rng(11);
  for (const [type, k, n] of [
    [GGMLType.Q8_0, 256, 53], // 288 B rows: 14 rows per chunk, 4 chunks
    [GGMLType.F32, 100, 37], // 400 B rows: 10 per chunk
    [GGMLType.Q6_K, 512, 11], // 424 B rows: 9 per chunk
  ] as const) {
    const w = makeWeight(rng, type, [k, n]);
    const W = b.uploadWeight(w.info, w.bytes) as GpuWeight;
    assert.ok(W.chunks.length > 1, 'the weight is split');
    for (const c of W.chunks) assert.ok(c.rows * W.rowWords * 4 <= LIMIT);
    const bias = randn(rng, n);
    const B = b.uploadWeight({ name: 'b', dims: [n], type: GGMLType.F32, offset: 0, fileOffset: 0, nElements: n, nBytes: n * 4 }, new Uint8Array(bias.buffer));
    for (const rows of [1, 2]) {
      const x = randn(rng, rows * k);
      log.check(`matvec ${W.chunks.length} chunks`, await b.read(b.matmul(b.fromHost(x, rows, k), W, B)), matmulRef(x, rows, k, w.values, n, bias), 5e-4);
      b.endStep();
    }
    const tokens = Int32Array.from([n - 1, 0, Math.floor(n / 2), 1].slice(0, Math.floor(LIMIT / (k * 4))));
    const ref = new Float32Array(tokens.length * k);
    tokens.forEach((t, i) => ref.set(w.values.subarray(t * k, (t + 1) * k), i * k));
    log.check('embed split', await b.read(b.embed(W, tokens)), ref, 0);
    b.endStep();
  }
  // Tiled prefill over a split weight: activations must fit the limit too, so a narrow one.
  const w = makeWeight(rng, GGMLType.F16, [100, 45]); // 200 B rows: 20 per chunk
  const W = b.uploadWeight(w.info, w.bytes) as GpuWeight;
  assert.ok(W.chunks.length > 1);
  const x = randn(rng, 9 * 100);
  log.check('tiled split', await b.read(b.matmul(b.fromHost(x, 9, 100), W)), matmulRef(x, 9, 100, w.values, 45), 5e-4);
  b.endStep();
});

test('a type without a WGSL decoder (Q5_0) is dequantized at upload', async () => {
  const rng = new Rng(12);
  const w = makeWeight(rng, GGMLType.Q5_0, [64, 5]);
  const W = b.uploadWeight(w.info, w.bytes) as GpuWeight;
  assert.equal(W.type, GGMLType.F32);
  const x = randn(rng, 64);
  log.check('Q5_0 via f32', await b.read(b.matmul(b.fromHost(x, 1, 64), W)), matmulRef(x, 1, 64, w.values, 5), 5e-4);
  b.endStep();
});

test('an activation over the binding limit is refused with a clear message', () => {
  assert.throws(() => b.fromHost(new Float32Array(2048), 2, 1024), /exceeds this GPU's storage binding limit/);
});
