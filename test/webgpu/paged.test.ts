// Paged KV on the WebGPU backend (kv-pool.ts, the PAGED path of kernels/attention.wgsl):
// - paged attention equals contiguous attention with an f16 KV cache bit for bit (out and lse), on
//   ragged shapes, batches mixing flash and split-K decode, two sequences sharing prefix pages, a page
//   table that grows between steps, pages scattered over four arena buffers (a binding limit of three
//   pages forces the split), head dims 32 and 128; and both stay within 5e-4 of the reference over
//   f16-rounded K/V;
// - readPage is the fixed serialization (halves rounded to nearest-even, bit-equal to the host's
//   f32ToF16 on ties, subnormals and overflow), writePage/readPage/copyPage round-trip, within and
//   across arenas, ordered with the ops around them;
// - dtype 'f32' pools, and the byte budget (maxBytes, arena count).

import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { Rng } from '../../engine/model/sampler.js';
import { attentionRef } from '../../engine/model/ref-ops.js';
import { f16ToF32, f32ToF16 } from '../../engine/gguf/quant.js';
import type { KVCache, SeqSlice } from '../../engine/model/backend.js';
import type { WebGPUBackend } from '../../engine/backends/webgpu/index.js';
import type { GpuKVPool } from '../../engine/backends/webgpu/kv-pool.js';
import { ErrorLog, openBackend, randn } from './util.js';
import { TablePagedKV } from '../../engine/kv/table-kv.js';

const PAGE = 64;
// Pages of the main shape (2 layers, 2 KV heads × 32): 2 × 2 × 64 × 64 halves = 32 KiB; a binding
// limit of 96 KiB puts three pages in an arena.
const LIMIT = 96 * 1024;

let b: WebGPUBackend;
const log = new ErrorLog();
before(async () => {
  b = await openBackend({ decodeChunk: 32, kvType: 'f16', maxBindingBytes: LIMIT });
});
after(() => {
  log.print('webgpu paged attention vs the reference over f16-rounded K/V');
  b.dispose();
});


interface Shape {
  nHeads: number;
  nKVHeads: number;
  headDim: number;
}

/** A paged sequence, its contiguous twin, and the host copy of every K/V row both hold. */
class Seq {
  k: number[] = [];
  v: number[] = [];
  constructor(
    readonly paged: TablePagedKV,
    readonly twin: KVCache,
  ) {}
}

const round = (a: Float32Array) => a.map((x) => f16ToF32(f32ToF16(x)));
const sameBits = (a: Float32Array, c: Float32Array) => Buffer.from(a.buffer, a.byteOffset, a.byteLength).equals(Buffer.from(c.buffer, c.byteOffset, c.byteLength));

async function attend(shape: Shape, layer: number, slices: SeqSlice[], q: Float32Array, k: Float32Array, v: Float32Array) {
  const { nHeads, nKVHeads, headDim } = shape;
  const rows = q.length / (nHeads * headDim);
  const r = b.attentionWithLse(b.fromHost(q, rows, nHeads * headDim), b.fromHost(k, rows, nKVHeads * headDim), b.fromHost(v, rows, nKVHeads * headDim), slices, {
    layer,
    nHeads,
    nKVHeads,
    headDim,
    scale: 1 / Math.sqrt(headDim),
  });
  const out = await b.read(r.out);
  const lse = await b.read(r.lse);
  b.endStep();
  return { out, lse };
}

