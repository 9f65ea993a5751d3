// Sparse prefill kernels (kernels/sparse_*.wgsl, engine/backends/webgpu/sparse.ts) against their
// TypeScript references (engine/attention/sparse/patterns.ts, attention.ts), llama.cpp
// test-backend-ops style: every pass's output is read back from the scratch buffer and compared.
// - top-k (radix select): = patterns.ts topK exactly (ties toward the lower index, ascending), on
//   random scores, heavy ties, ±∞, negatives, k > n, k = 0, several 256-key chunks;
// - vertical-slash estimation: column and diagonal sums of the last-64-query softmax = the sums of
//   lastQueryProbs within 2e-5 (relative to the largest); selections = verticalSlashFromProbs but for
//   swaps of scores equal within that tolerance; exactly equal where every score ties (q = 0);
// - index conversion: the GPU index = verticalSlashIndex of the GPU's selections, aShapeIndex,
//   blockSparseIndex (block scores within tolerance, chosen blocks = topK but for near-ties, ranges =
//   the merge of the chosen blocks), kept entries = the index's exact count; ragged lengths, a chunk
//   after a cached prefix (pos > 0), budgets larger than the sequence;
// - sparse flash: (out, lse) = sparseAttentionRef over the GPU's index (≤ 5e-4), a full mask = the
//   dense kernel, attention recall exp(lse_sparse − lse_full) from the kernels = the reference's, a row
//   that attends nothing → out 0, lse −∞;
// - contiguous f32 KV and a paged f16 pool with scattered pages; GQA; SparseStats.
// Sizes stay small (lavapipe): ≤ 4 heads, ≤ 330 keys.

import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { Rng } from '../../engine/model/sampler.js';
import { f16ToF32, f32ToF16 } from '../../engine/gguf/quant.js';
import type { KVCache, SeqSlice } from '../../engine/model/backend.js';
import type { WebGPUBackend } from '../../engine/backends/webgpu/index.js';
import { decodeSlot, KIND, type DecodedSlot } from '../../engine/backends/webgpu/sparse.js';
import {
  aShapeIndex,
  lastQueryProbs,
  mergeRanges,
  topK,
  verticalSlashFromProbs,
  verticalSlashIndex,
  blockSparseIndex,
  buildIndex,
  type SparseIndex,
  type SparsePattern,
} from '../../engine/attention/sparse/patterns.js';
import { attentionRecall, denseAttentionRef, sparseAttentionRef, type HeadGroupInput } from '../../engine/attention/sparse/attention.js';
import type { KeySelection } from '../../engine/attention/cpu-attention.js';
import { ErrorLog, openBackend, randn } from './util.js';
import { TablePagedKV } from '../../engine/kv/table-kv.js';

let b: WebGPUBackend;
const backendOf = () => b;
const log = new ErrorLog();
before(async () => {
  b = await openBackend({});
});
after(() => {
  log.print('webgpu sparse prefill vs the TypeScript reference (worst case)');
  b.dispose();
});

// ------------------------------------------------------------------------------------------ top-k

test('top-k on the GPU = patterns.ts topK: ties toward the lower index, ascending, ±∞, k > n, k = 0', async () => {
  const rng = new Rng(5);
  const lists: { scores: Float32Array; k: number }[] = [];
  lists.push({ scores: randn(rng, 1000), k: 37 });
  lists.push({ scores: Float32Array.from({ length: 700 }, () => rng.int(5)), k: 100 }); // heavy ties
  const inf = randn(rng, 300);
  for (let i = 0; i < 300; i += 7) inf[i] = Infinity;
  inf[3] = -Infinity;
  inf[5] = -0;
  inf[6] = 0;
  lists.push({ scores: inf, k: 60 });
  lists.push({ scores: randn(rng, 50), k: 80 }); // k > n: everything
  lists.push({ scores: randn(rng, 40), k: 0 });
  lists.push({ scores: Float32Array.of(2.5), k: 1 });
  lists.push({ scores: new Float32Array(3000).fill(1), k: 1234 }); // all equal, 12 chunks
  const big = randn(rng, 2600);
  for (let i = 0; i < big.length; i++) big[i] = Math.round(big[i] * 8) / 8;
  lists.push({ scores: big, k: 900 });
  const gpu = await b.sparseRunner.topK(lists);
  lists.forEach((x, i) => assert.deepEqual(Array.from(gpu[i]), Array.from(topK(x.scores, x.k)), `list ${i} (n ${x.scores.length}, k ${x.k})`));
});

