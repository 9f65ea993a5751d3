// Causal GQA attention (out and lse) against attentionRef, through the KV cache on the GPU:
// prefill (flash kernel, key tiles with online softmax), a continued prefill at pos > 0, decode
// (split-K over 32-key splits merged by lse: several splits per row), several sequences in one batch,
// ragged lengths (not multiples of the 16-query or key tiles), head dims 32 and 128, GQA groups 1, 2, 4.
// The lse returned is compared too (absolute error, it is a log).
// Bound: max |y − ref| / max |ref| ≤ 5e-4 on out, |lse − ref| ≤ 5e-4 (measured values are printed).

import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { Rng } from '../../engine/model/sampler.js';
import { attentionRef } from '../../engine/model/ref-ops.js';
import type { SeqSlice } from '../../engine/model/backend.js';
import type { GpuKVCache, WebGPUBackend } from '../../engine/backends/webgpu/index.js';
import { ErrorLog, openBackend, randn } from './util.js';

let b: WebGPUBackend;
const log = new ErrorLog();
before(async () => {
  b = await openBackend({ decodeChunk: 32 });
});
after(() => {
  log.print('webgpu attention (worst case per path)');
  b.dispose();
});

interface Shape {
  nHeads: number;
  nKVHeads: number;
  headDim: number;
}

/** Host copy of one sequence's K/V, to run the reference over everything the cache holds. */
class HostSeq {
  k: number[] = [];
  v: number[] = [];
  constructor(
    readonly kv: GpuKVCache,
    readonly s: Shape,
  ) {}
}

async function step(label: string, shape: Shape, seqs: { seq: HostSeq; n: number }[]) {
  const rng = new Rng(label.length * 7919 + seqs.length);
  const { nHeads, nKVHeads, headDim } = shape;
  const rows = seqs.reduce((a, s) => a + s.n, 0);
  const q = randn(rng, rows * nHeads * headDim);
  const k = randn(rng, rows * nKVHeads * headDim);
  const v = randn(rng, rows * nKVHeads * headDim);
  const slices: SeqSlice[] = [];
  let row = 0;
  for (const s of seqs) {
    slices.push({ kv: s.seq.kv, row, n: s.n, pos: s.seq.kv.length });
    row += s.n;
  }
  const r = b.attentionWithLse(b.fromHost(q, rows, nHeads * headDim), b.fromHost(k, rows, nKVHeads * headDim), b.fromHost(v, rows, nKVHeads * headDim), slices, {
    layer: 1,
    nHeads,
    nKVHeads,
    headDim,
    scale: 1 / Math.sqrt(headDim),
  });
  const out = await b.read(r.out);
  const lse = await b.read(r.lse);
  b.endStep();
  const kvw = nKVHeads * headDim;
  slices.forEach((sl, i) => {
    const hs = seqs[i].seq;
    hs.k.push(...k.subarray(sl.row * kvw, (sl.row + sl.n) * kvw));
    hs.v.push(...v.subarray(sl.row * kvw, (sl.row + sl.n) * kvw));
    sl.kv.commit(sl.pos + sl.n);
    const ref = attentionRef({
      q: q.subarray(sl.row * nHeads * headDim, (sl.row + sl.n) * nHeads * headDim),
      k: Float32Array.from(hs.k),
      v: Float32Array.from(hs.v),
      nQ: sl.n,
      nK: sl.pos + sl.n,
      nHeads,
      nKVHeads,
      headDim,
      scale: 1 / Math.sqrt(headDim),
      qPos0: sl.pos,
    });
    const path = sl.n <= 4 ? 'decode split' : 'flash';
    log.check(`${path} out hd${headDim}`, out.subarray(sl.row * nHeads * headDim, (sl.row + sl.n) * nHeads * headDim), ref.out, 5e-4);
    let maxLse = 0;
    for (let h = 0; h < nHeads; h++) {
      for (let j = 0; j < sl.n; j++) maxLse = Math.max(maxLse, Math.abs(lse[h * rows + sl.row + j] - ref.lse[h * sl.n + j]));
    }
    log.checkAbs(`${path} lse hd${headDim}`, maxLse, 5e-4);
  });
}

test('one sequence: prefill, continued prefill, decode over several splits (GQA 4:2, hd 32)', async () => {
  const shape = { nHeads: 4, nKVHeads: 2, headDim: 32 };
  const seq = new HostSeq(b.createKV({ nLayers: 2, ...shape, capacity: 128 }) as GpuKVCache, shape);
  await step('prefill 37', shape, [{ seq, n: 37 }]);
  await step('prefill +21 at 37', shape, [{ seq, n: 21 }]);
  for (let i = 0; i < 3; i++) await step(`decode at ${seq.kv.length}`, shape, [{ seq, n: 1 }]);
  await step('decode 3 rows', shape, [{ seq, n: 3 }]);
  assert.equal(seq.kv.length, 64);
});