/** One step over several sequences: paged and contiguous-twin results must be identical, and near the reference. */
async function step(label: string, shape: Shape, seqs: { s: Seq; n: number }[], layer = 1) {
  const rng = new Rng(label.length * 7919 + seqs.length * 13 + seqs[0].n);
  const { nHeads, nKVHeads, headDim } = shape;
  const rows = seqs.reduce((a, x) => a + x.n, 0);
  const q = randn(rng, rows * nHeads * headDim);
  const k = randn(rng, rows * nKVHeads * headDim);
  const v = randn(rng, rows * nKVHeads * headDim);
  const paged: SeqSlice[] = [];
  const twin: SeqSlice[] = [];
  let row = 0;
  for (const x of seqs) {
    paged.push({ kv: x.s.paged, row, n: x.n, pos: x.s.paged.length });
    twin.push({ kv: x.s.twin, row, n: x.n, pos: x.s.twin.length });
    row += x.n;
  }
  const P = await attend(shape, layer, paged, q, k, v);
  const T = await attend(shape, layer, twin, q, k, v);
  assert.ok(sameBits(P.out, T.out), `${label}: paged out differs from contiguous`);
  assert.ok(sameBits(P.lse, T.lse), `${label}: paged lse differs from contiguous`);
  const kvw = nKVHeads * headDim;
  paged.forEach((sl, i) => {
    const s = seqs[i].s;
    s.k.push(...k.subarray(sl.row * kvw, (sl.row + sl.n) * kvw));
    s.v.push(...v.subarray(sl.row * kvw, (sl.row + sl.n) * kvw));
    s.paged.commit(sl.pos + sl.n);
    s.twin.commit(sl.pos + sl.n);
    const ref = attentionRef({
      q: q.subarray(sl.row * nHeads * headDim, (sl.row + sl.n) * nHeads * headDim),
      k: round(Float32Array.from(s.k)),
      v: round(Float32Array.from(s.v)),
      nQ: sl.n,
      nK: sl.pos + sl.n,
      nHeads,
      nKVHeads,
      headDim,
      scale: 1 / Math.sqrt(headDim),
      qPos0: sl.pos,
    });
    const path = sl.n <= 4 ? 'decode split' : 'flash';
    log.check(`paged ${path} out hd${headDim}`, P.out.subarray(sl.row * nHeads * headDim, (sl.row + sl.n) * nHeads * headDim), ref.out, 5e-4);
    let e = 0;
    for (let h = 0; h < nHeads; h++) for (let j = 0; j < sl.n; j++) e = Math.max(e, Math.abs(P.lse[h * rows + sl.row + j] - ref.lse[h * sl.n + j]));
    log.checkAbs(`paged ${path} lse hd${headDim}`, e, 5e-4);
  });
  return { q, k, v };
}

function newPool(shape: Shape, nPages: number, dtype: 'f16' | 'f32' = 'f16', maxBytes?: number): GpuKVPool {
  return b.createKVPool({ nLayers: 2, nKVHeads: shape.nKVHeads, headDim: shape.headDim, pageSize: PAGE, nPages, dtype, maxBytes }) as GpuKVPool;
}

/** Writes K/V rows into a twin's contiguous cache (queries are irrelevant). */
async function preload(shape: Shape, s: Seq, k: number[], v: number[], layer = 1) {
  const n = k.length / (shape.nKVHeads * shape.headDim);
  await attend(shape, layer, [{ kv: s.twin, row: 0, n, pos: 0 }], new Float32Array(n * shape.nHeads * shape.headDim), Float32Array.from(k), Float32Array.from(v));
  s.twin.commit(n);
  s.k.push(...k);
  s.v.push(...v);
}

/** Halves of (layer, K or V, row) of a serialized page. */
function pageRows(bytes: Uint8Array, shape: Shape, layer: number, which: 'k' | 'v', rows: number): Uint16Array {
  const rs = shape.nKVHeads * shape.headDim;
  const h = new Uint16Array(bytes.buffer, bytes.byteOffset, bytes.byteLength / 2);
  const off = (layer * 2 + (which === 'v' ? 1 : 0)) * PAGE * rs;
  return h.subarray(off, off + rows * rs);
}

const shape = { nHeads: 4, nKVHeads: 2, headDim: 32 };
let pool: GpuKVPool;
let A: Seq;
let B: Seq;

test('paged = contiguous, bit for bit: shared prefix pages, mixed batches, a growing page table, four arenas', async () => {
  pool = newPool(shape, 12);
  assert.equal(pool.pagesPerArena, 3);
  const twin = () => b.createKV({ nLayers: 2, ...shape, capacity: 256 });
  A = new Seq(new TablePagedKV(pool, [5, 0, 9]), twin());
  await step('A prefill 150', shape, [{ s: A, n: 150 }]);
  // B shares A's first two pages (its first 128 tokens are A's) and writes its own third page.
  B = new Seq(new TablePagedKV(pool, [5, 0, 7]), twin());
  await preload(shape, B, A.k.slice(0, 128 * 64), A.v.slice(0, 128 * 64));
  B.paged.commit(128);
  await step('A decode + B prefill 21', shape, [{ s: A, n: 1 }, { s: B, n: 21 }]);
  await step('B decode 3 + A prefill 30', shape, [{ s: B, n: 3 }, { s: A, n: 30 }]);
  A.paged.setPages([5, 0, 9, 2]);
  await step('A prefill 40 into a new page + B decode', shape, [{ s: A, n: 40 }, { s: B, n: 1 }]);
  await step('decode both', shape, [{ s: A, n: 1 }, { s: B, n: 1 }]);
  assert.equal(pool.arenaCount, 4, 'pages 0..9 span four arenas of three pages');
  assert.equal(A.paged.length, 222);
  assert.ok(pool.bytes <= 12 * pool.gpuPageBytes);
});