// ------------------------------------------------------------------------------------------ index conversion

test('vertical-slash index conversion on the GPU = verticalSlashIndex for random selections, lengths and positions', async () => {
  const rng = new Rng(11);
  const pick = (n: number, k: number, extra: number[] = []) => {
    const s = new Set(extra.filter((x) => x >= 0 && x < n));
    while (s.size < Math.min(n, k)) s.add(rng.int(n));
    return Int32Array.from([...s].sort((x, y) => x - y));
  };
  for (const [nQ, pos] of [
    [1, 0],
    [64, 0],
    [65, 3],
    [150, 0],
    [100, 77],
    [37, 300],
    [200, 64],
  ]) {
    const nK = pos + nQ;
    const sels = [
      { columns: pick(nK, 30), offsets: pick(nK, 100) },
      // gaps of exactly 64 between offsets: ranges that touch and merge
      { columns: pick(nK, 10), offsets: Int32Array.from(new Set([0, 64, 128, 192, 256, 300, 301, 365].filter((o) => o < nK))) },
      { columns: pick(nK, 5 + rng.int(nK)), offsets: pick(nK, 1 + rng.int(nK), [nK - 1]) },
      { columns: pick(nK, nK), offsets: pick(nK, nK) },
    ];
    const gpu = await b.sparseRunner.vsIndex(sels, nQ, pos);
    sels.forEach((sel, i) => {
      const ref = verticalSlashIndex(sel, nQ, pos, nK);
      sameIndex(`nQ ${nQ} pos ${pos} selection ${i}`, gpu[i].index, ref);
      assert.deepEqual(gpu[i].kept, keptOf(ref.blocks, nQ, pos, nK), `nQ ${nQ} pos ${pos} selection ${i}: kept entries`);
    });
  }
});

// ------------------------------------------------------------------------------------------ setup

interface Shape {
  nHeads: number;
  nKVHeads: number;
  headDim: number;
}


const round16 = (a: Float32Array) => a.map((x) => f16ToF32(f32ToF16(x)));

interface Run {
  shape: Shape;
  nQ: number;
  pos: number;
  nK: number;
  /** This slice's queries [nQ, H·d]; every key and value the cache holds [nK, G·d] (f16-rounded for an f16 cache). */
  q: Float32Array;
  k: Float32Array;
  v: Float32Array;
  out: Float32Array;
  lse: Float32Array;
  slots: Map<number, DecodedSlot>;
  scale: number;
  /** Scratch batches the call was cut into. */
  batches: number;
}

let seed = 1;
/**
 * Writes a prefix of `pos` rows densely, then runs one sparse slice of nQ rows with `patterns`,
 * keeping the scratch for inspection. `qZero`: all queries 0 (every score ties).
 */
