// CPU attention (onnxruntime tiles + host merge) against the plain reference, on random ragged shapes:
// GQA groups, decode (1 query) and prefill blocks, queries starting mid-cache, key tiles split by the
// tile budget, and a sparse key selection checked against attentionRef's `keep` mask.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { CpuAttention, type CpuAttentionInput } from '../../engine/attention/cpu-attention.js';
import { attentionRef } from '../../engine/model/ref-ops.js';
import { Rng } from '../../engine/model/synthetic.js';

/** Token-major K/V [nK, nKV·d] → per-head [nK, d] arrays (the head-major cache layout). */
function perHead(x: Float32Array, nK: number, nKV: number, d: number): Float32Array[] {
  return Array.from({ length: nKV }, (_, h) => {
    const out = new Float32Array(nK * d);
    for (let j = 0; j < nK; j++) out.set(x.subarray(j * nKV * d + h * d, j * nKV * d + (h + 1) * d), j * d);
    return out;
  });
}

function maxRelErr(got: Float32Array, want: Float32Array): number {
  let err = 0;
  let mag = 0;
  for (let i = 0; i < want.length; i++) {
    if (want[i] === -Infinity) {
      assert.equal(got[i], -Infinity, `index ${i}: expected −∞`);
      continue;
    }
    err = Math.max(err, Math.abs(got[i] - want[i]));
    mag = Math.max(mag, Math.abs(want[i]));
  }
  return err / Math.max(mag, 1e-30);
}

const attn = new CpuAttention({ threads: 1 });
test.after(() => attn.dispose());

// Tolerances: f32 GEMMs and exp against an f64-accumulating reference.
const TOL_OUT = 2e-5;
const TOL_LSE = 2e-6;

const cases: [string, number, number, number, number, number][] = [
  // name, nHeads, nKVHeads, headDim, nQ, qPos0
  ['decode, GQA 7:1 (qwen2.5-0.5b heads)', 14, 2, 64, 1, 300],
  ['prefill from 0, MHA', 4, 4, 32, 37, 0],
  ['prefill chunk mid-cache, GQA 4:1', 8, 2, 16, 53, 71],
  ['odd head dim, GQA 3:1', 6, 2, 24, 5, 9],
];
for (const [name, nHeads, nKV, d, nQ, qPos0] of cases) {
  test(`attention: ${name}`, () => {
    const rng = new Rng(nHeads * 1000 + nQ);
    const nK = qPos0 + nQ;
    const q = rng.fillNormal(new Float32Array(nQ * nHeads * d), 1);
    const k = rng.fillNormal(new Float32Array(nK * nKV * d), 1);
    const v = rng.fillNormal(new Float32Array(nK * nKV * d), 1);
    const scale = 1 / Math.sqrt(d);
    const want = attentionRef({ q, k, v, nQ, nK, nHeads, nKVHeads: nKV, headDim: d, scale, qPos0 });
    const a: CpuAttentionInput = { q, nQ, qPos0, k: perHead(k, nK, nKV, d), v: perHead(v, nK, nKV, d), nK, nHeads, nKVHeads: nKV, headDim: d, scale };
    const got = attn.run(a);
    assert.ok(maxRelErr(got.out, want.out) < TOL_OUT, `out rel err ${maxRelErr(got.out, want.out)}`);
    assert.ok(maxRelErr(got.lse, want.lse) < TOL_LSE, `lse rel err ${maxRelErr(got.lse, want.lse)}`);
  });
}

test('attention: many query blocks and key tiles merged equal one pass', () => {
  const small = new CpuAttention({ threads: 1 }, 8 * 64 * 100); // → 64-row query blocks, 100-key tiles
  const rng = new Rng(7);
  const [nHeads, nKV, d, nQ] = [8, 4, 16, 150];
  const nK = 700;
  const qPos0 = nK - nQ;
  const q = rng.fillNormal(new Float32Array(nQ * nHeads * d), 1);
  const k = rng.fillNormal(new Float32Array(nK * nKV * d), 1);
  const v = rng.fillNormal(new Float32Array(nK * nKV * d), 1);
  const scale = 1 / Math.sqrt(d);
  const want = attentionRef({ q, k, v, nQ, nK, nHeads, nKVHeads: nKV, headDim: d, scale, qPos0 });
  const got = small.run({ q, nQ, qPos0, k: perHead(k, nK, nKV, d), v: perHead(v, nK, nKV, d), nK, nHeads, nKVHeads: nKV, headDim: d, scale });
  small.dispose();
  assert.ok(maxRelErr(got.out, want.out) < TOL_OUT, `out ${maxRelErr(got.out, want.out)}`);
  assert.ok(maxRelErr(got.lse, want.lse) < TOL_LSE, `lse ${maxRelErr(got.lse, want.lse)}`);
});

test('attention: sparse key selection (64-key blocks + gathered columns) equals the masked reference', () => {
  const rng = new Rng(11);
  const [nHeads, nKV, d, nQ] = [4, 2, 32, 128];
  const nK = 640;
  const qPos0 = nK - nQ;
  const q = rng.fillNormal(new Float32Array(nQ * nHeads * d), 1);
  const k = rng.fillNormal(new Float32Array(nK * nKV * d), 1);
  const v = rng.fillNormal(new Float32Array(nK * nKV * d), 1);
  const scale = 1 / Math.sqrt(d);
  // A-shape-like: sink block [0,64) + local diagonal blocks, plus a few vertical columns.
  const columns = Int32Array.from([100, 130, 257, 301, 450]);
  const select = (q0: number, q1: number) => {
    const hi = qPos0 + q1;
    return { ranges: [[0, 64], [Math.max(64, hi - 128), hi]] as [number, number][], columns: columns.filter((c) => c < Math.max(64, hi - 128)) };
  };
  const keep = (_h: number, i: number, j: number) => {
    const q0 = Math.floor(i / 64) * 64;
    const s = select(q0, Math.min(nQ, q0 + 64));
    return s.ranges.some(([a, b]) => j >= a && j < b) || s.columns.includes(j);
  };
  const want = attentionRef({ q, k, v, nQ, nK, nHeads, nKVHeads: nKV, headDim: d, scale, qPos0, keep });
  const got = attn.run({ q, nQ, qPos0, k: perHead(k, nK, nKV, d), v: perHead(v, nK, nKV, d), nK, nHeads, nKVHeads: nKV, headDim: d, scale, select, selectBlock: 64 });
  assert.ok(maxRelErr(got.out, want.out) < TOL_OUT, `out ${maxRelErr(got.out, want.out)}`);
  assert.ok(maxRelErr(got.lse, want.lse) < TOL_LSE, `lse ${maxRelErr(got.lse, want.lse)}`);
});
