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