async function sparseRun(shape: Shape, pos: number, nQ: number, patterns: SparsePattern[], opts: { paged?: boolean; qZero?: boolean; backend?: WebGPUBackend } = {}): Promise<Run> {
  const b = opts.backend ?? backendOf();
  const { nHeads: H, nKVHeads: G, headDim: d } = shape;
  const rng = new Rng(seed++);
  const nK = pos + nQ;
  let kv: KVCache;
  if (opts.paged) {
    const pool = b.createKVPool({ nLayers: 2, nKVHeads: G, headDim: d, pageSize: 64, nPages: 16, dtype: 'f16' });
    const need = Math.ceil(nK / 64);
    kv = new TablePagedKV(pool, Array.from({ length: need }, (_, i) => 15 - 2 * i)); // scattered, descending
  } else {
    kv = b.createKV({ nLayers: 2, nKVHeads: G, headDim: d, capacity: nK });
  }
  const scale = 1 / Math.sqrt(d);
  const k = randn(rng, nK * G * d);
  const v = randn(rng, nK * G * d);
  const base = { layer: 1, nHeads: H, nKVHeads: G, headDim: d, scale };
  if (pos > 0) {
    const qp = randn(rng, pos * H * d);
    const r = b.attentionWithLse(b.fromHost(qp, pos, H * d), b.fromHost(k.subarray(0, pos * G * d), pos, G * d), b.fromHost(v.subarray(0, pos * G * d), pos, G * d), [{ kv, row: 0, n: pos, pos: 0 }], base);
    await b.read(r.lse);
    b.endStep();
    kv.commit(pos);
  }
  const q = opts.qZero ? new Float32Array(nQ * H * d) : randn(rng, nQ * H * d, 1.5);
  b.sparseRunner.debug = [];
  const slice: SeqSlice = { kv, row: 0, n: nQ, pos };
  const r = b.attentionWithLse(b.fromHost(q, nQ, H * d), b.fromHost(k.subarray(pos * G * d), nQ, G * d), b.fromHost(v.subarray(pos * G * d), nQ, G * d), [slice], { ...base, sparse: patterns });
  const out = await b.read(r.out);
  const lse = await b.read(r.lse);
  const caps = b.sparseRunner.debug;
  b.sparseRunner.debug = undefined;
  const slots = new Map<number, DecodedSlot>();
  for (const cap of caps) {
    const words = new Uint32Array(await b.readRange(cap.sp, 0, cap.bytes));
    cap.slots.forEach((s, i) => slots.set(s.h, decodeSlot(words, cap.layout, i, s)));
    cap.sp.destroy();
  }
  b.endStep();
  kv.commit(nK);
  return { shape, nQ, pos, nK, q, k: opts.paged ? round16(k) : k, v: opts.paged ? round16(v) : v, out, lse, slots, scale, batches: caps.length };
}

/** Query head h's q [nQ, d] and its KV head's keys [nK, d]. */
function headOf(r: Run, h: number) {
  const { nHeads: H, nKVHeads: G, headDim: d } = r.shape;
  const g = Math.floor(h / (H / G));
  const q = new Float32Array(r.nQ * d);
  for (let i = 0; i < r.nQ; i++) q.set(r.q.subarray(i * H * d + h * d, i * H * d + (h + 1) * d), i * d);
  const k = new Float32Array(r.nK * d);
  const v = new Float32Array(r.nK * d);
  for (let j = 0; j < r.nK; j++) {
    k.set(r.k.subarray(j * G * d + g * d, j * G * d + (g + 1) * d), j * d);
    v.set(r.v.subarray(j * G * d + g * d, j * G * d + (g + 1) * d), j * d);
  }
  return { q, k, v, input: { q, k, nQ: r.nQ, nK: r.nK, qPos0: r.pos, headDim: d, scale: r.scale } };
}

/** The group of query heads sharing KV head g, as the reference's HeadGroupInput. */
function groupOf(r: Run, g: number): HeadGroupInput {
  const { nHeads: H, nKVHeads: G, headDim: d } = r.shape;
  const per = H / G;
  const q = new Float32Array(r.nQ * per * d);
  for (let i = 0; i < r.nQ; i++) q.set(r.q.subarray(i * H * d + g * per * d, i * H * d + (g + 1) * per * d), i * per * d);
  const { k, v } = headOf(r, g * per);
  return { q, k, v, nQ: r.nQ, nK: r.nK, qPos0: r.pos, nHeads: per, headDim: d, scale: r.scale };
}

const norm = (s: KeySelection) => ({ ranges: s.ranges.map(([a, e]) => [a, e]), columns: Array.from(s.columns ?? []) });

function sameIndex(label: string, gpu: KeySelection[], ref: SparseIndex) {
  assert.equal(gpu.length, ref.blocks.length, `${label}: query blocks`);
  gpu.forEach((s, i) => assert.deepEqual(norm(s), norm(ref.blocks[i]), `${label}: query block ${i}`));
}

