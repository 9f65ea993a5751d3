// The disk tier under faults: a flipped byte in a stored page is detected and the page recomputed;
// a cache written for another model or RoPE setting never matches; a full disk warns once and the
// engine keeps working from memory; the size cap holds; int8 storage reports its error; `repokv cache`
// stats/gc/purge; and kill -9 of a process while it persists (at random moments) leaves a store that
// opens cleanly and never serves a wrong page.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { Engine, type KVOptions } from '../../engine/engine.js';
import { main } from '../../engine/cli.js';
import { listStores } from '../../engine/kv/disk-store.js';
import { randomTokens } from '../helpers/models.js';
import { canMountTmpfs, maxAbsDiff, microModel, runChild, sameBits, spawnChild, tempDir } from './helpers.js';

const model = microModel();

async function prefillOnce(m: string, prompt: number[], kv: KVOptions): Promise<{ logits: Float32Array; report: NonNullable<import('../../engine/engine.js').Sequence['lastPrefill']>; warnings: string[]; engine: Engine }> {
  const warnings: string[] = [];
  const engine = await Engine.load({ model: m, backend: 'reference', prefillChunk: 256, kv: { onWarning: (w) => warnings.push(w), ...kv } });
  const seq = engine.createSequence(prompt.length + 8);
  const logits = await engine.prefill(seq, prompt);
  return { logits, report: seq.lastPrefill!, warnings, engine };
}

async function cold(m: string, prompt: number[]): Promise<Float32Array> {
  const r = await prefillOnce(m, prompt, { prefixCaching: false });
  r.engine.dispose();
  return r.logits;
}

async function persist(m: string, prompt: number[], kv: KVOptions) {
  const r = await prefillOnce(m, prompt, kv);
  await r.engine.close();
  return r;
}

test('a flipped byte in a stored page is detected, the page recomputed (same logits) and stored again', async () => {
  const dir = tempDir('flip');
  const prompt = randomTokens(300, 300, 4000, 91); // 4 full pages
  const first = await persist(model, prompt, { cacheDir: dir });
  const [store] = listStores(dir);
  const file = join(store, 'kv.sqlite');
  assert.ok(!existsSync(`${file}-wal`) || readFileSync(`${file}-wal`).length === 0, 'closed stores are checkpointed');
  // Find page 1's payload in the database file itself and flip one bit in the middle of it.
  const db = new Database(file, { readonly: true });
  const blob = db.prepare('SELECT b.data FROM pages p JOIN blobs b ON b.id = p.blob_id WHERE p.page_index = 1').pluck().get() as Buffer;
  db.close();
  const raw = readFileSync(file);
  const at = raw.indexOf(blob.subarray(1000, 1064));
  assert.ok(at > 0, 'payload found in the file');
  raw[at + 10] ^= 0x10;
  writeFileSync(file, raw);

  const second = await prefillOnce(model, prompt, { cacheDir: dir });
  assert.equal(second.report.fromDisk, 64, 'page 0 restored, the chain stops at the damaged page 1');
  assert.equal(second.report.computedTokens, 300 - 64);
  assert.ok(sameBits(second.logits, first.logits));
  assert.equal(second.engine.cacheStats()!.disk!.corruptPages, 1);
  await second.engine.close();
  const third = await persist(model, prompt, { cacheDir: dir });
  assert.equal(third.report.fromDisk, 256, 'the recomputed page was stored again');
  assert.ok(sameBits(third.logits, first.logits));
});

