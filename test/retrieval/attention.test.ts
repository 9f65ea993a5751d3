// Split decode attention: static (sink + window) and retrieved parts merged by lse equal dense
// attention (attentionRef) when the retrieved set is every non-static key — with GQA groups, per-head
// and union retrieval, an index that lags behind the window, one that reaches into it, and one that
// starts after the sink. With a small top-k the kept attention mass is ≤ 1 and the output is the
// attention restricted to static ∪ retrieved.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { attentionRef } from '../../engine/model/ref-ops.js';
import { denseDecodeAttention, partialAttention, retrievalAttention, splitKeys, type RetrievalInput } from '../../engine/attention/retrieval/attention.js';
import { FlatIndex } from '../../engine/attention/retrieval/flat.js';
import { GraphIndex } from '../../engine/attention/retrieval/graph.js';
import { oodKeys, oodQueries } from '../../engine/attention/retrieval/ood-data.js';

function input(n: number, group: number, d: number, seed: number): RetrievalInput {
  const data = oodKeys({ n, d, group, seed });
  const q = oodQueries(data, [n], seed + 1);
  return { q, k: data.k, v: data.v, n, nHeads: group, headDim: d, scale: 1 / Math.sqrt(d) };
}

function dense(a: RetrievalInput) {
  return attentionRef({ q: a.q, k: a.k.subarray(0, a.n * a.headDim), v: a.v.subarray(0, a.n * a.headDim), nQ: 1, nK: a.n, nHeads: a.nHeads, nKVHeads: 1, headDim: a.headDim, scale: a.scale, qPos0: a.n - 1 });
}

function close(got: { out: Float32Array; lse: Float32Array }, want: { out: Float32Array; lse: Float32Array }, tol = 2e-5): void {
  let err = 0;
  let mag = 0;
  for (let i = 0; i < want.out.length; i++) {
    err = Math.max(err, Math.abs(got.out[i] - want.out[i]));
    mag = Math.max(mag, Math.abs(want.out[i]));
  }
  assert.ok(err / mag < tol, `out rel err ${err / mag}`);
  for (let h = 0; h < want.lse.length; h++) assert.ok(Math.abs(got.lse[h] - want.lse[h]) < 1e-4 * Math.max(1, Math.abs(want.lse[h])), `lse ${got.lse[h]} vs ${want.lse[h]}`);
}

test('dense decode attention equals attentionRef', () => {
  const a = input(700, 4, 32, 1);
  close(denseDecodeAttention(a), dense(a));
});

test('static + all non-static retrieved equals dense (flat index, union and per-head GQA)', () => {
  for (const [n, sink, window] of [
    [1500, 128, 512],
    [901, 16, 64],
  ]) {
    const a = input(n, 4, 32, n);
    const d = a.headDim;
    const ix = FlatIndex.build(a.k.subarray(sink * d, (n - window) * d), d, sink);
    for (const gqa of ['union', 'per-head'] as const) {
      const r = retrievalAttention(a, ix, { sink, window, topK: n, gqa });
      assert.equal(r.staticKeys, sink + window);
      assert.equal(r.retrieved, n - sink - window);
      close(r, dense(a));
    }
  }
});

test('exact merge whatever the index covers: lagging, reaching into the window, starting after the sink', () => {
  const n = 1200;
  const sink = 32;
  const window = 128;
  const a = input(n, 2, 16, 5);
  const d = a.headDim;
  const want = dense(a);
  const cases: [number, number][] = [
    [sink, 700], // lags: keys 700 .. n−window attended exactly
    [sink, n - 40], // reaches into the window: those ids filtered out of the retrieved set
    [100, n - window], // starts after the sink
  ];
  for (const [from, to] of cases) {
    const ix = FlatIndex.build(a.k.subarray(from * d, to * d), d, from);
    const { middle, ranges } = splitKeys(n, ix, sink, window);
    let covered = middle[1] - middle[0];
    for (const [s, e] of ranges) covered += e - s;
    assert.equal(covered, n, `${from}..${to}: every key in exactly one part`);
    close(retrievalAttention(a, ix, { sink, window, topK: n }), want);
  }
  // no index, or nothing between sink and window: dense
  close(retrievalAttention(a, null, { sink, window }), want);
  close(retrievalAttention(input(150, 2, 16, 6), FlatIndex.build(new Float32Array(0), 16, 32), { sink, window }), dense(input(150, 2, 16, 6)));
});

test('top-k retrieval: the output is attention over static ∪ retrieved, kept mass ≤ 1, union ⊇ per-head', () => {
  const n = 3000;
  const sink = 64;
  const window = 256;
  const a = input(n, 4, 32, 9);
  const d = a.headDim;
  const ix = FlatIndex.build(a.k.subarray(sink * d, (n - window) * d), d, sink);
  const want = dense(a);
  const per = retrievalAttention(a, ix, { sink, window, topK: 50, gqa: 'per-head' });
  const uni = retrievalAttention(a, ix, { sink, window, topK: 50, gqa: 'union' });
  assert.equal(per.retrieved, 50);
  assert.ok(uni.retrieved >= 50 && uni.retrieved <= 200);
  for (let h = 0; h < a.nHeads; h++) {
    assert.ok(per.lse[h] <= want.lse[h] + 1e-5 && uni.lse[h] <= want.lse[h] + 1e-5);
    assert.ok(uni.lse[h] >= per.lse[h] - 1e-5, 'the union keeps at least a head\'s own mass');
  }
  // same as attending static ∪ ids directly
  const ids = Array.from({ length: a.nHeads }, (_, h) => ix.search(a.q.subarray(h * d, (h + 1) * d), 50).ids);
  const direct = partialAttention(a, [
    [0, sink],
    [n - window, n],
  ], ids);
  close(per, direct);
});

test('with a graph index, static + retrieved equals dense when top-k covers every non-static key', () => {
  const n = 1000;
  const sink = 32;
  const window = 96;
  const a = input(n, 4, 32, 11);
  const d = a.headDim;
  const data = oodKeys({ n, d, group: 4, seed: 11 });
  const pq = oodQueries(data, Array.from({ length: 20 }, (_, i) => i * 47), 3);
  const g = GraphIndex.build(a.k.subarray(sink * d, (n - window) * d), d, sink, pq, {});
  close(retrievalAttention(a, g, { sink, window, topK: n, search: { ef: n } }), dense(a));
});
