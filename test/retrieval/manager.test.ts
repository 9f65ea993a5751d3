// The index manager: prefill queries are sampled (every n-th position plus the last few), indexes are
// built per (layer, KV head) over [sink, n − window) and catch up a chunk at a time as decode pushes
// keys out of the window; decode attention stays exact when top-k covers everything; indexes saved
// under a content address reload with identical results, and a damaged file is reported for rebuild.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { attentionRef } from '../../engine/model/ref-ops.js';
import { RetrievalIndexManager } from '../../engine/attention/retrieval/manager.js';
import { oodKeys, oodQueries, type OodData } from '../../engine/attention/retrieval/ood-data.js';
import type { RetrievalInput } from '../../engine/attention/retrieval/attention.js';

const shape = { nLayers: 2, nKVHeads: 2, group: 2, headDim: 16 };
const d = shape.headDim;
const total = 700;
const prefillLen = 600;
const heads: OodData[] = Array.from({ length: 4 }, (_, i) => oodKeys({ n: total, d, group: shape.group, seed: 40 + i, runMean: 40 }));
const at = (l: number, h: number) => heads[l * shape.nKVHeads + h];
const dir = mkdtempSync(join(tmpdir(), 'repokv-rman-'));
test.after(() => rmSync(dir, { recursive: true, force: true }));

function decodeInput(data: OodData, n: number, seed: number): RetrievalInput {
  return { q: oodQueries(data, [total + seed], seed), k: data.k, v: data.v, n, nHeads: shape.group, headDim: d, scale: 0.25 };
}

function dense(a: RetrievalInput) {
  return attentionRef({ q: a.q, k: a.k.subarray(0, a.n * d), v: a.v.subarray(0, a.n * d), nQ: 1, nK: a.n, nHeads: a.nHeads, nKVHeads: 1, headDim: d, scale: a.scale, qPos0: a.n - 1 });
}

function maxDiff(a: Float32Array, b: Float32Array): number {
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]));
  return m;
}

function prefilled(): RetrievalIndexManager {
  const m = new RetrievalIndexManager(shape, { sink: 16, window: 64, topK: 10_000, minContext: 0, sampleEvery: 10, lastQueries: 8, appendChunk: 16, search: { ef: 10_000 }, graph: { knn: 16 } });
  for (let l = 0; l < shape.nLayers; l++)
    for (let h = 0; h < shape.nKVHeads; h++) {
      const q = oodQueries(at(l, h), Array.from({ length: prefillLen }, (_, i) => i), 7);
      for (let p0 = 0; p0 < prefillLen; p0 += 128) m.observePrefillQueries(l, h, q.subarray(p0 * shape.group * d), p0, Math.min(128, prefillLen - p0));
    }
  return m;
}

test('prefill sampling keeps every n-th position and the last few, all heads of the group', () => {
  const m = prefilled();
  assert.equal(m.keptQueries(0, 0).length, (prefillLen / 10 + 8) * shape.group * d);
  assert.ok(m.stats().queryBytes > 0);
  m.build(0, 0, at(0, 0).k, prefillLen);
  assert.equal(m.keptQueries(0, 0).length, 0, 'queries dropped once built');
  const ix = m.index(0, 0)!;
  assert.equal(ix.base, 16);
  assert.equal((ix.base + ix.size) % 16, 0);
  assert.ok(ix.base + ix.size <= prefillLen - 64 && ix.base + ix.size > prefillLen - 64 - 16);
});

test('decode: lazy build, chunked catch-up as keys leave the window, exact with full top-k', () => {
  const m = prefilled();
  for (let n = prefillLen; n <= total; n += 7) {
    for (let l = 0; l < shape.nLayers; l++)
      for (let h = 0; h < shape.nKVHeads; h++) {
        const a = decodeInput(at(l, h), n, n);
        const r = m.attend(l, h, a);
        const want = dense(a);
        assert.ok(maxDiff(r.out, want.out) < 1e-4 && maxDiff(r.lse, want.lse) < 1e-4, `n=${n} L${l} H${h}`);
        const ix = m.index(l, h)!;
        const end = ix.base + ix.size;
        assert.ok(end <= n - 64 && end > n - 64 - 16, `index ends at ${end} for n=${n}`);
        assert.equal(r.staticKeys, 16 + (n - end));
      }
  }
  const s = m.stats();
  assert.equal(s.indexes, 4);
  assert.ok(s.structureBytes > 0 && s.keyBytes > 0);
});

test('save under a content address, reload identical; a damaged file is reported and rebuilt', () => {
  const m = prefilled();
  const n = 650;
  const inputs = heads.map((h, i) => decodeInput(h, n, 100 + i));
  const first = inputs.map((a, i) => m.attend(Math.floor(i / 2), i % 2, a));
  const bytes = m.save(dir, 'prefix-hash');
  assert.ok(bytes > 0);
  const again = new RetrievalIndexManager(shape, m.cfg);
  assert.deepEqual(again.load(dir, 'prefix-hash', (l, h) => at(l, h).k), []);
  inputs.forEach((a, i) => {
    const r = again.attend(Math.floor(i / 2), i % 2, a);
    assert.deepEqual([...r.out], [...first[i].out]);
    assert.equal(r.scanned, first[i].scanned);
  });
  // another address finds nothing; a flipped byte is reported, then rebuilt on the next decode step
  assert.equal(new RetrievalIndexManager(shape, m.cfg).load(dir, 'other-hash', (l, h) => at(l, h).k).length, 4);
  const path = RetrievalIndexManager.path(dir, 'prefix-hash', 1, 0);
  const b = readFileSync(path);
  b[b.length >> 1] ^= 1;
  writeFileSync(path, b);
  const reasons: string[] = [];
  const third = new RetrievalIndexManager(shape, m.cfg);
  assert.deepEqual(third.load(dir, 'prefix-hash', (l, h) => at(l, h).k, (r) => reasons.push(r)), [[1, 0]]);
  assert.match(reasons[0], /checksum/);
  const r = third.attend(1, 0, inputs[2]);
  assert.ok(third.index(1, 0), 'rebuilt (key-only: the prefill queries are gone)');
  assert.ok(maxDiff(r.out, dense(inputs[2]).out) < 1e-4);
});

test('mode selection: dense below minContext', () => {
  const m = new RetrievalIndexManager(shape);
  assert.equal(m.useRetrieval(8192), false);
  assert.equal(m.useRetrieval(16384), true);
});