test('a cache written for another model or another RoPE setting never matches', async () => {
  const dir = tempDir('other');
  const prompt = randomTokens(200, 300, 4000, 92);
  await persist(model, prompt, { cacheDir: dir });
  const otherWeights = await persist(microModel({ seed: 2 }), prompt, { cacheDir: dir });
  assert.equal(otherWeights.report.cachedTokens, 0);
  const otherRope = await persist(microModel({ ropeFreqBase: 10000 }), prompt, { cacheDir: dir });
  assert.equal(otherRope.report.cachedTokens, 0);
  assert.ok(sameBits(otherRope.logits, await cold(microModel({ ropeFreqBase: 10000 }), prompt)));
  const otherKV = await persist(model, prompt, { cacheDir: dir, dtype: 'f32' });
  assert.equal(otherKV.report.cachedTokens, 0);
  assert.equal(listStores(dir).length, 4, 'one store per fingerprint');
  const same = await persist(model, prompt, { cacheDir: dir });
  assert.equal(same.report.fromDisk, 192);
});

test('a full disk gives one warning and the engine keeps working from memory', async () => {
  const dir = tempDir('full');
  const prompt = randomTokens(700, 300, 4000, 93); // 10 full pages of 16 KiB on disk
  // SQLite refuses to grow the file past ~100 KiB: SQLITE_FULL, exactly as a full disk.
  const r = await prefillOnce(model, prompt, { cacheDir: dir, diskHardLimitBytes: 100 * 1024 });
  await r.engine.flushCache();
  const more = r.engine.createSequence(1024);
  const again = await r.engine.prefill(more, [...prompt, 5, 6, 7]);
  assert.equal(more.lastPrefill!.fromDevice, 640, 'the pool still serves the pages');
  await r.engine.prefill(r.engine.createSequence(1024), randomTokens(300, 300, 4000, 94));
  await r.engine.close();
  assert.equal(r.warnings.length, 1, r.warnings.join('\n'));
  assert.match(r.warnings[0], /disk holding the KV cache .* is full/);
  assert.ok(sameBits(r.logits, await cold(model, prompt)));
  assert.ok(sameBits(again, await cold(model, [...prompt, 5, 6, 7])));
  // What did fit on disk is intact and used.
  const after = await persist(model, prompt, { cacheDir: dir });
  assert.ok(after.report.fromDisk >= 64 && after.report.fromDisk < 640, `fromDisk ${after.report.fromDisk}`);
  assert.ok(sameBits(after.logits, r.logits));
});

test('a real full disk (a 160 KiB tmpfs): ENOSPC gives one warning, the answer is unchanged', { skip: canMountTmpfs() ? false : 'cannot mount a tmpfs here' }, async () => {
  const dir = tempDir('tmpfs');
  const prompt = randomTokens(900, 300, 4000, 99); // 14 pages of 16 KiB: more than fits
  const r = await runChild({ model, cacheDir: dir, prompt }, { tmpfsBytes: 160 * 1024 });
  assert.equal(r.warnings.length, 1, r.warnings.join('\n'));
  assert.match(r.warnings[0], /is full/);
  assert.ok(sameBits(r.logits, await cold(model, prompt)));
});

test('the size cap holds: least recently used pages are collected', async () => {
  const dir = tempDir('cap');
  const page = 2 * 2 * 64 * 32 * 2; // micro model: 16 KiB per stored page
  const r = await prefillOnce(model, randomTokens(1100, 300, 4000, 95), { cacheDir: dir, maxDiskBytes: 6 * page });
  await r.engine.flushCache();
  const st = r.engine.cacheStats()!.disk!;
  await r.engine.close();
  assert.ok(st.payloadBytes <= 6 * page, `payload ${st.payloadBytes}`);
  assert.ok(st.pages >= 1);
});

test('int8 storage: smaller pages on disk, close logits, and its error reported', async () => {
  const dir = tempDir('int8');
  const prompt = randomTokens(400, 300, 4000, 96);
  const first = await persist(model, prompt, { cacheDir: dir, storage: 'int8' });
  const again = await prefillOnce(model, prompt, { cacheDir: dir, storage: 'int8' });
  const st = again.engine.cacheStats()!.disk!;
  await again.engine.close();
  assert.equal(again.report.fromDisk, 384);
  assert.ok(st.payloadBytes < 6 * 2 * 2 * 64 * 32 * 2 * 0.55, `payload ${st.payloadBytes}`);
  assert.ok(st.meanRelError > 0 && st.meanRelError < 0.01, `error ${st.meanRelError}`);
  const d = maxAbsDiff(again.logits, first.logits);
  assert.ok(d > 0 && d < 0.05, `logits differ by ${d}`);
});