/** Exact (row, key) entries an index computes (the count indexDensity divides). */
function keptOf(blocks: KeySelection[], nQ: number, pos: number, nK: number): number[] {
  return blocks.map((sel, bi) => {
    let kept = 0;
    for (let i = bi * 64; i < Math.min(nQ, bi * 64 + 64); i++) {
      const end = Math.min(nK, pos + i + 1);
      for (const [a, e] of sel.ranges) kept += Math.max(0, Math.min(e, end) - a);
      for (const c of sel.columns ?? []) if (c < end) kept++;
    }
    return kept;
  });
}

/**
 * Selections from scores computed in different precisions may differ only where scores tie within
 * `tol`: every element only the GPU chose must score at least the reference's k-th largest − tol.
 */
function sameSelection(label: string, gpu: Int32Array, ref: Int32Array, score: ArrayLike<number>, tol: number) {
  assert.equal(gpu.length, ref.length, `${label}: sizes`);
  const inRef = new Set(ref);
  const kth = Math.min(...Array.from(ref, (i) => score[i]));
  for (const i of gpu) if (!inRef.has(i)) assert.ok(score[i] >= kth - tol, `${label}: ${i} (score ${score[i]}) chosen, the k-th largest is ${kth}`);
  for (let x = 1; x < gpu.length; x++) assert.ok(gpu[x] > gpu[x - 1], `${label}: not ascending`);
}

/** Column and diagonal sums of Â (f64), as verticalSlashFromProbs computes them before forcing. */
function vsScores(probs: Float32Array, L: number, nK: number, rowPos0: number) {
  const vert = new Float64Array(nK);
  const diag = new Float64Array(nK);
  for (let r = 0; r < L; r++) {
    for (let j = 0; j <= Math.min(nK - 1, rowPos0 + r); j++) {
      vert[j] += probs[r * nK + j];
      diag[rowPos0 + r - j] += probs[r * nK + j];
    }
  }
  return { vert, diag };
}

function checkVS(label: string, r: Run, h: number, pt: { vertical: number; slash: number }, exact = false) {
  const s = r.slots.get(h)!;
  const { input } = headOf(r, h);
  const L = Math.min(64, r.nQ);
  const rowPos0 = r.nK - L;
  const probs = lastQueryProbs(input);
  const { vert, diag } = vsScores(probs, L, r.nK, rowPos0);
  // Row statistics: lse of each of the last L rows.
  const d = r.shape.headDim;
  let lseErr = 0;
  for (let x = 0; x < L; x++) {
    const row = r.nQ - L + x;
    let m = -Infinity;
    const sc: number[] = [];
    for (let j = 0; j <= rowPos0 + x; j++) {
      let dot = 0;
      for (let c = 0; c < d; c++) dot += input.q[row * d + c] * input.k[j * d + c];
      sc.push(dot * r.scale);
      m = Math.max(m, dot * r.scale);
    }
    const lse = m + Math.log(sc.reduce((a, y) => a + Math.exp(y - m), 0));
    lseErr = Math.max(lseErr, Math.abs(s.rowStats![2 * x] + Math.log(s.rowStats![2 * x + 1]) - lse));
  }
  log.checkAbs('VS estimate: last-row lse', lseErr, 1e-4);
  const finite = (a: Float32Array, forced: number) => Float64Array.from(a, (x, i) => (i < forced ? 0 : x));
  const fv = Float64Array.from(vert, (x, i) => (i < 30 ? 0 : x));
  const fd = Float64Array.from(diag, (x, i) => (i < 100 ? 0 : x));
  log.check('VS estimate: vertical scores', Float32Array.from(finite(s.vertical!, 30)), Float32Array.from(fv), 2e-5);
  log.check('VS estimate: slash scores', Float32Array.from(finite(s.slash!, 100)), Float32Array.from(fd), 2e-5);
  for (let j = 0; j < Math.min(30, r.nK); j++) assert.equal(s.vertical![j], Infinity, `${label}: sink column ${j} forced`);
  for (let o = 0; o < Math.min(100, r.nK); o++) assert.equal(s.slash![o], Infinity, `${label}: local diagonal ${o} forced`);
  const ref = verticalSlashFromProbs(probs, L, r.nK, rowPos0, pt.vertical, pt.slash);
  const maxV = Math.max(...fv);
  const maxD = Math.max(...fd);
  if (exact) {
    assert.deepEqual(Array.from(s.columns!), Array.from(ref.columns), `${label}: columns`);
    assert.deepEqual(Array.from(s.offsets!), Array.from(ref.offsets), `${label}: offsets`);
  } else {
    sameSelection(`${label}: columns`, s.columns!, ref.columns, Float64Array.from(vert, (x, i) => (i < 30 ? Infinity : x)), 2e-5 * maxV);
    sameSelection(`${label}: offsets`, s.offsets!, ref.offsets, Float64Array.from(diag, (x, i) => (i < 100 ? Infinity : x)), 2e-5 * maxD);
  }
  // Forced entries are always selected (sink columns, local diagonals).
  for (let j = 0; j < Math.min(30, r.nK); j++) assert.ok(s.columns!.includes(j), `${label}: sink ${j} kept`);
  for (let o = 0; o < Math.min(100, r.nK); o++) assert.ok(s.offsets!.includes(o), `${label}: local ${o} kept`);
  // Index conversion of the GPU's own selections: exactly the reference merge.
  sameIndex(`${label}: VS index`, s.index, verticalSlashIndex({ columns: s.columns!, offsets: s.offsets! }, r.nQ, r.pos, r.nK));
}