test('a batch of three sequences with different lengths and paths (MHA and GQA 8:1)', async () => {
  for (const shape of [
    { nHeads: 2, nKVHeads: 2, headDim: 32 },
    { nHeads: 8, nKVHeads: 1, headDim: 32 },
  ]) {
    const mk = () => new HostSeq(b.createKV({ nLayers: 2, ...shape, capacity: 96 }) as GpuKVCache, shape);
    const [s1, s2, s3] = [mk(), mk(), mk()];
    await step('batch prefill', shape, [{ seq: s1, n: 17 }, { seq: s2, n: 2 }, { seq: s3, n: 40 }]);
    await step('batch decode', shape, [{ seq: s1, n: 1 }, { seq: s2, n: 1 }, { seq: s3, n: 1 }]);
    await step('batch mixed', shape, [{ seq: s2, n: 33 }, { seq: s1, n: 1 }]);
  }
});

test('head dim 128: prefill and decode', async () => {
  const shape = { nHeads: 2, nKVHeads: 1, headDim: 128 };
  const seq = new HostSeq(b.createKV({ nLayers: 2, ...shape, capacity: 80 }) as GpuKVCache, shape);
  await step('prefill 70', shape, [{ seq, n: 70 }]);
  await step('decode', shape, [{ seq, n: 1 }]);
});

test('KV capacity is enforced, truncate rewinds', async () => {
  const shape = { nHeads: 2, nKVHeads: 1, headDim: 32 };
  const seq = new HostSeq(b.createKV({ nLayers: 2, ...shape, capacity: 8 }) as GpuKVCache, shape);
  await step('fill 6', shape, [{ seq, n: 6 }]);
  const x = b.fromHost(new Float32Array(3 * 64), 3, 64);
  const kx = b.fromHost(new Float32Array(3 * 32), 3, 32);
  assert.throws(() => b.attention(x, kx, kx, [{ kv: seq.kv, row: 0, n: 3, pos: 6 }], { layer: 0, nHeads: 2, nKVHeads: 1, headDim: 32, scale: 1 }), /capacity is 8/);
  b.endStep();
  seq.kv.truncate(4);
  seq.k.length = 4 * 32;
  seq.v.length = 4 * 32;
  await step('rewrite from 4', shape, [{ seq, n: 3 }]);
});

test('f16 KV cache: equal to the reference over f16-rounded K/V; distance to f32 KV stated', async () => {
  const { f16ToF32, f32ToF16 } = await import('../../engine/gguf/quant.js');
  const round = (a: Float32Array) => a.map((x) => f16ToF32(f32ToF16(x)));
  const hb = await openBackend({ decodeChunk: 32, kvType: 'f16' });
  try {
    const shape = { nHeads: 4, nKVHeads: 2, headDim: 32 };
    const kv = hb.createKV({ nLayers: 1, ...shape, capacity: 64 });
    const rng = new Rng(99);
    const allK: number[] = [];
    const allV: number[] = [];
    for (const n of [40, 1, 2]) {
      const pos = kv.length;
      const q = randn(rng, n * 128);
      const k = randn(rng, n * 64);
      const v = randn(rng, n * 64);
      allK.push(...k);
      allV.push(...v);
      const r = hb.attentionWithLse(hb.fromHost(q, n, 128), hb.fromHost(k, n, 64), hb.fromHost(v, n, 64), [{ kv, row: 0, n, pos }], { layer: 0, ...shape, scale: 1 / Math.sqrt(32) });
      const out = await hb.read(r.out);
      const lse = await hb.read(r.lse);
      hb.endStep();
      kv.commit(pos + n);
      const args = { q, nQ: n, nK: pos + n, ...shape, scale: 1 / Math.sqrt(32), qPos0: pos };
      const ref16 = attentionRef({ ...args, k: round(Float32Array.from(allK)), v: round(Float32Array.from(allV)) });
      const ref32 = attentionRef({ ...args, k: Float32Array.from(allK), v: Float32Array.from(allV) });
      const path = n <= 4 ? 'decode split' : 'flash';
      log.check(`${path} f16 KV vs f16-rounded ref`, out, ref16.out, 5e-4);
      log.check(`${path} f16 KV vs f32 ref`, out, ref32.out, 5e-3);
      let e = 0;
      for (let i = 0; i < lse.length; i++) e = Math.max(e, Math.abs(lse[i] - ref16.lse[i]));
      log.checkAbs(`${path} f16 KV lse`, e, 5e-4);
    }
  } finally {
    hb.dispose();
  }
});