async function cli(args: string[]): Promise<unknown> {
  const lines: string[] = [];
  const log = console.log;
  console.log = (s: string) => lines.push(s);
  try {
    assert.equal(await main(args), 0);
  } finally {
    console.log = log;
  }
  return JSON.parse(lines.join('\n'));
}

test('repokv cache stats | gc | purge', async () => {
  const dir = tempDir('cli');
  await persist(model, randomTokens(300, 300, 4000, 97), { cacheDir: dir });
  await persist(microModel({ seed: 2 }), randomTokens(200, 300, 4000, 98), { cacheDir: dir });
  const stats = (await cli(['cache', 'stats', '--dir', dir, '--json'])) as { stores: { pages: number; tokens: number; model: string }[] };
  assert.deepEqual(stats.stores.map((s) => s.pages).sort(), [3, 4]);
  const gc = (await cli(['cache', 'gc', '--dir', dir, '--max-bytes', String(2 * 16384), '--verify', '--json'])) as { stores: { removedPages: number }[] };
  assert.deepEqual(gc.stores.map((s) => s.removedPages).sort(), [1, 2]);
  const purged = (await cli(['cache', 'purge', '--dir', dir, '--model', model, '--json'])) as { removed: string[] };
  assert.equal(purged.removed.length, 1);
  assert.equal(listStores(dir).length, 1);
  await cli(['cache', 'purge', '--dir', dir, '--json']);
  assert.equal(existsSync(dir), false);
});

test('kill -9 while persisting, at random moments: the store opens cleanly and never serves a wrong page', async () => {
  const dir = tempDir('kill');
  const n = 1024; // 16 pages per prompt
  const checked = new Set<number>();
  let seed = 1000;
  for (let round = 0; round < 3; round++, seed += 100) {
    const child = spawnChild({ mode: 'persist-loop', model, cacheDir: dir, seed, n });
    let started = -1;
    let buf = '';
    let stderr = '';
    child.stderr!.on('data', (d) => (stderr += d));
    await new Promise<void>((resolve, reject) => {
      child.stdout!.on('data', (d) => {
        buf += d;
        const lines = buf.split('\n');
        buf = lines.pop()!;
        for (const l of lines) started = Math.max(started, JSON.parse(l).started);
        if (started >= 1) resolve();
      });
      child.on('exit', (code) => reject(new Error(`child ended early (${code}): ${stderr}`)));
    });
    // Somewhere inside the next prompt's compute-and-persist.
    await new Promise((r) => setTimeout(r, Math.floor(Math.random() * 500)));
    child.kill('SIGKILL');
    await new Promise((r) => child.once('exit', r));
    const [store] = listStores(dir);
    const db = new Database(join(store, 'kv.sqlite'));
    assert.equal(db.pragma('integrity_check', { simple: true }), 'ok');
    db.close();
    // Every prompt the child started, restored from this store, gives exactly the cold logits.
    for (let i = 0; i <= started; i++) {
      if (checked.has(seed + i)) continue;
      checked.add(seed + i);
      const prompt = randomTokens(n, 300, 4000, seed + i);
      const r = await prefillOnce(model, prompt, { cacheDir: dir });
      r.engine.dispose();
      assert.equal(r.engine.cacheStats, r.engine.cacheStats);
      assert.ok(sameBits(r.logits, await cold(model, prompt)), `round ${round}, prompt ${i}: ${r.report.fromDisk} tokens from disk`);
      if (i < started) assert.ok(r.report.fromDisk > 0, `round ${round}, prompt ${i} was persisted`);
    }
  }
  assert.ok(readdirSync(dir).length === 1);
});
