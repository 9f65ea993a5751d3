// The vertical-slash estimate on onnxruntime equals the plain reference: the same Â (last 64 queries'
// causal softmax) within f32 error, on ragged lengths and a chunk after a cached prefix, and the same
// selection where the choice is clear (planted column and diagonal).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Rng } from '../../engine/model/rng.js';
import { CpuVerticalSlashEstimator } from '../../engine/attention/sparse/estimate-cpu.js';
import { estimateVerticalSlash, lastQueryProbs, type HeadInput } from '../../engine/attention/sparse/patterns.js';

const est = new CpuVerticalSlashEstimator({ threads: 1 });
test.after(() => est.dispose());

function head(rng: Rng, nQ: number, qPos0: number, d: number): HeadInput {
  const nK = qPos0 + nQ;
  return { q: rng.fillNormal(new Float32Array(nQ * d), 1, 0), k: rng.fillNormal(new Float32Array(nK * d), 1, 0), nQ, nK, qPos0, headDim: d, scale: 1 / Math.sqrt(d) };
}

test('Â on ORT = reference (ragged, cached prefix, fewer than 64 queries)', () => {
  const rng = new Rng(41);
  for (const [nQ, qPos0] of [
    [1000, 0],
    [300, 777],
    [20, 100],
  ] as const) {
    const h = head(rng, nQ, qPos0, 64);
    const a = est.probs(h);
    const b = lastQueryProbs(h);
    let err = 0;
    for (let i = 0; i < b.length; i++) err = Math.max(err, Math.abs(a[i] - b[i]));
    assert.ok(err < 1e-6, `max abs error ${err}`);
  }
});

test('same selection as the reference on a planted column and diagonal', () => {
  const rng = new Rng(42);
  const d = 32;
  const h = head(rng, 900, 0, d);
  for (let x = 0; x < h.q.length; x++) h.q[x] *= 0.2;
  for (let t = 0; t < d; t++) h.k[500 * d + t] = t === 0 ? 30 : 0;
  for (let i = 0; i < h.nQ; i++) h.q[i * d] += 1;
  const a = est.estimate(h, 31, 101);
  assert.ok(a.columns.includes(500));
  assert.deepEqual(a, estimateVerticalSlash(h, 31, 101));
  const h2 = head(rng, 900, 0, d);
  for (let i = 333; i < h2.nQ; i++) for (let t = 0; t < d; t++) h2.q[i * d + t] = 4 * h2.k[(i - 333) * d + t];
  const b = est.estimate(h2, 30, 101);
  assert.ok(b.offsets.includes(333));
  assert.deepEqual(b, estimateVerticalSlash(h2, 30, 101));
});
