// The CPU backend (onnxruntime) on paged KV — its own pool once it offers createKVPool, until then
// engine/kv's HostKVPool through the host surface (kv.paging 'host': write/keys/values, README.md):
// the same logits as its contiguous cache, and prefix hits on it.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Engine } from '../../engine/engine.js';
import { randomTokens, testModel } from '../helpers/models.js';
import { maxAbsDiff } from './helpers.js';

const model = testModel('qwen2', 'f32');

async function cpuAvailable(): Promise<boolean> {
  try {
    await import('onnxruntime-node');
    return true;
  } catch {
    return false;
  }
}

test('CPU backend: paged KV gives its contiguous logits; a second session hits the prefix', { skip: (await cpuAvailable()) ? false : 'onnxruntime-node is not available' }, async (t) => {
  const prompt = randomTokens(300, 300, 4000, 111);
  const plain = await Engine.load({ model, backend: 'cpu', threads: 1, kv: { paging: 'off' } });
  // Its own pool once it offers one (README.md), else engine/kv's host pool through the host surface.
  const paged = await Engine.load({ model, backend: 'cpu', threads: 1, kv: { paging: plain.backend.createKVPool ? 'auto' : 'host' } });
  try {
    const a = plain.createSequence(512);
    const la = await plain.prefill(a, prompt);
    const b = paged.createSequence(512);
    let lb: Float32Array;
    try {
      lb = await paged.prefill(b, prompt);
    } catch (e) {
      if (!paged.backend.createKVPool && /paged KV/.test((e as Error).message)) {
        t.skip(`the CPU backend refuses paged KV until it offers createKVPool (${(e as Error).message})`);
        return;
      }
      throw e;
    }
    assert.ok(maxAbsDiff(la, lb) < 1e-5, `prefill differs by ${maxAbsDiff(la, lb)}`);
    const [da] = await plain.decodeStep([a], [1234]);
    const [db] = await paged.decodeStep([b], [1234]);
    assert.ok(maxAbsDiff(da, db) < 1e-5, `decode differs by ${maxAbsDiff(da, db)}`);
    const c = paged.createSequence(512);
    const lc = await paged.prefill(c, [...prompt, 1234]);
    assert.deepEqual([c.lastPrefill!.fromDevice, c.lastPrefill!.computedTokens], [256, 45]);
    assert.ok(maxAbsDiff(lc, db) < 1e-3, `prefix hit differs by ${maxAbsDiff(lc, db)}`);
  } finally {
    plain.dispose();
    paged.dispose();
  }
});
