// MInference pattern indices against brute-force masks: the vertical-slash point–range conversion for
// random lengths (not multiples of 64, chunks after a cached prefix) and budgets (some larger than the
// sequence), forced sink columns and local diagonals, A-shape and block-sparse shapes, and the online
// estimate finding planted columns and diagonals.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Rng } from '../../engine/model/rng.js';
import {
  aShapeIndex,
  blockSparseIndex,
  estimateVerticalSlash,
  indexDensity,
  indexMasks,
  topK,
  verticalSlashIndex,
  VS_FORCED_COLUMNS,
  VS_FORCED_DIAGONALS,
  type HeadInput,
  type SparseIndex,
} from '../../engine/attention/sparse/patterns.js';

function randomSubset(rng: Rng, n: number, k: number): Int32Array {
  const s = new Set<number>();
  k = Math.min(n, k);
  while (s.size < k) s.add(rng.int(n));
  return Int32Array.from(s).sort();
}

/** Structural invariants of any index: ranges ascending, disjoint, non-touching, under the horizon; columns outside ranges. */
function checkShape(idx: SparseIndex): void {
  idx.blocks.forEach((sel, b) => {
    const horizon = Math.min(idx.nK, idx.qPos0 + Math.min(idx.nQ, (b + 1) * idx.block));
    let prev = -1;
    for (const [a, e] of sel.ranges) {
      assert.ok(a > prev && a < e && e <= horizon, `block ${b}: bad range [${a}, ${e}) after ${prev}, horizon ${horizon}`);
      prev = e;
    }
    let pc = -1;
    for (const c of sel.columns ?? []) {
      assert.ok(c > pc && c < horizon, `block ${b}: column ${c}`);
      assert.ok(!sel.ranges.some(([a, e]) => a <= c && c < e), `block ${b}: column ${c} inside a range`);
      pc = c;
    }
  });
}

test('vertical-slash index conversion = brute-force mask (covers every entry, adds only slash-block neighbours)', () => {
  const rng = new Rng(8);
  for (let trial = 0; trial < 60; trial++) {
    const nQ = 1 + rng.int(700);
    const qPos0 = rng.int(3) === 0 ? rng.int(500) : 0;
    const nK = qPos0 + nQ;
    const block = [64, 64, 32, 16][rng.int(4)];
    const columns = randomSubset(rng, nK, rng.int(3) === 0 ? nK + 50 : rng.int(80));
    const offsets = randomSubset(rng, nK, rng.int(3) === 0 ? nK + 50 : rng.int(80));
    const colSet = new Set(columns);
    const offSet = new Set(offsets);
    const idx = verticalSlashIndex({ columns, offsets }, nQ, qPos0, nK, block);
    checkShape(idx);
    const masks = indexMasks(idx);
    for (let b = 0; b < idx.blocks.length; b++) {
      const q0 = b * block;
      const q1 = Math.min(nQ, q0 + block);
      const horizon = qPos0 + q1;
      // Every exact VS entry of every row is selected.
      for (let i = q0; i < q1; i++) {
        const p = qPos0 + i;
        for (let j = 0; j <= p; j++) if (colSet.has(j) || offSet.has(p - j)) assert.equal(masks[b][j], 1, `trial ${trial} row ${i} key ${j} missing`);
      }
      // Every selected key is a vertical or on a slash that crosses the block.
      for (let j = 0; j < nK; j++) {
        if (!masks[b][j]) continue;
        assert.ok(j < horizon);
        let ok = colSet.has(j);
        for (let i = q0; !ok && i < q1; i++) ok = offSet.has(qPos0 + i - j);
        assert.ok(ok, `trial ${trial} block ${b} key ${j} selected without a reason`);
      }
    }
    if (columns.length === nK && offsets.length === nK) assert.equal(indexDensity(idx), 1);
  }
});

function randomHead(rng: Rng, nQ: number, qPos0: number, d: number): HeadInput {
  const nK = qPos0 + nQ;
  return { q: rng.fillNormal(new Float32Array(nQ * d), 1, 0), k: rng.fillNormal(new Float32Array(nK * d), 1, 0), nQ, nK, qPos0, headDim: d, scale: 1 / Math.sqrt(d) };
}

