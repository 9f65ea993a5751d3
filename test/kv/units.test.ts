// The parts of engine/kv on their own: f16 page conversion, the host page pool and its fixed
// serialization, the block manager (reference counts, free list, LRU with tail-first eviction, hash
// map), chained page hashes, the model fingerprint, the int8 storage codec.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { copyFileSync } from 'node:fs';
import { join } from 'node:path';
import { f32ToF16, f16ToF32 } from '../../engine/gguf/quant.js';
import { f16ToF32Array, f32ToF16Array, roundF16InPlace } from '../../engine/kv/f16.js';
import { HostKVPool } from '../../engine/kv/host-pool.js';
import { BlockManager } from '../../engine/kv/block-manager.js';
import { chainHashes, hashKey } from '../../engine/kv/hash.js';
import { modelFingerprint, type FingerprintInput } from '../../engine/kv/fingerprint.js';
import { decodePage, encodePage } from '../../engine/kv/codec.js';
import { GGUFFile } from '../../engine/gguf/reader.js';
import { loadTransformerConfig } from '../../engine/model/config.js';
import { Rng } from '../../engine/model/synthetic.js';
import { microModel, tempDir } from './helpers.js';

test('bulk f16 conversion equals the scalar conversion bit for bit (normals, subnormals, inf, NaN, ties)', () => {
  const vals: number[] = [0, -0, 1, -1, 65504, 65520, 1e5, -1e5, 6.1e-5, 5.96e-8, 2.98e-8, 1e-10, Infinity, -Infinity, NaN, 1 + 2 ** -11, 1 + 3 * 2 ** -11];
  const rng = new Rng(7);
  for (let i = 0; i < 20000; i++) vals.push((rng.uniform() - 0.5) * 2 ** Math.floor(rng.uniform() * 40 - 25));
  const src = Float32Array.from(vals);
  const h = new Uint16Array(src.length);
  f32ToF16Array(src, h);
  for (let i = 0; i < src.length; i++) assert.equal(h[i], f32ToF16(src[i]), `value ${src[i]}`);
  const back = new Float32Array(h.length);
  f16ToF32Array(h, back);
  for (let i = 0; i < h.length; i++) assert.ok(Object.is(back[i], Math.fround(f16ToF32(h[i]))) || (isNaN(back[i]) && isNaN(f16ToF32(h[i]))));
  const r = Float32Array.from(src);
  roundF16InPlace(r);
  for (let i = 0; i < r.length; i++) assert.ok(Object.is(r[i], back[i]) || (isNaN(r[i]) && isNaN(back[i])));
});

function filledPool(nPages = 6, maxBytes?: number) {
  const opts = { nLayers: 2, nKVHeads: 2, headDim: 4, pageSize: 4, nPages, dtype: 'f16' as const, maxBytes };
  return new HostKVPool(opts);
}

