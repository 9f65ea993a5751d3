// The paged KV cache through the Engine API on the reference backend: the same prompt gives
// bit-identical logits whether its KV is computed, found in the pool, brought back from host memory,
// or read from disk by a new process; sessions share prefix pages by reference; copy-on-write keeps
// every other session's KV intact; multi-turn, retry (truncate) and fork compute only what is new.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Engine, type Sequence } from '../../engine/engine.js';
import { PagedSequenceKV } from '../../engine/kv/paged-kv.js';
import { randomTokens, testModel } from '../helpers/models.js';
import { maxAbsDiff, microModel, runChild, sameBits, tempDir } from './helpers.js';

const tiny = testModel('qwen2', 'f32');

function pages(seq: Sequence): number[] {
  return (seq.kv as PagedSequenceKV).pages.slice();
}

test('identical logits: computed cold, from the pool, from host memory, and from disk in a new process', async () => {
  const dir = tempDir('tiers');
  const prompt = randomTokens(200, 300, 4000, 21); // 3 full pages + 8 tokens
  const other = randomTokens(256, 300, 4000, 22);
  // A pool of 4 pages (256 KiB each on this model: f32 values in host memory), so one other prompt
  // pushes the cached pages down to the host tier.
  const e = await Engine.load({ model: tiny, backend: 'reference', kv: { cacheDir: dir, memoryBytes: 4 * 256 * 1024 } });
  try {
    assert.equal(e.cacheStats()!.pool.pages, 4);
    const s1 = e.createSequence(256);
    const cold = await e.prefill(s1, prompt);
    assert.deepEqual([s1.lastPrefill!.cachedTokens, s1.lastPrefill!.computedTokens], [0, 200]);
    e.freeSequence(s1);

    const s2 = e.createSequence(256);
    const device = await e.prefill(s2, prompt);
    assert.deepEqual([s2.lastPrefill!.fromDevice, s2.lastPrefill!.computedTokens], [192, 8]);
    assert.ok(sameBits(device, cold), `pool hit differs by ${maxAbsDiff(device, cold)}`);
    e.freeSequence(s2);

    const s3 = e.createSequence(256);
    await e.prefill(s3, other); // needs the whole pool: the prompt's cached pages go to host memory
    e.freeSequence(s3);
    assert.ok(e.cacheStats()!.counters.evictions >= 3);
    const s4 = e.createSequence(256);
    const host = await e.prefill(s4, prompt);
    assert.deepEqual([s4.lastPrefill!.fromHost, s4.lastPrefill!.computedTokens], [192, 8]);
    assert.ok(sameBits(host, cold), `host hit differs by ${maxAbsDiff(host, cold)}`);
    e.freeSequence(s4);
    await e.flushCache();
  } finally {
    await e.close();
  }
  const child = await runChild({ model: tiny, cacheDir: dir, prompt });
  assert.equal(child.report.fromDisk, 192);
  assert.equal(child.report.computedTokens, 8);
  assert.ok(sameBits(child.logits, await coldLogits(tiny, prompt)), 'disk hit after a restart differs');
});

async function coldLogits(model: string, prompt: number[]): Promise<Float32Array> {
  const e = await Engine.load({ model, backend: 'reference', kv: { prefixCaching: false } });
  try {
    return await e.prefill(e.createSequence(prompt.length + 8), prompt);
  } finally {
    e.dispose();
  }
}

test('multi-request: sessions on one prefix hold one copy of its pages (counted) and answer as if alone', async () => {
  const e = await Engine.load({ model: tiny, backend: 'reference' });
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
    const cache = e.kvCache!;
    for (const id of shared) assert.equal(cache.bm.refCount(id), 4);
    const st = e.cacheStats()!;
    assert.equal(st.pool.used, 3 + 4, '3 shared prefix pages + one tail page per session');
    assert.ok(sameBits(logits[2], await coldLogits(tiny, [...prefix, ...questions[2]])));
  } finally {
    e.dispose();
  }
});

test('copy-on-write: a fork writing into a shared page never changes the other session, and both stay exact', async () => {
  const model = microModel();
  const e = await Engine.load({ model, backend: 'reference' });
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
    assert.ok(sameBits(la, await coldLogits(model, [...base, ...ta])), 'original after the fork');
    assert.ok(sameBits(lb, await coldLogits(model, [...base, ...tb])), 'fork');
    // Decoding on both (batched) also leaves each exact.
    const [da, db] = await e.decodeStep([a, b], [777, 888]);
    assert.ok(sameBits(da, await coldLogits(model, [...base, ...ta, 777])));
    assert.ok(sameBits(db, await coldLogits(model, [...base, ...tb, 888])));
  } finally {
    e.dispose();
  }
});

