// Index files: a saved and reloaded index (flat, IVF, graph; keys in the file or from the KV) gives
// identical results and keeps appending like the original; a flipped byte anywhere, a truncated or
// padded file, another address, other keys, or a missing file each load as null (with a reason where
// there is a file), so the caller rebuilds; writes are atomic (no temporary file left behind).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { FlatIndex } from '../../engine/attention/retrieval/flat.js';
import { GraphIndex } from '../../engine/attention/retrieval/graph.js';
import { IVFIndex } from '../../engine/attention/retrieval/ivf.js';
import { oodKeys, oodQueries } from '../../engine/attention/retrieval/ood-data.js';
import { decodeIndex, encodeIndex, IndexFileError, loadIndex, saveIndex } from '../../engine/attention/retrieval/persist.js';
import type { RetrievalIndex } from '../../engine/attention/retrieval/types.js';

const d = 16;
const n = 700;
const base = 32;
const data = oodKeys({ n: n + base + 64, d, group: 2, seed: 21, runMean: 40 });
const keys = data.k.subarray(base * d, (n + base) * d);
const prefill = oodQueries(data, Array.from({ length: 30 }, (_, i) => i * 23), 22);
const decode = oodQueries(data, Array.from({ length: 6 }, (_, i) => n + base + 64 + i), 23);
const dir = mkdtempSync(join(tmpdir(), 'repokv-ridx-'));
test.after(() => rmSync(dir, { recursive: true, force: true }));

const indexes = (): RetrievalIndex[] => [FlatIndex.build(keys, d, base), IVFIndex.build(keys, d, base, { nlist: 10, nprobe: 3 }), GraphIndex.build(keys, d, base, prefill, { knn: 16, ef: 60 })];

function sameResults(a: RetrievalIndex, b: RetrievalIndex): void {
  for (let i = 0; i < decode.length / d; i++) {
    const q = decode.subarray(i * d, (i + 1) * d);
    const x = a.search(q, 30);
    const y = b.search(q, 30);
    assert.deepEqual([...y.ids], [...x.ids]);
    assert.equal(y.scanned, x.scanned);
  }
}

test('saved and reloaded indexes give identical results, with keys from the KV or from the file', () => {
  for (const ix of indexes()) {
    for (const withKeys of [false, true]) {
      const path = join(dir, `${ix.kind}-${withKeys}.ridx`);
      const bytes = saveIndex(path, ix, 'page-abc/3/1', withKeys);
      assert.equal(readFileSync(path).length, bytes);
      const back = loadIndex(path, 'page-abc/3/1', withKeys ? undefined : data.k);
      assert.ok(back, `${ix.kind} reloads`);
      assert.equal(back.kind, ix.kind);
      assert.equal(back.base, base);
      assert.equal(back.size, ix.size);
      sameResults(ix, back);
      if (!withKeys) {
        // the reloaded index keeps growing like the original
        const more = data.k.subarray((n + base) * d, (n + base + 64) * d);
        ix.append(more);
        back.append(more);
        sameResults(ix, back);
      }
    }
  }
  assert.deepEqual(readdirSync(dir).filter((f) => f.endsWith('.tmp')), [], 'no temporary files left');
});

test('a flipped byte anywhere, truncation, padding, another address or other keys: null and a reason', () => {
  const ix = GraphIndex.build(keys, d, base, prefill, { knn: 16 });
  const good = encodeIndex(ix, 'addr');
  const path = join(dir, 'bad.ridx');
  const reasons: string[] = [];
  const tryLoad = (bytes: Uint8Array, address = 'addr', k: Float32Array = data.k) => {
    writeFileSync(path, bytes);
    return loadIndex(path, address, k, (r) => reasons.push(r));
  };
  assert.ok(tryLoad(good), 'the good file loads');
  for (const at of [0, 9, 13, 17, 21, 25, 30, 40, 60, Math.floor(good.length / 2), good.length - 20, good.length - 1]) {
    const bad = good.slice();
    bad[at] ^= 0x40;
    assert.equal(tryLoad(bad), null, `flipped byte ${at}`);
  }
  for (const len of [0, 10, 52, good.length - 1, good.length - 16, Math.floor(good.length / 3)]) assert.equal(tryLoad(good.subarray(0, len)), null, `truncated to ${len}`);
  assert.equal(tryLoad(Uint8Array.from([...good, 0])), null, 'padded');
  assert.equal(tryLoad(good, 'other-addr'), null, 'another address');
  // the digest samples rows (0, every size/64-th, last): other keys, not a single changed value (the
  // KV pages carry their own checksums)
  const otherKeys = data.k.slice();
  otherKeys[(base + n - 1) * d + 3] += 1;
  assert.equal(tryLoad(good, 'addr', otherKeys), null, 'other keys');
  assert.equal(tryLoad(good, 'addr', data.k.subarray(0, (base + n - 1) * d)), null, 'too few keys');
  assert.equal(reasons.length, 12 + 6 + 1 + 1 + 1 + 1);
  assert.ok(reasons.every((r) => r.startsWith(path)));
  assert.throws(() => decodeIndex(good.subarray(0, 100), 'addr', data.k), IndexFileError);
  assert.throws(() => decodeIndex(good, 'addr'), /holds no keys/);
  assert.equal(loadIndex(join(dir, 'missing.ridx'), 'addr', data.k), null, 'a missing file is just absent');
});

test('saving over an existing file replaces it atomically', () => {
  const path = join(dir, 'over.ridx');
  const [flat, ivf] = indexes();
  saveIndex(path, flat, 'a');
  saveIndex(path, ivf, 'a');
  assert.equal(loadIndex(path, 'a', data.k)?.kind, 'ivf');
  assert.deepEqual(readdirSync(dir).filter((f) => f.startsWith('over.ridx.')), []);
});