function checkBS(label: string, r: Run, h: number, blocks: number) {
  const s = r.slots.get(h)!;
  const { input } = headOf(r, h);
  const d = r.shape.headDim;
  const nKB = Math.ceil(r.nK / 64);
  const kp = new Float64Array(nKB * d);
  for (let kb = 0; kb < nKB; kb++) {
    const j1 = Math.min(r.nK, kb * 64 + 64);
    for (let j = kb * 64; j < j1; j++) for (let c = 0; c < d; c++) kp[kb * d + c] += input.k[j * d + c] / (j1 - kb * 64);
  }
  s.blockScores!.forEach((gs, qb) => {
    const q0 = qb * 64;
    const q1 = Math.min(r.nQ, q0 + 64);
    const p0 = r.pos + q0;
    const horizon = Math.min(r.nK, r.pos + q1);
    const visible = Math.ceil(horizon / 64);
    const diag0 = Math.floor(Math.min(p0, horizon - 1) / 64);
    assert.equal(gs.length, visible);
    const sc = new Float64Array(visible);
    for (let kb = 0; kb < visible; kb++) {
      if (kb === 0 || kb >= diag0) sc[kb] = Infinity;
      else {
        let dot = 0;
        for (let c = 0; c < d; c++) {
          let qm = 0;
          for (let i = q0; i < q1; i++) qm += input.q[i * d + c] / (q1 - q0);
          dot += qm * kp[kb * d + c];
        }
        sc[kb] = dot * r.scale;
      }
    }
    const fin = (a: ArrayLike<number>) => Float32Array.from(a, (x) => (x === Infinity ? 0 : x));
    log.check('BS estimate: pooled block scores', fin(gs), fin(sc), 5e-5);
    const forced = visible - diag0 + (diag0 > 0 ? 1 : 0);
    const finiteMax = Math.max(1e-30, ...Array.from(sc).filter((x) => x !== Infinity).map(Math.abs));
    sameSelection(`${label}: blocks of query block ${qb}`, s.blocks![qb], topK(sc, Math.max(blocks, forced)), sc, 5e-5 * finiteMax);
  });
  // The ranges are the merge of the GPU's chosen blocks, clipped to each block's horizon.
  sameIndex(`${label}: BS index`, s.index, {
    block: 64,
    nQ: r.nQ,
    qPos0: r.pos,
    nK: r.nK,
    blocks: s.blocks!.map((ch, qb) => ({ ranges: mergeRanges(Array.from(ch, (kb) => [kb * 64, kb * 64 + 64] as [number, number]), Math.min(r.nK, r.pos + Math.min(r.nQ, qb * 64 + 64))) })),
  });
}

