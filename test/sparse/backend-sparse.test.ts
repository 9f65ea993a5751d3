// Sparse prefill through the Engine API on real backends (issue 8): AttentionParams.sparse on the CPU
// backend (attention outside the step graphs, host-attention.ts) against the reference backend's sparse
// path (tokenMajorSparse → attentionRef keep), a 'dense' pattern against the dense path, and the
// engine's switch (threshold, chunking, report).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Engine, type EngineOptions } from '../../engine/engine.js';
import { defaultSparseConfig, type SparseModelConfig } from '../../engine/attention/sparse/config.js';
import type { SparsePattern } from '../../engine/attention/sparse/patterns.js';
import { randomTokens, testModel } from '../helpers/models.js';
import type { CpuBackend } from '../../engine/backends/cpu/index.js';

const model = testModel('qwen2', 'f32', { size: 'tiny', seed: 3 });

function cfgOf(e: Engine, p: (l: number, h: number) => SparsePattern, threshold: number): SparseModelConfig {
  const c = defaultSparseConfig('test', e.config.nLayers, e.config.nHeads, threshold);
  c.heads = c.heads.map((l, li) => l.map((_, h) => p(li, h)));
  return c;
}

async function logitsOf(opts: EngineOptions, tokens: number[]): Promise<{ logits: Float32Array; sparse: boolean; stats: unknown }> {
  const e = await Engine.load(opts);
  try {
    // Exact sparse semantics (no dense fallback for dense-ish heads), as the reference computes.
    if (e.backend.info.name === 'cpu') Object.assign((e.backend as CpuBackend).host, { denseAbove: 1, block: 64 });
    const seq = e.createSequence();
    const logits = await e.prefill(seq, tokens);
    const next = await e.decodeStep([seq], [tokens[0]]); // a dense decode step after a sparse prefill
    return { logits: Float32Array.from([...logits, ...next[0]]), sparse: !!seq.lastPrefill?.sparse, stats: e.backend.sparseStats ? { ...e.backend.sparseStats } : null };
  } finally {
    e.dispose();
  }
}

function maxDiff(a: Float32Array, b: Float32Array): number {
  assert.equal(a.length, b.length);
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]));
  return m;
}

const mixed = (l: number, h: number): SparsePattern =>
  [
    { kind: 'vertical-slash', vertical: 30, slash: 100 } as SparsePattern,
    { kind: 'a-shape', sink: 64, local: 128 } as SparsePattern,
    { kind: 'block-sparse', blocks: 2 } as SparsePattern,
    { kind: 'dense' } as SparsePattern,
  ][(l + h) % 4];

test('CPU backend sparse prefill equals the reference backend sparse path (mixed patterns, chunks after a prefix)', async (t) => {
  const tokens = randomTokens(700, 3, 200, 7);
  const probe = await Engine.load({ model, backend: 'reference' });
  const cfg = cfgOf(probe, mixed, 256);
  probe.dispose();
  const common = { model, contextSize: 1024, sparse: { config: cfg, chunk: 300 } } as const;
  const ref = await logitsOf({ ...common, backend: 'reference', kv: { dtype: 'f32' } }, tokens);
  const cpu = await logitsOf({ ...common, backend: 'cpu', kv: { dtype: 'f32' } }, tokens);
  const dense = await logitsOf({ model, contextSize: 1024, backend: 'cpu', kv: { dtype: 'f32' }, sparse: { mode: 'off' } }, tokens);
  assert.ok(ref.sparse && cpu.sparse && !dense.sparse);
  const d = maxDiff(ref.logits, cpu.logits);
  const dd = maxDiff(dense.logits, cpu.logits);
  t.diagnostic(`max |cpu − ref| = ${d.toExponential(2)}, |sparse − dense| on the CPU = ${dd.toExponential(2)}; cpu stats ${JSON.stringify(cpu.stats)}`);
  assert.ok(d < 2e-3, `sparse CPU vs reference ${d}`);
  // The patterns really dropped entries: the sparse logits differ from dense ones.
  assert.ok(dd > 10 * d, `sparse vs dense ${dd}`);
  const st = cpu.stats as { calls: number; keptEntries: number; causalEntries: number };
  assert.ok(st.calls > 0 && st.keptEntries < st.causalEntries);
});

test('CPU backend: a dense pattern on every head equals the dense path; below the threshold prefill stays dense', async () => {
  const tokens = randomTokens(400, 3, 200, 9);
  const probe = await Engine.load({ model, backend: 'reference' });
  const cfg = cfgOf(probe, () => ({ kind: 'dense' }), 128);
  probe.dispose();
  const dense = await logitsOf({ model, contextSize: 1024, backend: 'cpu', kv: { dtype: 'f32' }, sparse: { mode: 'off' } }, tokens);
  const sp = await logitsOf({ model, contextSize: 1024, backend: 'cpu', kv: { dtype: 'f32' }, sparse: { config: cfg, chunk: 150 } }, tokens);
  assert.ok(sp.sparse);
  assert.ok(maxDiff(dense.logits, sp.logits) < 1e-3);
  // f16 KV (the default) through the same path.
  const dense16 = await logitsOf({ model, contextSize: 1024, backend: 'cpu', sparse: { mode: 'off' } }, tokens);
  const sp16 = await logitsOf({ model, contextSize: 1024, backend: 'cpu', sparse: { config: cfg, chunk: 150 } }, tokens);
  assert.ok(maxDiff(dense16.logits, sp16.logits) < 1e-2);
  const high = cfgOf(probe, mixed, 4096);
  const below = await logitsOf({ model, contextSize: 8192, backend: 'cpu', kv: { dtype: 'f32' }, sparse: { config: high } }, tokens);
  assert.ok(!below.sparse);
});
