import { test } from 'node:test';
import assert from 'node:assert/strict';
import { attentionRef, mergeAttentionRef, rmsNormRef } from '../../engine/model/ref-ops.js';
import { Rng, Sampler, argmax, topKIndices } from '../../engine/model/sampler.js';
import { ropeConfig } from '../../engine/model/rope.js';

function randn(rng: Rng, n: number): Float32Array {
  return Float32Array.from({ length: n }, () => rng.normal());
}

test('attention over two disjoint key sets merges exactly into attention over all keys (out and lse)', () => {
  const rng = new Rng(1);
  const nQ = 5, nK = 23, nHeads = 4, nKVHeads = 2, d = 8;
  const q = randn(rng, nQ * nHeads * d);
  const k = randn(rng, nK * nKVHeads * d);
  const v = randn(rng, nK * nKVHeads * d);
  const base = { q, k, v, nQ, nK, nHeads, nKVHeads, headDim: d, scale: 1 / Math.sqrt(d), qPos0: nK - nQ };
  const full = attentionRef(base);
  const a = attentionRef({ ...base, keep: (_h, _i, j) => j % 3 === 0 });
  const b = attentionRef({ ...base, keep: (_h, _i, j) => j % 3 !== 0 });
  const m = mergeAttentionRef(a.out, a.lse, b.out, b.lse, nQ, nHeads, d);
  for (let i = 0; i < full.out.length; i++) assert.ok(Math.abs(full.out[i] - m.out[i]) < 1e-5, `out[${i}]`);
  for (let i = 0; i < full.lse.length; i++) assert.ok(Math.abs(full.lse[i] - m.lse[i]) < 1e-5, `lse[${i}]`);
});

test('causal attention: the first query of a fresh sequence attends only to itself', () => {
  const rng = new Rng(2);
  const d = 4;
  const q = randn(rng, 3 * d), k = randn(rng, 3 * d), v = randn(rng, 3 * d);
  const r = attentionRef({ q, k, v, nQ: 3, nK: 3, nHeads: 1, nKVHeads: 1, headDim: d, scale: 0.5, qPos0: 0 });
  assert.deepEqual(Array.from(r.out.subarray(0, d)), Array.from(v.subarray(0, d)));
  let dot = 0;
  for (let t = 0; t < d; t++) dot += q[t] * k[t];
  assert.ok(Math.abs(r.lse[0] - dot * 0.5) < 1e-6);
});

test('rmsNorm per head normalizes each group separately', () => {
  const x = Float32Array.from([1, 1, 10, 10]);
  const y = rmsNormRef(x, 1, 4, Float32Array.from([1, 1]), 0, 2);
  assert.deepEqual(Array.from(y), [1, 1, 1, 1]);
});

test('rope table: plain frequencies are base^(-2i/d); linear scaling divides them; YaRN keeps high frequencies', () => {
  const plain = ropeConfig({ kind: 'neox', dims: 64, freqBase: 10000, scaling: 'none', factor: 1, origCtx: 0 });
  for (let i = 0; i < 32; i++) assert.ok(Math.abs(plain.invFreq[i] / Math.pow(10000, -i / 32) - 1) < 1e-5);
  const lin = ropeConfig({ kind: 'neox', dims: 64, freqBase: 10000, scaling: 'linear', factor: 4, origCtx: 0 });
  for (let i = 0; i < 32; i++) assert.ok(Math.abs(lin.invFreq[i] / (plain.invFreq[i] / 4) - 1) < 1e-5);
  const yarn = ropeConfig({ kind: 'neox', dims: 64, freqBase: 10000, scaling: 'yarn', factor: 4, origCtx: 4096 });
  assert.equal(yarn.invFreq[0], plain.invFreq[0]); // extrapolated (fast dims untouched)
  assert.ok(Math.abs(yarn.invFreq[31] / (plain.invFreq[31] / 4) - 1) < 1e-5); // interpolated
  assert.ok(yarn.mscale > 1.13 && yarn.mscale < 1.14); // 1 + 0.1 ln 4
});

test('sampler: greedy takes the first maximum; top-k keeps the k largest; same seed, same samples', () => {
  const l = Float32Array.from([0.5, 3, 3, -1, 2]);
  assert.equal(argmax(l), 1);
  assert.equal(new Sampler({ temperature: 0 }).sample(l), 1);
  assert.deepEqual(topKIndices(l, 0, l.length, 3), [1, 2, 4]);
  const s1 = new Sampler({ temperature: 1, topK: 3, seed: 7 });
  const s2 = new Sampler({ temperature: 1, topK: 3, seed: 7 });
  const a = Array.from({ length: 50 }, () => s1.sample(l));
  const b = Array.from({ length: 50 }, () => s2.sample(l));
  assert.deepEqual(a, b);
  assert.ok(a.every((t) => t === 1 || t === 2 || t === 4));
  const p = new Sampler({ temperature: 1, topP: 0.01, seed: 3 });
  for (let i = 0; i < 20; i++) assert.equal(p.sample(l), 1);
});