/** Output and lse of every head against sparseAttentionRef over the GPU's own index; recall vs the reference's. */
function checkAttention(label: string, r: Run) {
  const { nHeads: H, nKVHeads: G, headDim: d } = r.shape;
  const per = H / G;
  let lseErr = 0;
  let recallErr = 0;
  for (let g = 0; g < G; g++) {
    const a = groupOf(r, g);
    const idx: SparseIndex[] = [];
    for (let hh = 0; hh < per; hh++) {
      const s = r.slots.get(g * per + hh);
      // A head without a slot ran dense (all-dense calls never reach the sparse kernels).
      idx.push({ block: 64, nQ: r.nQ, qPos0: r.pos, nK: r.nK, blocks: s ? s.index : aShapeIndex(0, r.nK, r.nQ, r.pos, r.nK).blocks });
    }
    const ref = sparseAttentionRef(a, idx);
    const dense = denseAttentionRef(a);
    const out = new Float32Array(r.nQ * per * d);
    for (let i = 0; i < r.nQ; i++) out.set(r.out.subarray(i * H * d + g * per * d, i * H * d + (g + 1) * per * d), i * per * d);
    log.check('sparse flash out', out, ref.out, 5e-4);
    const refRecall = attentionRecall(ref.lse, dense.lse);
    for (let hh = 0; hh < per; hh++) {
      const h = g * per + hh;
      for (let i = 0; i < r.nQ; i++) {
        const gl = r.lse[h * r.nQ + i];
        const rl = ref.lse[hh * r.nQ + i];
        if (rl === -Infinity) assert.equal(gl, -Infinity, `${label}: head ${h} row ${i} attends nothing`);
        else lseErr = Math.max(lseErr, Math.abs(gl - rl));
        const gpuRecall = Math.exp(gl - dense.lse[hh * r.nQ + i]);
        recallErr = Math.max(recallErr, Math.abs(gpuRecall - refRecall[hh * r.nQ + i]));
      }
      const s = r.slots.get(h);
      if (s) assert.deepEqual(s.kept, keptOf(s.index, r.nQ, r.pos, r.nK), `${label}: kept entries of head ${h}`);
    }
  }
  log.checkAbs('sparse flash lse', lseErr, 5e-4);
  log.checkAbs('attention recall (kernel vs reference)', recallErr, 1e-3);
}

// ------------------------------------------------------------------------------------------ tests

const VS = (vertical: number, slash: number): SparsePattern => ({ kind: 'vertical-slash', vertical, slash });
const AS = (sink: number, local: number): SparsePattern => ({ kind: 'a-shape', sink, local });
const BS = (blocks: number): SparsePattern => ({ kind: 'block-sparse', blocks });

test('vertical-slash: estimation, top-k and index on the GPU = the reference (contiguous f32 KV, GQA 4:2, ragged, pos 0)', async () => {
  const pts = [VS(35, 100), VS(60, 140), VS(30, 100), VS(45, 120)];
  const r = await sparseRun({ nHeads: 4, nKVHeads: 2, headDim: 32 }, 0, 290, pts);
  pts.forEach((pt, h) => checkVS(`head ${h}`, r, h, pt as { vertical: number; slash: number }));
  checkAttention('VS pos 0', r);
});

test('vertical-slash on a paged f16 pool (scattered pages), a chunk after a cached prefix (pos 77, 201 rows), head dim 64', async () => {
  const pts = [VS(40, 110), VS(32, 130)];
  const r = await sparseRun({ nHeads: 2, nKVHeads: 1, headDim: 64 }, 77, 201, pts, { paged: true });
  pts.forEach((pt, h) => checkVS(`head ${h}`, r, h, pt as { vertical: number; slash: number }));
  checkAttention('VS paged pos 77', r);
});

