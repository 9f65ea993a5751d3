// The paged KV cache through the Engine API on the WebGPU backend (its own page pool in GPU memory),
// as test/kv/engine-cache.test.ts does for the reference backend: the same prompt gives bit-identical
// logits computed cold, from a pool hit, after an eviction to host memory and a writePage restore, and
// from disk in a new engine; forked sessions copy pages on the GPU (copyPage) and stay exact; and the
// logits stay within 1e-4 of the reference backend's (same f16 pages, f32 arithmetic in another order).

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Engine, type EngineOptions } from '../../engine/engine.js';
import { PagedSequenceKV } from '../../engine/kv/paged-kv.js';
import { GpuKVPool } from '../../engine/backends/webgpu/kv-pool.js';
import { randomTokens } from '../helpers/models.js';
import { maxAbsDiff, microModel, sameBits, tempDir } from '../kv/helpers.js';

const model = microModel();
// Micro model pages: 2 layers × 64 tokens × 32 values × 2 (K, V) × 2 bytes (f16) = 16 KiB.
const PAGE_BYTES = 16 * 1024;
const gpu = (kv: EngineOptions['kv'] = {}): Promise<Engine> => Engine.load({ model, backend: 'webgpu', allowSoftwareGpu: true, kv });

async function coldLogits(tokens: number[], backend: 'webgpu' | 'reference' = 'webgpu'): Promise<Float32Array> {
  const e = await Engine.load({ model, backend, allowSoftwareGpu: true, kv: { prefixCaching: false } });
  try {
    return await e.prefill(e.createSequence(tokens.length + 8), tokens);
  } finally {
    e.dispose();
  }
}

test('identical logits: cold, pool hit, host-memory hit (writePage), disk hit in a new engine; near the reference backend', async () => {
  const dir = tempDir('webgpu-tiers');
  const prompt = randomTokens(212, 300, 4000, 21); // 3 full pages + 20 tokens
  const other = randomTokens(256, 300, 4000, 22);
  const e = await gpu({ cacheDir: dir, memoryBytes: 4 * PAGE_BYTES });
  try {
    assert.ok(e.kvCache!.pool instanceof GpuKVPool, 'the engine pages through the GPU pool');
    assert.equal(e.cacheStats()!.pool.pages, 4);
    const s1 = e.createSequence(256);
    const cold = await e.prefill(s1, prompt);
    assert.deepEqual([s1.lastPrefill!.cachedTokens, s1.lastPrefill!.computedTokens], [0, 212]);
    e.freeSequence(s1);

    const s2 = e.createSequence(256);
    const device = await e.prefill(s2, prompt);
    assert.deepEqual([s2.lastPrefill!.fromDevice, s2.lastPrefill!.computedTokens], [192, 20]);
    assert.ok(sameBits(device, cold), `pool hit differs by ${maxAbsDiff(device, cold)}`);
    e.freeSequence(s2);

    const s3 = e.createSequence(256);
    await e.prefill(s3, other); // needs the whole pool: the prompt's pages go down to host memory
    e.freeSequence(s3);
    assert.ok(e.cacheStats()!.counters.evictions >= 3);
    const s4 = e.createSequence(256);
    const host = await e.prefill(s4, prompt);
    assert.deepEqual([s4.lastPrefill!.fromHost, s4.lastPrefill!.computedTokens], [192, 20]);
    assert.ok(sameBits(host, cold), `host hit (writePage) differs by ${maxAbsDiff(host, cold)}`);
    await e.flushCache();
  } finally {
    await e.close();
  }
  const e2 = await gpu({ cacheDir: dir });
  try {
    const s = e2.createSequence(256);
    const disk = await e2.prefill(s, prompt);
    assert.deepEqual([s.lastPrefill!.fromDisk, s.lastPrefill!.computedTokens], [192, 20]);
    assert.ok(sameBits(disk, await coldLogits(prompt)), 'disk hit in a new engine');
  } finally {
    await e2.close();
  }
  const ref = await coldLogits(prompt, 'reference');
  const scale = ref.reduce((m, x) => Math.max(m, Math.abs(x)), 0);
  const d = maxAbsDiff(await coldLogits(prompt), ref);
  console.log(`# webgpu paged vs reference paged (f16 pages) logits: max |Δ| ${d.toExponential(2)} of max |logit| ${scale.toFixed(2)}`);
  assert.ok(d / scale < 1e-4);
});

test('fork and copy-on-write on the GPU: the original never changes, both stay exact, batched decode too', async () => {
  const e = await gpu();
  try {
    const base = randomTokens(150, 300, 4000, 51); // page 2 is partial (22 tokens), shared by the fork
    const a = e.createSequence(512);
    await e.prefill(a, base);
    const b = e.forkSequence(a);
    const pagesOf = (s: typeof a) => (s.kv as PagedSequenceKV).pages.slice();
    const pool = e.kvCache!.pool;
    const before = await Promise.all(pagesOf(a).map((id) => pool.readPage(id)));
    const tb = randomTokens(40, 300, 4000, 52);
    const lb = await e.prefill(b, tb);
    assert.notEqual(pagesOf(b)[2], pagesOf(a)[2], 'the fork copied the shared partial page before writing');
    const after = await Promise.all(pagesOf(a).map((id) => pool.readPage(id)));
    after.forEach((bytes, i) => assert.ok(Buffer.from(bytes).equals(Buffer.from(before[i])), `page ${i} of the original changed`));
    const ta = randomTokens(40, 300, 4000, 53);
    const la = await e.prefill(a, ta);
    assert.ok(sameBits(la, await coldLogits([...base, ...ta])), 'original after the fork');
    assert.ok(sameBits(lb, await coldLogits([...base, ...tb])), 'fork');
    const [da, db] = await e.decodeStep([a, b], [777, 888]);
    const ca = await coldLogits([...base, ...ta, 777]);
    const cb = await coldLogits([...base, ...tb, 888]);
    // A decode row (split-K kernel, one-row matmuls) against a prefill row (flash, tiled matmuls).
    assert.ok(maxAbsDiff(da, ca) < 1e-4 && maxAbsDiff(db, cb) < 1e-4, `decode vs prefill: ${maxAbsDiff(da, ca)}, ${maxAbsDiff(db, cb)}`);
  } finally {
    e.dispose();
  }
});