test('head dim 128, GQA 2:1, one page per arena, layer 0', async () => {
  const s2 = { nHeads: 2, nKVHeads: 1, headDim: 128 }; // 64 KiB pages: one per arena
  const p2 = newPool(s2, 4);
  const s = new Seq(new TablePagedKV(p2, [3, 1]), b.createKV({ nLayers: 2, ...s2, capacity: 128 }));
  await step('hd128 prefill 70', s2, [{ s, n: 70 }], 0);
  await step('hd128 decode', s2, [{ s, n: 1 }], 0);
  assert.equal(p2.arenaCount, 4);
  p2.dispose();
});

test('readPage is the fixed serialization: the written rows as halves (host f32ToF16, bit for bit)', async () => {
  const rs = 64;
  const bytes = await pool.readPage(5);
  assert.equal(bytes.byteLength, pool.pageBytes);
  assert.equal(pool.pageBytes, 2 * 2 * PAGE * rs * 2);
  for (const [which, src] of [
    ['k', A.k],
    ['v', A.v],
  ] as const) {
    const got = pageRows(bytes, shape, 1, which, PAGE);
    const want = Uint16Array.from(src.slice(0, PAGE * rs), f32ToF16);
    assert.deepEqual(got, want, `layer 1 ${which} rows of page 5`);
  }
  // Rounding: ties to even, subnormal halves, underflow, overflow, signed zero.
  const special = [1 + 2 ** -11, 1 + 3 * 2 ** -11, -(1 + 2 ** -11), 2 ** -20 * 1.5, 2 ** -24, 2 ** -25, 2 ** -25 * 1.01, 2 ** -26, 3 * 2 ** -25, 65504, 65519, 65520, 1e6, -1e6, -0, 0, 1 / 3, 6.1e-5, 6.097555e-5];
  const p3 = newPool(shape, 2);
  const s = new TablePagedKV(p3, [1]);
  const rng = new Rng(5);
  const k = randn(rng, PAGE * rs, 4);
  k.set(special);
  const v = k.map((x) => -x / 3);
  b.attention(b.fromHost(new Float32Array(PAGE * 128), PAGE, 128), b.fromHost(k, PAGE, rs), b.fromHost(v, PAGE, rs), [{ kv: s, row: 0, n: PAGE, pos: 0 }], { layer: 0, ...shape, scale: 1 });
  const page = await p3.readPage(1); // issued after the attention: reflects it without an explicit read
  b.endStep();
  assert.deepEqual(pageRows(page, shape, 0, 'k', PAGE), Uint16Array.from(k, f32ToF16));
  assert.deepEqual(pageRows(page, shape, 0, 'v', PAGE), Uint16Array.from(v, f32ToF16));
  p3.dispose();
});

