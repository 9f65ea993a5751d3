// matmul (y = x·Wᵀ + bias) for every weight type, through both kernels: matvec (≤ 8 rows: 1, 3, 8) and
// the tiled prefill kernel (9, 33, 70 rows), with ragged sizes (k and n not multiples of the tiles; for
// float types k not even a multiple of 4). The reference is matmulRef over the weights dequantized by
// engine/gguf/quant.ts (bit-exact with ggml), so the only difference is f32 summation order.
// Bound: max |y − ref| / max |ref| ≤ 5e-4 (measured values are printed; ~1e-6 is typical).

import { after, before, test } from 'node:test';
import { GGMLType } from '../../engine/gguf/types.js';
import { Rng } from '../../engine/model/sampler.js';
import { matmulRef } from '../../engine/model/ref-ops.js';
import type { WebGPUBackend } from '../../engine/backends/webgpu/index.js';
import { ErrorLog, WEIGHT_TYPES, makeWeight, openBackend, randn } from './util.js';

let b: WebGPUBackend;
const log = new ErrorLog();
before(async () => {
  b = await openBackend();
});
after(() => {
  log.print('webgpu matmul (worst case per type and kernel)');
  b.dispose();
});

// Each (type, kernel) pair is its own pipeline, and lavapipe compiles a pipeline in 1–3 s of CPU; the
// multi-row matvec variant (R = 8, shared by 2..8 rows) is covered on three types, its code does not
// depend on the type beyond the w4 decoder that the single-row variant already checks for each type.
const ROWS = [1, 9, 33, 70];
const MULTI_ROW_TYPES = ['F32', 'Q8_0', 'Q4_K'];

for (const wt of WEIGHT_TYPES) {
  test(`matmul ${wt.name}`, async () => {
    const rng = new Rng(100 + wt.type);
    const shapes = wt.block === 1 ? [[37, 29], [64, 45], [130, 7]] : wt.block === 32 ? [[96, 45], [256, 33]] : [[256, 45], [512, 9]];
    for (const [k, n] of shapes) {
      const w = makeWeight(rng, wt.type, [k, n]);
      const W = b.uploadWeight(w.info, w.bytes);
      const bias = randn(rng, n);
      const B = b.uploadWeight({ name: 'b', dims: [n], type: GGMLType.F32, offset: 0, fileOffset: 0, nElements: n, nBytes: n * 4 }, new Uint8Array(bias.buffer));
      for (const rows of MULTI_ROW_TYPES.includes(wt.name) ? [...ROWS, 3, 8] : ROWS) {
        const x = randn(rng, rows * k);
        const X = b.fromHost(x, rows, k);
        const kernel = rows <= 8 ? 'matvec' : 'tiled';
        log.check(`${wt.name} ${kernel}`, await b.read(b.matmul(X, W)), matmulRef(x, rows, k, w.values, n), 5e-4);
        log.check(`${wt.name} ${kernel} +bias`, await b.read(b.matmul(X, W, B)), matmulRef(x, rows, k, w.values, n, bias), 5e-4);
        b.endStep();
      }
    }
  });
}

test('matvec without subgroups (workgroup-memory reduction path)', async () => {
  const nb = await openBackend({ subgroups: false });
  try {
    const rng = new Rng(7);
    for (const wt of [WEIGHT_TYPES[5]]) {
      const k = 512;
      const w = makeWeight(rng, wt.type, [k, 21]);
      const W = nb.uploadWeight(w.info, w.bytes);
      for (const rows of [1, 5]) {
        const x = randn(rng, rows * k);
        log.check(`${wt.name} matvec no-subgroups`, await nb.read(nb.matmul(nb.fromHost(x, rows, k), W)), matmulRef(x, rows, k, w.values, 21), 5e-4);
        nb.endStep();
      }
    }
  } finally {
    nb.dispose();
  }
});