test('multi-turn: a turn computes only its own tokens; a retried turn only the retry; a new session restores the conversation', async () => {
  const model = microModel();
  const e = await Engine.load({ model, backend: 'reference' });
  try {
    const repo = randomTokens(300, 300, 4000, 61);
    const s = e.createSequence(1024);
    let logits = await e.prefill(s, repo);
    const answer: number[] = [];
    const gen = e.generate(s, logits, { maxTokens: 20, stopAtEog: false });
    for (let r = await gen.next(); !r.done; r = await gen.next()) if (r.value.token >= 0) answer.push(r.value.token);
    const turn2 = randomTokens(50, 300, 4000, 62);
    const at = s.length;
    logits = await e.prefill(s, turn2);
    assert.deepEqual([s.lastPrefill!.cachedTokens, s.lastPrefill!.computedTokens], [0, 50], 'nothing before the turn is recomputed');
    // Retry the turn with other words: only the retried turn is computed.
    s.truncate(at);
    const retry = randomTokens(45, 300, 4000, 63);
    const lr = await e.prefill(s, retry);
    assert.equal(s.lastPrefill!.computedTokens, 45);
    const convo = s.tokens.slice();
    assert.ok(sameBits(lr, await coldLogits(model, convo)), 'the retried turn equals a fresh computation');
    // A new session (another window, same conversation) restores every full page and computes the rest.
    const s2 = e.createSequence(1024);
    const l2 = await e.prefill(s2, convo);
    const full = Math.floor((convo.length - 1) / 64) * 64;
    assert.equal(s2.lastPrefill!.cachedTokens, full);
    assert.equal(s2.lastPrefill!.computedTokens, convo.length - full);
    assert.ok(sameBits(l2, lr));
  } finally {
    e.dispose();
  }
});

test('a prompt whose every page is cached recomputes only its last token (copy-on-write of the last page)', async () => {
  const model = microModel();
  const e = await Engine.load({ model, backend: 'reference' });
  try {
    const p = randomTokens(128, 300, 4000, 71);
    const cold = await e.prefill(e.createSequence(256), p);
    const s = e.createSequence(256);
    const hit = await e.prefill(s, p);
    assert.deepEqual([s.lastPrefill!.cachedTokens, s.lastPrefill!.computedTokens], [127, 1]);
    assert.ok(sameBits(hit, cold));
    // The recomputed page equals the cached one, so the session ends up sharing it again.
    assert.equal(e.kvCache!.bm.refCount(pages(s)[1]), 2);
  } finally {
    e.dispose();
  }
});

test('the pool budget holds: live sessions beyond it fail with a clear message, cached pages are reused', async () => {
  const model = microModel();
  // Micro model pages: 2 layers × 64 tokens × 32 values × 2 (K,V) × 4 bytes = 32 KiB in host memory.
  const e = await Engine.load({ model, backend: 'reference', kv: { memoryBytes: 3 * 32 * 1024 } });
  try {
    assert.equal(e.cacheStats()!.pool.pages, 3);
    const a = e.createSequence(1024);
    await e.prefill(a, randomTokens(150, 300, 4000, 81));
    await assert.rejects(e.prefill(e.createSequence(1024), randomTokens(100, 300, 4000, 82)), /KV memory budget .* is taken by live sequences/);
    assert.ok(e.cacheStats()!.pool.bytes <= 3 * 32 * 1024);
  } finally {
    e.dispose();
  }
});

test('eviction: a freed request loses its tail page first, down to host memory, and a hit moves it back up', async () => {
  const model = microModel();
  const e = await Engine.load({ model, backend: 'reference', kv: { memoryBytes: 5 * 32 * 1024 } });
  try {
    const p = randomTokens(266, 300, 4000, 91); // 4 full pages + 10 tokens = 5 pages
    const a = e.createSequence(512);
    const cold = await e.prefill(a, p);
    const tail = (a.kv as PagedSequenceKV).hashes[3];
    e.freeSequence(a);
    const b = e.createSequence(512);
    await e.prefill(b, randomTokens(100, 300, 4000, 92)); // 2 pages: the free one, then one eviction
    const cache = e.kvCache!;
    assert.equal(cache.counters.evictions, 1);
    assert.ok(cache.host.has(tail), "the request's last full page was evicted first");
    e.freeSequence(b);
    const c = e.createSequence(512);
    const again = await e.prefill(c, p);
    assert.deepEqual([c.lastPrefill!.fromDevice, c.lastPrefill!.fromHost, c.lastPrefill!.computedTokens], [192, 64, 10]);
    assert.equal(cache.host.has(tail), false, 'moved up, not copied');
    assert.ok(sameBits(again, cold));
  } finally {
    e.dispose();
  }
});