test('vertical-slash estimate: forced sinks and local diagonals always present; budgets clamp to [floor, nK]', () => {
  const rng = new Rng(9);
  for (const [nQ, qPos0, v, s] of [
    [200, 0, 40, 120],
    [77, 0, 5, 5],
    [1000, 300, 100, 200],
    [50, 10, 1000, 1000],
  ] as const) {
    const h = randomHead(rng, nQ, qPos0, 16);
    const vs = estimateVerticalSlash(h, v, s);
    const cols = new Set(vs.columns);
    const offs = new Set(vs.offsets);
    for (let j = 0; j < Math.min(h.nK, VS_FORCED_COLUMNS); j++) assert.ok(cols.has(j), `sink column ${j}`);
    for (let o = 0; o < Math.min(h.nK, VS_FORCED_DIAGONALS); o++) assert.ok(offs.has(o), `local diagonal ${o}`);
    assert.equal(vs.columns.length, Math.min(h.nK, Math.max(v, 30)));
    assert.equal(vs.offsets.length, Math.min(h.nK, Math.max(s, 100)));
    const idx = verticalSlashIndex(vs, nQ, qPos0, h.nK);
    checkShape(idx);
    // The forced entries survive the conversion for every row.
    const masks = indexMasks(idx);
    for (let i = 0; i < nQ; i++) {
      const p = qPos0 + i;
      const m = masks[Math.floor(i / 64)];
      for (let j = 0; j < Math.min(p + 1, VS_FORCED_COLUMNS); j++) assert.equal(m[j], 1);
      for (let o = 0; o < Math.min(p + 1, VS_FORCED_DIAGONALS); o++) assert.equal(m[p - o], 1);
    }
  }
});

test('vertical-slash estimate finds a planted column and a planted diagonal', () => {
  const rng = new Rng(10);
  const d = 32;
  const nQ = 900;
  const h = randomHead(rng, nQ, 0, d);
  for (let x = 0; x < h.q.length; x++) h.q[x] *= 0.2;
  // Column 500: every later query scores it high. Diagonal 333: query i matches key i − 333.
  for (let t = 0; t < d; t++) h.k[500 * d + t] = t === 0 ? 30 : 0;
  for (let i = 0; i < nQ; i++) h.q[i * d] += 1;
  const vs = estimateVerticalSlash(h, 31, 101);
  assert.ok(vs.columns.includes(500), `columns ${vs.columns}`);
  const h2 = randomHead(rng, nQ, 0, d);
  for (let i = 333; i < nQ; i++) for (let t = 0; t < d; t++) h2.q[i * d + t] = 4 * h2.k[(i - 333) * d + t];
  assert.ok(estimateVerticalSlash(h2, 30, 101).offsets.includes(333));
});

test('A-shape index = sink ∪ causal local window, at block granularity', () => {
  const rng = new Rng(11);
  for (let trial = 0; trial < 30; trial++) {
    const nQ = 1 + rng.int(600);
    const qPos0 = rng.int(2) ? rng.int(300) : 0;
    const nK = qPos0 + nQ;
    const sink = rng.int(100);
    const local = 1 + rng.int(nK + 20);
    const idx = aShapeIndex(sink, local, nQ, qPos0, nK);
    checkShape(idx);
    const masks = indexMasks(idx);
    for (let i = 0; i < nQ; i++) {
      const p = qPos0 + i;
      const b = Math.floor(i / 64);
      const p0 = qPos0 + b * 64;
      for (let j = 0; j <= p; j++) {
        if (j < sink || p - j < local) assert.equal(masks[b][j], 1);
        if (masks[b][j]) assert.ok(j < sink || j > p0 - local, `key ${j} beyond the block's window`);
      }
    }
  }
});

test('block-sparse index: whole 64-key blocks, top-k with diagonal and first block forced', () => {
  const rng = new Rng(12);
  for (const [nQ, qPos0, k] of [
    [700, 0, 3],
    [300, 130, 2],
    [1000, 0, 100],
  ] as const) {
    const h = randomHead(rng, nQ, qPos0, 16);
    const idx = blockSparseIndex(h, k);
    checkShape(idx);
    idx.blocks.forEach((sel, b) => {
      const horizon = Math.min(h.nK, qPos0 + Math.min(nQ, (b + 1) * 64));
      const kb = new Set<number>();
      for (const [a, e] of sel.ranges) {
        assert.equal(a % 64, 0);
        assert.ok(e % 64 === 0 || e === horizon);
        for (let x = a; x < e; x += 64) kb.add(x / 64);
      }
      const first = Math.floor((qPos0 + b * 64) / 64);
      const last = Math.floor((horizon - 1) / 64);
      const forced = new Set([0, ...Array.from({ length: last - first + 1 }, (_, i) => first + i)]);
      for (const f of forced) assert.ok(kb.has(f), `block ${b}: forced key block ${f}`);
      assert.ok(kb.size <= Math.max(k, forced.size), `block ${b}: ${kb.size} key blocks`);
      if (k >= Math.ceil(horizon / 64)) assert.equal(kb.size, Math.ceil(horizon / 64));
    });
  }
});

test('topK: deterministic, ties toward the lower index, ascending result', () => {
  assert.deepEqual(Array.from(topK(Float64Array.from([1, 3, 3, 0, 3]), 2)), [1, 2]);
  assert.deepEqual(Array.from(topK(Float64Array.from([1, Infinity, 0]), 5)), [0, 1, 2]);
});
