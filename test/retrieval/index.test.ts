// Retrieval indexes on out-of-distribution data (queries and keys from different distributions, as
// RetrievalAttention observed): flat is the exact top-k; IVF with every list probed and the graph
// with a beam as wide as the index are exact; appending keys gives the same results as building on
// all of them; the attention-aware graph reaches good recall while scanning a fraction of the keys.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { FlatIndex } from '../../engine/attention/retrieval/flat.js';
import { GraphIndex } from '../../engine/attention/retrieval/graph.js';
import { IVFIndex } from '../../engine/attention/retrieval/ivf.js';
import { headRows, mahalanobisRatio, oodKeys, oodQueries } from '../../engine/attention/retrieval/ood-data.js';
import type { RetrievalIndex } from '../../engine/attention/retrieval/types.js';
import { dot, exactTopK, TopK } from '../../engine/attention/retrieval/vectors.js';

const d = 32;
const G = 2;

function setup(n: number, seed: number, every = 25) {
  const data = oodKeys({ n, d, group: G, seed, runMean: 48 });
  const prefill = oodQueries(data, Array.from({ length: Math.floor(n / every) }, (_, i) => i * every + every - 1), seed + 1);
  const decode = oodQueries(data, Array.from({ length: 8 }, (_, i) => n + i), seed + 2);
  return { data, prefill, decode, nDecode: 8 * G };
}

function bruteTopK(keys: Float32Array, n: number, q: Float32Array, k: number, base: number): number[] {
  const s = Array.from({ length: n }, (_, j) => [dot(q, 0, keys, j * d, d), j] as const);
  s.sort((a, b) => b[0] - a[0] || a[1] - b[1]);
  return s.slice(0, k).map(([, j]) => j + base);
}

const rows = (q: Float32Array, i: number) => q.subarray(i * d, (i + 1) * d);

test('TopK keeps the k largest, best first; exactTopK agrees with sorting', () => {
  const t = new TopK(3);
  for (const [s, i] of [[1, 0], [5, 1], [3, 2], [5, 3], [0, 4], [4, 5]]) t.push(s, i);
  assert.deepEqual([...t.sorted().ids], [1, 3, 5]);
  const { data, decode } = setup(500, 1);
  const ids = exactTopK(decode, 4, data.k, 0, 500, d, 10);
  for (let i = 0; i < 4; i++) assert.deepEqual([...ids.subarray(i * 10, i * 10 + 10)], bruteTopK(data.k, 500, rows(decode, i), 10, 0));
});

test('the synthetic data is out of distribution: queries are far from the keys in Mahalanobis distance', () => {
  const { data, decode } = setup(4000, 2);
  const r = mahalanobisRatio(data.k.subarray(0, 2000 * d), data.k.subarray(2000 * d, 4000 * d), decode, d);
  assert.ok(r.ratio > 2, `ratio ${r.ratio}`);
});

test('flat, IVF with all lists, and the graph with a full-width beam return the exact top-k', () => {
  const n = 800;
  const base = 16;
  const { data, prefill, decode, nDecode } = setup(n + base, 3);
  const keys = data.k.subarray(base * d, (n + base) * d);
  const flat = FlatIndex.build(keys, d, base);
  const ivf = IVFIndex.build(keys, d, base, { nlist: 16 });
  const graph = GraphIndex.build(keys, d, base, prefill, { knn: 16 });
  const nsw = GraphIndex.build(keys, d, base, new Float32Array(0), {});
  for (let i = 0; i < nDecode; i++) {
    const q = rows(decode, i);
    const want = bruteTopK(keys, n, q, 50, base);
    assert.deepEqual([...flat.search(q, 50).ids], want);
    assert.equal(flat.search(q, 50).scanned, n);
    assert.deepEqual([...ivf.search(q, 50, { nprobe: 16 }).ids], want);
    assert.deepEqual([...graph.search(q, 50, { ef: n }).ids], want, 'graph, full beam');
    assert.deepEqual([...nsw.search(q, 50, { ef: n }).ids], want, 'key-only graph, full beam');
  }
  assert.ok(graph.stats!.covered > 0 && graph.stats!.queries === prefill.length / d);
});

test('appending keys (pages, single rows) gives the results of an index built on all of them', () => {
  const n = 900;
  const base = 8;
  const { data, prefill, decode, nDecode } = setup(n + base, 4);
  const all = data.k.subarray(base * d, (n + base) * d);
  const first = 500;
  const grow = (ix: RetrievalIndex) => {
    ix.append(all.subarray(first * d, (first + 64) * d));
    for (let r = first + 64; r < first + 70; r++) ix.append(all.subarray(r * d, (r + 1) * d));
    ix.append(all.subarray((first + 70) * d, n * d));
    assert.equal(ix.size, n);
    return ix;
  };
  const head = all.subarray(0, first * d);
  const ivfRebuilt = IVFIndex.build(all, d, base, { nlist: 12 });
  const pairs: [RetrievalIndex, RetrievalIndex, { ef?: number; nprobe?: number }][] = [
    [grow(FlatIndex.build(head, d, base)), FlatIndex.build(all, d, base), {}],
    [grow(IVFIndex.build(head, d, base, { nlist: 12 })), ivfRebuilt, { nprobe: 12 }],
    [grow(GraphIndex.build(head, d, base, prefill, { knn: 16 })), GraphIndex.build(all, d, base, prefill, { knn: 16 }), { ef: n }],
    [grow(GraphIndex.build(head, d, base, prefill, { knn: 16, keepQueries: false })), GraphIndex.build(all, d, base, prefill, { knn: 16 }), { ef: n }],
  ];
  for (const [grown, rebuilt, opts] of pairs)
    for (let i = 0; i < nDecode; i++) {
      const q = rows(decode, i);
      assert.deepEqual([...grown.search(q, 40, opts).ids], [...rebuilt.search(q, 40, opts).ids], `${grown.kind} query ${i}`);
    }
});

test('the graph finds most of the top-100 scanning a fraction of the keys; IVF scans more for less', () => {
  const n = 6000;
  const { data, prefill, decode, nDecode } = setup(n, 5, 20);
  const flat = FlatIndex.build(data.k, d, 0);
  const graph = GraphIndex.build(data.k, d, 0, prefill, {});
  const ivf = IVFIndex.build(data.k, d, 0, {});
  let recall = 0;
  let scanned = 0;
  let ivfRecall = 0;
  for (let i = 0; i < nDecode; i++) {
    const q = rows(decode, i);
    const want = new Set(flat.search(q, 100).ids);
    const r = graph.search(q, 100, { ef: 200 });
    scanned += r.scanned / n / nDecode;
    recall += r.ids.filter((x) => want.has(x)).length / 100 / nDecode;
    const v = ivf.search(q, 100, { nprobe: Math.ceil(ivf.nlist * scanned) });
    ivfRecall += v.ids.filter((x) => want.has(x)).length / 100 / nDecode;
  }
  assert.ok(recall >= 0.85, `graph recall ${recall}`);
  assert.ok(scanned < 0.3, `graph scanned ${scanned}`);
  assert.ok(ivfRecall < recall, `IVF at a similar budget: ${ivfRecall} vs graph ${recall}`);
});

test('headRows picks one head out of grouped query rows', () => {
  const q = Float32Array.from({ length: 2 * G * d }, (_, i) => i);
  const h1 = headRows(q, 2, G, d, 1);
  assert.equal(h1[0], d);
  assert.equal(h1[d], G * d + d);
});