test('host pool: rows written through a page table serialize as f16, per layer K rows then V rows', async () => {
  const pool = filledPool();
  const pt = Int32Array.of(3, 1); // tokens 0..3 in page 3, 4..7 in page 1
  const rs = 8;
  for (let l = 0; l < 2; l++) {
    const k = Float32Array.from({ length: 8 * rs }, (_, i) => l * 1000 + i + 0.1);
    const v = Float32Array.from({ length: 8 * rs }, (_, i) => -(l * 1000 + i) - 0.1);
    pool.writeRows(pt, l, k, v, 0, 8, 0);
  }
  const bytes = await pool.readPage(1);
  assert.equal(bytes.byteLength, pool.pageBytes);
  assert.equal(pool.pageBytes, 2 * 2 * 4 * 8 * 2);
  const h = new Uint16Array(bytes.buffer, bytes.byteOffset, bytes.byteLength / 2);
  // Page 1 holds tokens 4..7. Layer l, K: rows r, column c = token (4+r), value l*1000 + (4+r)*8 + c + 0.1.
  for (let l = 0; l < 2; l++) {
    for (let r = 0; r < 4; r++) {
      for (let c = 0; c < rs; c++) {
        const tok = 4 + r;
        assert.equal(h[l * 64 + r * rs + c], f32ToF16(l * 1000 + tok * rs + c + 0.1));
        assert.equal(h[l * 64 + 32 + r * rs + c], f32ToF16(-(l * 1000 + tok * rs + c) - 0.1));
      }
    }
  }
  // Round trip through another page, and a copy, give the same bytes.
  pool.writePage(5, bytes);
  assert.deepEqual(await pool.readPage(5), bytes);
  pool.copyPage(3, 0);
  assert.deepEqual(await pool.readPage(0), await pool.readPage(3));
  // Per-head views: contiguous pages are views, scattered ones gathered; the values agree.
  const scattered = pool.headViews(pt, 1, 7);
  const tm = pool.tokenMajor(pt, 1, 7);
  for (let t = 0; t < 7; t++) for (let hh = 0; hh < 2; hh++) for (let j = 0; j < 4; j++) assert.equal(scattered.k[hh][t * 4 + j], tm.k[t * rs + hh * 4 + j]);
  const contiguous = pool.headViews(Int32Array.of(0, 1), 0, 8);
  assert.equal(contiguous.k[0].buffer, (pool as unknown as { arenas: { k: Float32Array[] }[] }).arenas[0].k[0].buffer);
});

test('host pool: the memory budget caps the pages it offers and the bytes it holds', async () => {
  const one = filledPool(1).bytesPerPage;
  const pool = filledPool(100, one * 3 + 5);
  assert.equal(pool.nPages, 3);
  for (let i = 0; i < 3; i++) pool.writePage(i, new Uint8Array(pool.pageBytes));
  assert.ok(pool.bytes <= one * 3 + 5);
  assert.throws(() => pool.writePage(3, new Uint8Array(pool.pageBytes)), /outside the pool/);
});

test('block manager: lowest free page first, reference counts, LRU of cached pages with the tail evicted first', () => {
  const bm = new BlockManager(4);
  const ids = [0, 1, 2].map(() => bm.allocate()!.id);
  assert.deepEqual(ids, [0, 1, 2]);
  const h = (n: number) => Buffer.alloc(32, n);
  ids.forEach((id, i) => assert.equal(bm.publish(id, h(i)), id));
  // Another sequence shares pages 0 and 1.
  bm.acquire(0);
  bm.acquire(1);
  assert.equal(bm.refCount(0), 2);
  assert.equal(bm.isWritable(2), false, 'a cached page is immutable');
  // The first sequence ends: released tail first.
  for (const id of [...ids].reverse()) bm.release(id);
  assert.deepEqual(bm.lruOrder(), [2]);
  bm.release(1);
  bm.release(0);
  assert.deepEqual(bm.lruOrder(), [2, 1, 0]);
  assert.equal(bm.lookup(h(1)), 1);
  // Publishing the same content again names the existing page.
  const x = bm.allocate()!;
  assert.deepEqual(x, { id: 3, evicted: null });
  assert.equal(bm.publish(3, h(0)), 0);
  // Full: the least recently used cached page (the old tail, page 2) is evicted and forgets its hash.
  const y = bm.allocate()!;
  assert.equal(y.id, 2);
  assert.equal(hashKey(y.evicted!), hashKey(h(2)));
  assert.equal(bm.lookup(h(2)), undefined);
  // A hit takes a page out of the LRU list.
  bm.acquire(0);
  assert.deepEqual(bm.lruOrder(), [1]);
  assert.equal(bm.usedPages, 3);
  bm.acquire(1);
  assert.equal(bm.allocate(), null, 'every page referenced');
  assert.throws(() => {
    bm.release(2);
    bm.release(2);
  }, /released more often/);
});

