// Paged KV on the CPU backend (its own pool, CpuKVPool): the test/kv cases on the backend that runs on
// machines without a GPU.
//
// Tolerances. The default precision quantizes activations to int8 per 32-value block before every
// weight product, a step function: a last-bit difference upstream can flip a rounding and move a
// logit by the int8 noise of the model (measured 0.10–0.17 on these 4-layer Q8_0 models). So cached
// paths are compared like with like — against a cold computation in the same pieces (the cached part
// as one prefill, the rest as another: the same rows in the same batches) — and then:
// - the same page layout (each sequence's keys one run of consecutive pages) → bit-identical;
// - another layout (a copied or moved page is gathered into part B instead of viewed in part A)
//   changes the order of the softmax sums only: < 1e-4 with f32 products (measured ≤ 5e-5), within
//   the int8 noise (< 0.25) with int8 products;
// - one 200-row batch vs the same prompt as 192 + 8 rows: int8 noise (< 0.25).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { Engine, type Sequence } from '../../engine/engine.js';
import { CpuKVPool } from '../../engine/backends/cpu/kv.js';
import { CpuBackend } from '../../engine/backends/cpu/index.js';
import { PagedSequenceKV } from '../../engine/kv/paged-kv.js';
import { GGUFFile } from '../../engine/gguf/reader.js';
import { loadTransformerConfig } from '../../engine/model/config.js';
import { Transformer } from '../../engine/model/transformer.js';
import { randomTokens, testModel } from '../helpers/models.js';
import { maxAbsDiff, sameBits, tempDir } from '../kv/helpers.js';

const model = testModel('qwen2', 'q8_0');
const cfg = (() => {
  const f = GGUFFile.open(model);
  try {
    return loadTransformerConfig(f);
  } finally {
    f.close();
  }
})();
/** Bytes of one page of this model's KV in the pool (f16). */
const PAGE = 2 * cfg.nLayers * 64 * cfg.nKVHeads * cfg.headDim * 2;

function pages(seq: Sequence): number[] {
  return (seq.kv as PagedSequenceKV).pages.slice();
}

function consecutive(ids: number[]): boolean {
  return ids.every((id, i) => i === 0 || id === ids[i - 1] + 1);
}

/** Logits of `pieces` prefilled one after the other into a fresh sequence of an engine without a prefix cache. */
async function coldInPieces(pieces: number[][]): Promise<Float32Array> {
  const e = await Engine.load({ model, backend: 'cpu', threads: 1, kv: { prefixCaching: false } });
  try {
    const s = e.createSequence(pieces.flat().length + 8);
    let l: Float32Array = new Float32Array(0);
    for (const p of pieces) l = await e.prefill(s, p);
    return l;
  } finally {
    e.dispose();
  }
}

