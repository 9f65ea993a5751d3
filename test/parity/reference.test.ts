// The reference backend (plain TypeScript ops) against llama.cpp on the same synthetic files: this
// proves the transformer itself (graph, RoPE pairing, biases, q/k norms, GQA, tied output) and the
// quantized products' semantics, before any fast backend is compared with either.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ReferenceBackend } from '../../engine/backends/reference/index.js';
import { presetShape, syntheticModel, writeSyntheticModel, type WeightTypeName } from '../../engine/model/synthetic.js';
import { compareWithLlamaCpp } from '../helpers/parity.js';
import { randomTokens, testModel, testModelDir } from '../helpers/models.js';
import { join } from 'node:path';

const ARCHS = ['llama', 'qwen2', 'qwen3'] as const;

for (const arch of ARCHS) {
  test(`${arch} f32: 300-token prompt, 64 greedy tokens identical to llama.cpp, log-probs within 1e-4`, async (t) => {
    const r = await compareWithLlamaCpp(testModel(arch, 'f32'), new ReferenceBackend(), randomTokens(300, 300, 4000, 7), 64);
    t.diagnostic(JSON.stringify({ maxLogprobDiff: r.maxLogprobDiff, exactSteps: r.exactSteps, worstMargin: r.worstMargin, firstDivergence: r.firstDivergence }));
    assert.ok(r.maxLogprobDiff < 1e-4, `log-probabilities differ by ${r.maxLogprobDiff}`);
    assert.equal(r.exactSteps, 64, `diverged at step ${r.firstDivergence}`);
  });
}

// One layer, short prompt: no room for rounding cascades, so emulating llama.cpp's 8-bit activation
// quantization (ggml-cpu numerics) must reproduce its log-probabilities almost exactly. This pins the
// semantics of every quantized product (which activation format goes with which weight type).
const ONE_LAYER_TOL: Record<string, number> = { q8_0: 1e-4, q4_0: 1e-4, q4_k: 1e-4, q6_k: 1e-4, bf16: 1e-4, f16: 2e-3 };
for (const type of Object.keys(ONE_LAYER_TOL) as WeightTypeName[]) {
  test(`one-layer qwen2 ${type}: ggml-cpu numerics reproduce llama.cpp's log-probs (tolerance ${ONE_LAYER_TOL[type]})`, async (t) => {
    const path = join(testModelDir(), `qwen2-1layer-${type}.gguf`);
    writeSyntheticModel(path, syntheticModel({ arch: 'qwen2', shape: { ...presetShape('qwen2', 'tiny'), nLayers: 1 }, type, seed: 5 }));
    const r = await compareWithLlamaCpp(path, new ReferenceBackend({ numerics: 'ggml-cpu', kvType: 'f32' }), randomTokens(12, 300, 4000, 3), 8);
    t.diagnostic(JSON.stringify({ maxLogprobDiff: r.maxLogprobDiff, exactSteps: r.exactSteps, worstMargin: r.worstMargin, firstDivergence: r.firstDivergence }));
    assert.ok(r.maxLogprobDiff < ONE_LAYER_TOL[type], `log-probabilities differ by ${r.maxLogprobDiff}`);
    assert.equal(r.exactSteps, 8);
  });
}

// Whole models with quantized weights: teacher-forced greedy agreement (see test/helpers/parity.ts).
const CASES: [(typeof ARCHS)[number], WeightTypeName, boolean][] = [
  ['llama', 'q8_0', false],
  ['qwen2', 'q4_k', true],
  ['qwen3', 'q6_k', false],
  ['llama', 'f16', false],
];
for (const [arch, type, q4km] of CASES) {
  test(`${arch} ${q4km ? 'Q4_K_M' : type}: 64 teacher-forced greedy steps agree with llama.cpp but for near-ties`, async (t) => {
    const r = await compareWithLlamaCpp(testModel(arch, type, { q4km }), new ReferenceBackend({ numerics: 'ggml-cpu', kvType: 'f32' }), randomTokens(300, 300, 4000, 7), 64);
    t.diagnostic(JSON.stringify({ maxLogprobDiff: r.maxLogprobDiff, exactSteps: r.exactSteps, worstMargin: r.worstMargin, firstDivergence: r.firstDivergence }));
    assert.ok(r.maxLogprobDiff < 0.25, `log-probabilities differ by ${r.maxLogprobDiff}`);
    assert.ok(r.worstMargin < 0.25, `preferred another token by a logit margin of ${r.worstMargin}`);
    assert.ok(r.exactSteps >= 58, `only ${r.exactSteps}/64 steps agree`);
  });
}