test('chained page hashes: equal prefixes share hashes, the first difference changes every later page', () => {
  const root = Buffer.alloc(32, 9);
  const a = Array.from({ length: 256 }, (_, i) => i);
  const b = a.slice();
  b[130] = 7; // inside page 2
  const ha = chainHashes(root, a, 0);
  const hb = chainHashes(root, b, 0);
  assert.equal(ha.length, 4);
  assert.deepEqual(ha.slice(0, 2), hb.slice(0, 2));
  for (let i = 2; i < 4; i++) assert.notDeepEqual(ha[i], hb[i]);
  assert.equal(chainHashes(root, a, 0, 255).length, 3, 'only full pages');
  assert.notDeepEqual(chainHashes(Buffer.alloc(32, 1), a, 0)[0], ha[0], 'another fingerprint, other names');
  assert.deepEqual(chainHashes(ha[1], a, 2), ha.slice(2), 'a chain continues from any page');
});

function fpInput(path: string): FingerprintInput {
  const f = GGUFFile.open(path);
  const cfg = loadTransformerConfig(f);
  const x: FingerprintInput = { modelPath: path, dataOffset: f.dataOffset, rope: cfg.rope, nLayers: cfg.nLayers, nKVHeads: cfg.nKVHeads, headDim: cfg.headDim, kvDtype: 'f16', storage: 'f16', pageSize: 64 };
  f.close();
  return x;
}

test('model fingerprint: another model, RoPE setting, KV type or page size is another root; a copied file is the same', () => {
  const base = fpInput(microModel());
  const fp = modelFingerprint(base).hex;
  const copy = join(tempDir('fp'), 'copy.gguf');
  copyFileSync(base.modelPath, copy);
  assert.equal(modelFingerprint({ ...base, modelPath: copy }).hex, fp);
  assert.notEqual(modelFingerprint(fpInput(microModel({ seed: 2 }))).hex, fp, 'other weights');
  assert.notEqual(modelFingerprint(fpInput(microModel({ ropeFreqBase: 10000 }))).hex, fp, 'other rope base in the file');
  const scaled = { ...base.rope, invFreq: base.rope.invFreq.map((x) => x / 4) };
  assert.notEqual(modelFingerprint({ ...base, rope: scaled }).hex, fp, 'rope scaling applied by the engine');
  assert.notEqual(modelFingerprint({ ...base, kvDtype: 'f32' }).hex, fp);
  assert.notEqual(modelFingerprint({ ...base, storage: 'int8' }).hex, fp);
  assert.notEqual(modelFingerprint({ ...base, pageSize: 32 }).hex, fp);
});

test('int8 page storage: about half the bytes, per-page scales, and its error is reported', () => {
  const shape = { nLayers: 2, nKVHeads: 2, headDim: 16, pageSize: 64 };
  const rng = new Rng(3);
  const vals = Float32Array.from({ length: 2 * 2 * 64 * 32 }, (_, i) => (rng.uniform() - 0.5) * (i % 32 < 16 ? 1 : 8));
  const h = new Uint16Array(vals.length);
  f32ToF16Array(vals, h);
  const page = new Uint8Array(h.buffer);
  const { data, relError } = encodePage('int8', page, shape);
  assert.ok(data.byteLength < page.byteLength * 0.52);
  const back = decodePage('int8', data, shape);
  const x = new Float32Array(vals.length);
  const y = new Float32Array(vals.length);
  f16ToF32Array(h, x);
  f16ToF32Array(new Uint16Array(back.buffer, back.byteOffset, back.byteLength / 2), y);
  let e = 0;
  let n = 0;
  for (let i = 0; i < x.length; i++) {
    e += (x[i] - y[i]) ** 2;
    n += x[i] ** 2;
  }
  const measured = Math.sqrt(e / n);
  assert.ok(relError > 0 && relError < 0.01, `reported ${relError}`);
  assert.ok(Math.abs(measured - relError) < 2e-3, `measured ${measured} vs reported ${relError}`);
  assert.deepEqual(encodePage('f16', page, shape), { data: page, relError: 0 });
});