function runChild(args: Record<string, unknown>): Promise<{ logits: Float32Array; report: Record<string, number> }> {
  const child = fileURLToPath(new URL('./paging-child.ts', import.meta.url));
  return new Promise((resolve, reject) => {
    const c = spawn(process.execPath, ['--import', 'tsx', child, JSON.stringify(args)], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    c.stdout.on('data', (d) => (out += d));
    c.stderr.on('data', (d) => (err += d));
    c.on('exit', (code) => {
      if (code !== 0) return reject(new Error(`child exited with ${code}: ${err}`));
      const j = JSON.parse(out.trim().split('\n').pop()!);
      const b = Buffer.from(j.logits, 'base64');
      resolve({ logits: new Float32Array(b.buffer, b.byteOffset, b.byteLength / 4), report: j.report });
    });
  });
}

test('CpuKVPool: pages round-trip the f16 serialization exactly (f16 and f32 storage); copyPage; budget', () => {
  for (const dtype of ['f16', 'f32'] as const) {
    const pool = new CpuKVPool({ nLayers: 2, nKVHeads: 2, headDim: 8, pageSize: 64, nPages: 10, dtype, maxBytes: 5 * 2 * 2 * 64 * 16 * (dtype === 'f16' ? 2 : 4) });
    assert.equal(pool.nPages, 5, 'the budget caps the pages offered');
    const bytes = new Uint8Array(pool.pageBytes);
    const u16 = new Uint16Array(bytes.buffer);
    // Finite halves of every exponent (no NaN: its payload is not kept by f32 storage).
    for (let i = 0; i < u16.length; i++) u16[i] = (i * 7919) & 0x7bff;
    pool.writePage(3, bytes);
    assert.ok(Buffer.from(pool.readPageSync(3)).equals(Buffer.from(bytes)), `${dtype}: read ≠ written`);
    pool.copyPage(3, 1);
    assert.ok(Buffer.from(pool.readPageSync(1)).equals(Buffer.from(bytes)), `${dtype}: copy ≠ source`);
    assert.ok(pool.bytes <= pool.opts.maxBytes!);
    // Consecutive ids merge into one run; others split.
    assert.deepEqual(pool.runs(Int32Array.of(1, 2, 4), 10, 150).map((r) => [r.t0, r.n]), [[10, 118], [128, 22]]);
    pool.dispose();
  }
});

test('CPU backend: cold = pool hit = host hit = disk hit in a new process (like with like)', async (t) => {
  const dir = tempDir('cpu-tiers');
  const prompt = randomTokens(200, 300, 4000, 21); // 3 full pages + 8 tokens
  const other = randomTokens(256, 300, 4000, 22);
  const split = await coldInPieces([prompt.slice(0, 192), prompt.slice(192)]);
  const e = await Engine.load({ model, backend: 'cpu', threads: 1, kv: { cacheDir: dir, memoryBytes: 4 * PAGE } });
  let cold: Float32Array;
  try {
    assert.equal(e.cacheStats()!.pool.pages, 4);
    assert.equal(e.cacheStats()!.pool.pageBytes, PAGE);
    const s1 = e.createSequence(256);
    cold = await e.prefill(s1, prompt);
    assert.deepEqual([s1.lastPrefill!.cachedTokens, s1.lastPrefill!.computedTokens], [0, 200]);
    e.freeSequence(s1);

    const s2 = e.createSequence(256);
    const device = await e.prefill(s2, prompt);
    assert.deepEqual([s2.lastPrefill!.fromDevice, s2.lastPrefill!.computedTokens], [192, 8]);
    assert.ok(sameBits(device, split), `pool hit differs from the same pieces computed cold by ${maxAbsDiff(device, split)}`);
    // Cold in one 200-row batch vs 192 + 8: the int8 activation math of different batch sizes.
    assert.ok(maxAbsDiff(device, cold) < 0.25, `one batch vs two differ by ${maxAbsDiff(device, cold)}`);
    t.diagnostic(`200 rows at once vs 192 + 8: max |Δ logit| ${maxAbsDiff(device, cold).toExponential(2)}`);
    e.freeSequence(s2);

    const s3 = e.createSequence(256);
    await e.prefill(s3, other); // needs the whole pool: the prompt's cached pages go to host memory
    e.freeSequence(s3);
    assert.ok(e.cacheStats()!.counters.evictions >= 3);
    const s4 = e.createSequence(256);
    const host = await e.prefill(s4, prompt);
    assert.deepEqual([s4.lastPrefill!.fromHost, s4.lastPrefill!.computedTokens], [192, 8]);
    // Pages come back into whatever ids are free: bit-identical when they are consecutive again.
    t.diagnostic(`host hit: pages ${pages(s4)}, max |Δ logit| vs like with like ${maxAbsDiff(host, split).toExponential(2)}`);
    if (consecutive(pages(s4))) assert.ok(sameBits(host, split), `host hit differs by ${maxAbsDiff(host, split)}`);
    else assert.ok(maxAbsDiff(host, split) < 0.25, `host hit differs by ${maxAbsDiff(host, split)}`);
    e.freeSequence(s4);
    await e.flushCache();
  } finally {
    await e.close();
  }
  const child = await runChild({ model, cacheDir: dir, prompt });
  assert.equal(child.report.fromDisk, 192);
  assert.equal(child.report.computedTokens, 8);
  assert.ok(sameBits(child.logits, split), `disk hit after a restart differs by ${maxAbsDiff(child.logits, split)}`);
});

test('CPU backend: sessions on one prefix hold one copy of its pages and answer as if alone', async () => {
  const e = await Engine.load({ model, backend: 'cpu', threads: 1 });
  try {
    const prefix = randomTokens(192, 300, 4000, 31); // 3 pages
    const questions = [1, 2, 3, 4].map((i) => randomTokens(20, 300, 4000, 40 + i));
    const seqs: Sequence[] = [];
    const logits: Float32Array[] = [];
    for (const q of questions) {
      const s = e.createSequence(256);
      logits.push(await e.prefill(s, [...prefix, ...q]));
      seqs.push(s);
    }
    assert.deepEqual(
      seqs.map((s) => s.lastPrefill!.computedTokens),
      [212, 20, 20, 20],
    );
    const shared = pages(seqs[0]).slice(0, 3);
    for (const s of seqs) assert.deepEqual(pages(s).slice(0, 3), shared, 'the same pages, not copies');
    for (const id of shared) assert.equal(e.kvCache!.bm.refCount(id), 4);
    const st = e.cacheStats()!;
    assert.equal(st.pool.used, 3 + 4, '3 shared prefix pages + one tail page per session');
    assert.equal(st.pool.bytes % PAGE, 0);
    const alone = await coldInPieces([prefix, questions[2]]);
    assert.ok(maxAbsDiff(logits[2], alone) < 1e-4, `session 3 differs from its prefix and question computed alone by ${maxAbsDiff(logits[2], alone)}`);
  } finally {
    e.dispose();
  }
});

test('CPU backend: copy-on-write keeps the other session intact; a batched decode step of both equals separate steps', async (t) => {
  const e = await Engine.load({ model, backend: 'cpu', threads: 1 });
  try {
    const base = randomTokens(150, 300, 4000, 51); // page 2 is partial (22 tokens) and will be shared
    const a = e.createSequence(512);
    await e.prefill(a, base);
    const b = e.forkSequence(a);
    assert.deepEqual(pages(b), pages(a));
    const pool = e.kvCache!.pool;
    const before = await Promise.all(pages(a).map((id) => pool.readPage(id)));
    const tb = randomTokens(40, 300, 4000, 52);
    const lb = await e.prefill(b, tb);
    assert.notEqual(pages(b)[2], pages(a)[2], 'the fork copied the shared partial page before writing');
    assert.deepEqual(pages(b).slice(0, 2), pages(a).slice(0, 2), 'full pages stay shared');
    const after = await Promise.all(pages(a).map((id) => pool.readPage(id)));
    after.forEach((bytes, i) => assert.ok(Buffer.from(bytes).equals(Buffer.from(before[i])), `page ${i} of the original changed`));
    assert.ok(e.cacheStats()!.counters.copyOnWrite >= 1);
    const ta = randomTokens(40, 300, 4000, 53);
    const la = await e.prefill(a, ta);
    // a's pages are consecutive (one view): bit for bit; b's copied page is gathered: the sums' order.
    assert.ok(sameBits(la, await coldInPieces([base, ta])), 'original after the fork');
    const lbCold = await coldInPieces([base, tb]);
    assert.ok(maxAbsDiff(lb, lbCold) < 0.25, `fork differs by ${maxAbsDiff(lb, lbCold)}`);
    t.diagnostic(`fork (copied page gathered) vs like with like: max |Δ logit| ${maxAbsDiff(lb, lbCold).toExponential(2)}`);

    // Batched decode (one weight pass for both) vs the same steps one sequence at a time (on forks).
    const a2 = e.forkSequence(a);
    const b2 = e.forkSequence(b);
    const cpu = e.backend as CpuBackend;
    const runs0 = cpu.stats.runs;
    const [da, db] = await e.decodeStep([a, b], [777, 888]);
    assert.equal(cpu.stats.runs - runs0, 2, 'one run of the layers for both sequences, one of the output head');
    const [sa] = await e.decodeStep([a2], [777]);
    const [sb] = await e.decodeStep([b2], [888]);
    t.diagnostic(`batched vs separate decode (int8): max |Δ logit| ${maxAbsDiff(da, sa).toExponential(2)}, ${maxAbsDiff(db, sb).toExponential(2)}`);
    assert.ok(maxAbsDiff(da, sa) < 0.25 && maxAbsDiff(db, sb) < 0.25, `batched vs separate: ${maxAbsDiff(da, sa)}, ${maxAbsDiff(db, sb)}`);
  } finally {
    e.dispose();
  }
});

test('CPU backend (f32 products): a batched decode step of sequences with their own pasts equals separate steps', async (t) => {
  const file = GGUFFile.open(model);
  const backend = new CpuBackend({ threads: 1, precision: 'f32', kv: 'f32' });
  const m = new Transformer(loadTransformerConfig(file), backend);
  m.load(file);
  file.close();
  try {
    const prompts = [randomTokens(70, 300, 4000, 61), randomTokens(5, 300, 4000, 62), randomTokens(130, 300, 4000, 63)];
    // Two contiguous caches per prompt: one decoded in the batch, one alone.
    const kvs = prompts.map((p) => [0, 1].map(() => m.createKV(256)));
    for (const [i, p] of prompts.entries()) {
      for (const kv of kvs[i]) await m.forward({ tokens: Int32Array.from(p), positions: Int32Array.from(p, (_, j) => j), seqs: [{ kv, row: 0, n: p.length, pos: 0 }], logitRows: [p.length - 1] });
    }
    const toks = [901, 902, 903];
    const runs0 = backend.stats.runs;
    const batched = await m.forward({
      tokens: Int32Array.from(toks),
      positions: Int32Array.from(prompts, (p) => p.length),
      seqs: prompts.map((p, i) => ({ kv: kvs[i][0], row: i, n: 1, pos: p.length })),
      logitRows: [0, 1, 2],
    });
    assert.equal(backend.stats.runs - runs0, 2);
    const V = cfg.nVocab;
    for (const [i, p] of prompts.entries()) {
      const alone = await m.forward({ tokens: Int32Array.of(toks[i]), positions: Int32Array.of(p.length), seqs: [{ kv: kvs[i][1], row: 0, n: 1, pos: p.length }], logitRows: [0] });
      const d = maxAbsDiff(batched.subarray(i * V, (i + 1) * V), alone);
      t.diagnostic(`sequence ${i} (${p.length} cached): batched vs alone max |Δ logit| ${d.toExponential(2)}`);
      assert.ok(d < 1e-4, `sequence ${i}: batched vs alone differ by ${d}`);
    }
  } finally {
    backend.dispose();
  }
});

test('CPU backend (f32 products): attention through any page layout equals the contiguous cache', async (t) => {
  const file = GGUFFile.open(model);
  const backend = new CpuBackend({ threads: 1, precision: 'f32', kv: 'f16' });
  const m = new Transformer(loadTransformerConfig(file), backend);
  m.load(file);
  file.close();
  const pool = backend.createKVPool({ nLayers: cfg.nLayers, nKVHeads: cfg.nKVHeads, headDim: cfg.headDim, pageSize: 64, nPages: 16, dtype: 'f16' });
  // A minimal PagedKV: a fixed page table (the engine's manager is not needed to test the backend).
  const paged = (table: number[]) => ({ pool, pageSize: 64, pageTable: Int32Array.from(table), pageTableVersion: 0, length: 0, capacity: table.length * 64, commit(n: number) { this.length = n; }, truncate() {}, free() {} });
  const base = randomTokens(150, 300, 4000, 71);
  const more = randomTokens(40, 300, 4000, 72);
  const run = async (kv: import('../../engine/model/backend.js').KVCache) => {
    await m.forward({ tokens: Int32Array.from(base), positions: Int32Array.from(base, (_, i) => i), seqs: [{ kv, row: 0, n: 150, pos: 0 }], logitRows: [] });
    const l = await m.forward({ tokens: Int32Array.from(more), positions: Int32Array.from(more, (_, i) => 150 + i), seqs: [{ kv, row: 0, n: 40, pos: 150 }], logitRows: [39] });
    const d = await m.forward({ tokens: Int32Array.of(5), positions: Int32Array.of(190), seqs: [{ kv, row: 0, n: 1, pos: 190 }], logitRows: [0] });
    return [l, d];
  };
  try {
    const [lc, dc] = await run(m.createKV(256));
    const [l1, d1] = await run(paged([0, 1, 2]));
    assert.ok(sameBits(l1, lc) && sameBits(d1, dc), 'consecutive pages = the contiguous cache, bit for bit');
    for (const table of [[4, 5, 7], [9, 8, 12], [15, 3, 6]]) {
      const [l, d] = await run(paged(table));
      t.diagnostic(`pages ${table}: max |Δ logit| ${maxAbsDiff(l, lc).toExponential(2)} (prefill), ${maxAbsDiff(d, dc).toExponential(2)} (decode)`);
      assert.ok(maxAbsDiff(l, lc) < 1e-4 && maxAbsDiff(d, dc) < 1e-4, `pages ${table}: ${maxAbsDiff(l, lc)}, ${maxAbsDiff(d, dc)}`);
    }
  } finally {
    backend.dispose();
  }
});