test('writePage / copyPage: round trips within and across arenas, ordered with the ops around them', async () => {
  const page5 = await pool.readPage(5);
  pool.writePage(11, page5); // arena 3
  assert.ok(Buffer.from(await pool.readPage(11)).equals(Buffer.from(page5)));
  pool.copyPage(5, 3); // same arena (1)
  assert.ok(Buffer.from(await pool.readPage(3)).equals(Buffer.from(page5)));
  // D attends over page 11 (a restored copy of A's first page) and writes its first own row into
  // page 4; a writePage over page 11 issued before the result is read must not change it.
  const D = new Seq(new TablePagedKV(pool, [11, 4]), b.createKV({ nLayers: 2, ...shape, capacity: 128 }));
  await preload(shape, D, A.k.slice(0, 64 * 64), A.v.slice(0, 64 * 64));
  D.paged.commit(64);
  const rng = new Rng(77);
  const q = randn(rng, 128);
  const k = randn(rng, 64);
  const v = randn(rng, 64);
  const mk = () => [b.fromHost(q, 1, 128), b.fromHost(k, 1, 64), b.fromHost(v, 1, 64)] as const;
  const [q1, k1, v1] = mk();
  const o1 = b.attention(q1, k1, v1, [{ kv: D.paged, row: 0, n: 1, pos: 64 }], { layer: 1, ...shape, scale: 1 / Math.sqrt(32) });
  pool.writePage(11, new Uint8Array(pool.pageBytes));
  pool.copyPage(4, 8); // arena 1 -> arena 2, after the attention that wrote page 4's row 0
  const got = await b.read(o1);
  b.endStep();
  const [q2, k2, v2] = mk();
  const want = await b.read(b.attention(q2, k2, v2, [{ kv: D.twin, row: 0, n: 1, pos: 64 }], { layer: 1, ...shape, scale: 1 / Math.sqrt(32) }));
  b.endStep();
  assert.ok(sameBits(got, want), 'attention over a restored page, overwritten after it was issued');
  assert.ok((await pool.readPage(11)).every((x) => x === 0), 'the later writePage took effect');
  const p8 = await pool.readPage(8);
  assert.ok(Buffer.from(p8).equals(Buffer.from(await pool.readPage(4))), 'copy across arenas');
  assert.deepEqual(pageRows(p8, shape, 1, 'k', 1), Uint16Array.from(k, f32ToF16));
  assert.throws(() => pool.writePage(1, new Uint8Array(10)), /a KV page is 32768 bytes/);
  assert.throws(() => pool.copyPage(0, 12), /outside the pool of 12 pages/);
});

test("dtype 'f32': values kept unrounded (attention near the f32 reference), pages serialized as halves", async () => {
  const p = newPool(shape, 3, 'f32');
  assert.equal(p.gpuPageBytes, 2 * p.pageBytes);
  const s = new TablePagedKV(p, [2, 0]);
  const rng = new Rng(9);
  const n = 80;
  const q = randn(rng, n * 128);
  const k = randn(rng, n * 64);
  const v = randn(rng, n * 64);
  const { out } = await attend(shape, 1, [{ kv: s, row: 0, n, pos: 0 }], q, k, v);
  const ref = attentionRef({ q, k, v, nQ: n, nK: n, ...shape, scale: 1 / Math.sqrt(32), qPos0: 0 });
  log.check('paged f32 flash out', out, ref.out, 5e-4);
  const page = await p.readPage(2);
  assert.deepEqual(pageRows(page, shape, 1, 'k', PAGE), Uint16Array.from(k.subarray(0, PAGE * 64), f32ToF16));
  p.writePage(1, page);
  assert.ok(Buffer.from(await p.readPage(1)).equals(Buffer.from(page)));
  p.dispose();
});

test('the budget holds: pages offered within maxBytes and within the arenas one dispatch can bind', async () => {
  const p = newPool(shape, 100, 'f16', 5.5 * 32 * 1024);
  assert.equal(p.nPages, 5);
  p.ensure(4);
  assert.ok(p.bytes <= 5.5 * 32 * 1024, `holds ${p.bytes}`);
  assert.equal(p.arenaCount, 2);
  p.dispose();
  const big = newPool(shape, 10_000);
  assert.equal(big.nPages, b.maxArenas() * 3);
  assert.equal(big.bytes, 0, 'arenas are allocated on first use');
  big.dispose();
  assert.throws(() => b.createKVPool({ nLayers: 8, nKVHeads: 8, headDim: 64, pageSize: PAGE, nPages: 4, dtype: 'f16' }), /above this GPU's storage binding limit/);
});

test('a sequence longer than its page table is refused', () => {
  const s = new TablePagedKV(pool, [6]);
  const x = b.fromHost(new Float32Array(2 * 128), 2, 128);
  const kx = b.fromHost(new Float32Array(2 * 64), 2, 64);
  assert.throws(() => b.attention(x, kx, kx, [{ kv: s, row: 0, n: 2, pos: 63 }], { layer: 0, ...shape, scale: 1 }), /page table covers 64/);
  b.endStep();
});