test('vertical-slash with every score tied (q = 0): selections exactly the reference (lower index wins)', async () => {
  const pts = [VS(50, 120), VS(31, 101)];
  const r = await sparseRun({ nHeads: 2, nKVHeads: 2, headDim: 32 }, 40, 180, pts, { qZero: true });
  pts.forEach((pt, h) => checkVS(`tied head ${h}`, r, h, pt as { vertical: number; slash: number }, true));
  checkAttention('VS ties', r);
});

test('budgets larger than the sequence: VS, A-shape and block-sparse cover every causal key; sparse flash = dense flash', async () => {
  const shape = { nHeads: 4, nKVHeads: 2, headDim: 32 };
  const pts = [VS(5000, 5000), AS(1000, 100000), BS(1000), VS(400, 400)];
  const r = await sparseRun(shape, 30, 130, pts);
  for (const [h, s] of r.slots) {
    sameIndex(`head ${h} full`, s.index, aShapeIndex(0, r.nK, r.nQ, r.pos, r.nK)); // one range [0, horizon) per block
    assert.equal(s.kept.reduce((a, x) => a + x, 0), r.nQ * r.pos + (r.nQ * (r.nQ + 1)) / 2);
  }
  checkVS('full VS', r, 0, { vertical: 5000, slash: 5000 });
  checkAttention('full', r);
  // The same inputs through the dense kernel (a pattern-free call on a fresh cache).
  const kv = b.createKV({ nLayers: 2, nKVHeads: 2, headDim: 32, capacity: r.nK });
  const d = 32;
  const rr = b.attentionWithLse(b.fromHost(new Float32Array(r.pos * 4 * d), r.pos, 4 * d), b.fromHost(r.k.subarray(0, r.pos * 2 * d), r.pos, 2 * d), b.fromHost(r.v.subarray(0, r.pos * 2 * d), r.pos, 2 * d), [{ kv, row: 0, n: r.pos, pos: 0 }], { layer: 1, ...shape, scale: r.scale });
  await b.read(rr.lse);
  b.endStep();
  kv.commit(r.pos);
  const dn = b.attentionWithLse(b.fromHost(r.q, r.nQ, 4 * d), b.fromHost(r.k.subarray(r.pos * 2 * d), r.nQ, 2 * d), b.fromHost(r.v.subarray(r.pos * 2 * d), r.nQ, 2 * d), [{ kv, row: 0, n: r.nQ, pos: r.pos }], { layer: 1, ...shape, scale: r.scale });
  const out = await b.read(dn.out);
  const lse = await b.read(dn.lse);
  b.endStep();
  log.check('full mask = dense kernel (out)', r.out, out, 1e-5);
  let e = 0;
  for (let i = 0; i < lse.length; i++) e = Math.max(e, Math.abs(lse[i] - r.lse[i]));
  log.checkAbs('full mask = dense kernel (lse)', e, 1e-5);
});

test('A-shape and block-sparse indices = aShapeIndex / blockSparseIndex; ragged, pos > 0, paged; a row attending nothing', async () => {
  const pts = [AS(4, 50), AS(0, 1), BS(2), BS(3)];
  const r = await sparseRun({ nHeads: 4, nKVHeads: 1, headDim: 32 }, 100, 229, pts, { paged: true });
  sameIndex('a-shape(4, 50)', r.slots.get(0)!.index, aShapeIndex(4, 50, r.nQ, r.pos, r.nK));
  sameIndex('a-shape(0, 1)', r.slots.get(1)!.index, aShapeIndex(0, 1, r.nQ, r.pos, r.nK));
  checkBS('block-sparse(2)', r, 2, 2);
  checkBS('block-sparse(3)', r, 3, 3);
  // Where the pooled scores have no near-ties the whole index equals the reference's.
  for (const [h, blocks] of [
    [2, 2],
    [3, 3],
  ]) {
    const ref = blockSparseIndex(headOf(r, h).input, blocks);
    const s = r.slots.get(h)!;
    const differ = s.index.filter((x, i) => JSON.stringify(norm(x)) !== JSON.stringify(norm(ref.blocks[i]))).length;
    assert.ok(differ <= 1, `block-sparse(${blocks}): ${differ} query blocks differ from the reference`);
  }
  checkAttention('a-shape + block-sparse', r);
});

