// The CPU backend runs whole synthetic models: against the reference backend (same transformer, plain
// TypeScript ops) at precision 'f32' (exact products) and at the default 'int8', for each arch.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { CpuBackend } from '../../engine/backends/cpu/index.js';
import { ReferenceBackend } from '../../engine/backends/reference/index.js';
import { randomTokens, testModel } from '../helpers/models.js';
import { runGreedy } from '../helpers/run-model.js';

function maxAbsDiff(a: Float64Array, b: Float64Array): number {
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]));
  return m;
}

for (const arch of ['llama', 'qwen2', 'qwen3'] as const) {
  test(`cpu backend (f32, f32 KV) = reference backend: ${arch} q8_0`, async () => {
    const model = testModel(arch, 'q8_0');
    const prompt = randomTokens(40, 300, 4000, 3);
    const cpu = new CpuBackend({ threads: 1, precision: 'f32', kv: 'f32' });
    const ours = await runGreedy(model, cpu, prompt, 8, 16);
    cpu.dispose();
    const ref = await runGreedy(model, new ReferenceBackend(), prompt, 8, 16);
    const d = maxAbsDiff(ours.lastLogprobs, ref.lastLogprobs);
    assert.ok(d < 1e-3, `log-prob difference ${d}`);
    assert.deepEqual(ours.generated, ref.generated);
  });
}

test('a step split into memory-capped graphs (graphBytes) gives the logits of one graph', async () => {
  const model = testModel('qwen2', 'q8_0');
  const prompt = randomTokens(40, 300, 4000, 4);
  const one = new CpuBackend({ threads: 1, precision: 'f32', graphBytes: Infinity });
  const a = await runGreedy(model, one, prompt, 6, 16);
  const oneGraphs = one.stats.segments;
  one.dispose();
  // ~1/4 of the layers' weights per graph (the tiny model holds ~1 MB of f32 products per layer).
  const split = new CpuBackend({ threads: 1, precision: 'f32', graphBytes: 1.5 * 2 ** 20 });
  const b = await runGreedy(model, split, prompt, 6, 16);
  const splitGraphs = split.stats.segments;
  split.dispose();
  assert.ok(splitGraphs >= oneGraphs + 2, `${splitGraphs} graphs split vs ${oneGraphs}`);
  assert.ok(maxAbsDiff(a.lastLogprobs, b.lastLogprobs) < 1e-5, `log-prob difference ${maxAbsDiff(a.lastLogprobs, b.lastLogprobs)}`);
  assert.deepEqual(a.generated, b.generated);
});