test('A-shape with no keys for some rows: out 0 and lse −∞ where a row attends nothing (reference convention)', async () => {
  // local 0: a block's union of windows is [p0 + 1, p1), so the first row of every query block has no
  // key at or left of it.
  const pts = [AS(0, 0), VS(30, 100)];
  const r = await sparseRun({ nHeads: 2, nKVHeads: 1, headDim: 32 }, 0, 140, pts);
  sameIndex('a-shape(0, 0)', r.slots.get(0)!.index, aShapeIndex(0, 0, r.nQ, r.pos, r.nK));
  for (const i of [0, 64, 128]) {
    assert.equal(r.lse[i], -Infinity, `row ${i}`);
    assert.ok(r.out.subarray(i * 64, i * 64 + 32).every((x) => x === 0), `row ${i} out`);
  }
  checkAttention('attends nothing', r);
});

test('heads cut into several scratch batches (8 KiB each), K/V spread over several arenas (binding limit 96 KiB)', async () => {
  const small = await openBackend({ maxBindingBytes: 96 * 1024, sparseScratchBytes: 8 * 1024 });
  try {
    const pts = [VS(30, 100), BS(2), AS(3, 40), VS(40, 100)];
    const r = await sparseRun({ nHeads: 4, nKVHeads: 1, headDim: 32 }, 60, 140, pts, { paged: true, backend: small });
    assert.equal(small.sparseRunner.denseFallbacks, 0);
    assert.ok(r.batches >= 2, `${r.batches} batch(es)`);
    checkVS('batched head 0', r, 0, { vertical: 30, slash: 100 });
    checkVS('batched head 3', r, 3, { vertical: 40, slash: 100 });
    checkBS('batched block-sparse', r, 1, 2);
    sameIndex('batched a-shape', r.slots.get(2)!.index, aShapeIndex(3, 40, r.nQ, r.pos, r.nK));
    checkAttention('batched, several arenas', r);
  } finally {
    small.dispose();
  }
});

test('SparseStats: calls, causal entries, kept entries (summed on the GPU) after a read; all-dense calls take the dense kernel', async () => {
  b.sparseStats = { calls: 0, keptEntries: 0, causalEntries: 0, estimateMs: 0, attentionMs: 0 };
  const r = await sparseRun({ nHeads: 2, nKVHeads: 1, headDim: 32 }, 64, 100, [VS(30, 100), BS(1)]);
  let kept = 0;
  for (const s of r.slots.values()) kept += s.kept.reduce((a, x) => a + x, 0);
  const causal = 2 * (100 * 64 + (100 * 101) / 2);
  assert.equal(b.sparseStats.calls, 1);
  assert.equal(b.sparseStats.causalEntries, causal);
  assert.equal(b.sparseStats.keptEntries, kept);
  assert.ok(kept < causal);
  const before = b.dispatches;
  const d = await sparseRun({ nHeads: 2, nKVHeads: 1, headDim: 32 }, 0, 64, [{ kind: 'dense' }, { kind: 'dense' }]);
  assert.equal(d.slots.size, 0, 'no sparse kernels for an all-dense call');
  assert.ok(b.dispatches - before <= 6);
  assert.equal(b.sparseStats.calls, 2);
  assert.equal(b.sparseStats.keptEntries, kept + 2 * (64 * 65) / 2);
  // buildIndex is the reference of a 'dense' head inside a sparse call.
  const r2 = await sparseRun({ nHeads: 2, nKVHeads: 1, headDim: 32 }, 0, 96, [{ kind: 'dense' }, AS(2, 16)]);
  sameIndex('dense head in a sparse call', r2.slots.get(0)!.index, buildIndex({ kind: 'dense' }, headOf(r2, 0).input));
  assert.equal(r2.slots.get(0)!.head.kind, KIND.dense);
  checkAttention('dense + a-shape', r2);
});
