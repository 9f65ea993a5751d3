// Sparse attention for a head group: the plain reference (attentionRef + keep) and the CPU path
// (CpuAttention with the index as key selection) agree; with a budget that covers everything both equal
// dense; on planted structure (a strong vertical column, a slash diagonal) small vertical-slash budgets
// keep attention recall exp(lse_sparse − lse_full) ≥ 0.99 on every row. Lengths are not multiples of 64,
// and one case is a chunk after a cached prefix.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { CpuAttention } from '../../engine/attention/cpu-attention.js';
import { Rng } from '../../engine/model/rng.js';
import { indexDensity, type SparsePattern } from '../../engine/attention/sparse/patterns.js';
import {
  attentionRecall,
  buildGroupIndex,
  denseAttentionRef,
  recallStats,
  sparseAttentionCpu,
  sparseAttentionRef,
  type HeadGroupInput,
} from '../../engine/attention/sparse/attention.js';

const attn = new CpuAttention({ threads: 1 });
test.after(() => attn.dispose());

function relErr(got: Float32Array, want: Float32Array): number {
  let err = 0;
  let mag = 0;
  for (let i = 0; i < want.length; i++) {
    if (want[i] === -Infinity) {
      assert.equal(got[i], -Infinity);
      continue;
    }
    err = Math.max(err, Math.abs(got[i] - want[i]));
    mag = Math.max(mag, Math.abs(want[i]));
  }
  return err / Math.max(mag, 1e-30);
}

function randomGroup(rng: Rng, nQ: number, qPos0: number, nHeads: number, d: number): HeadGroupInput {
  const nK = qPos0 + nQ;
  return {
    q: rng.fillNormal(new Float32Array(nQ * nHeads * d), 1, 0),
    k: rng.fillNormal(new Float32Array(nK * d), 1, 0),
    v: rng.fillNormal(new Float32Array(nK * d), 1, 0),
    nQ,
    nK,
    qPos0,
    nHeads,
    headDim: d,
    scale: 1 / Math.sqrt(d),
  };
}

test('a budget that covers everything: sparse (reference and CPU) = dense', () => {
  const rng = new Rng(21);
  for (const [nQ, qPos0] of [
    [333, 0],
    [200, 141],
  ] as const) {
    const a = randomGroup(rng, nQ, qPos0, 2, 32);
    const dense = denseAttentionRef(a);
    const all: SparsePattern[] = [
      { kind: 'vertical-slash', vertical: a.nK, slash: a.nK },
      { kind: 'a-shape', sink: 0, local: a.nK },
      { kind: 'block-sparse', blocks: 1 << 20 },
      { kind: 'dense' },
    ];
    for (const p of all) {
      const idx = buildGroupIndex(a, [p, p]);
      for (const x of idx) assert.equal(indexDensity(x), 1, p.kind);
      const ref = sparseAttentionRef(a, idx);
      const cpu = sparseAttentionCpu(attn, a, idx);
      assert.ok(relErr(ref.out, dense.out) < 1e-6 && relErr(ref.lse, dense.lse) < 1e-7, `${p.kind} ref`);
      assert.ok(relErr(cpu.out, dense.out) < 2e-5, `${p.kind} cpu out ${relErr(cpu.out, dense.out)}`);
      assert.ok(relErr(cpu.lse, dense.lse) < 2e-6, `${p.kind} cpu lse ${relErr(cpu.lse, dense.lse)}`);
    }
  }
});

test('CPU sparse path = sparse reference for every pattern, small budgets, ragged lengths', (t) => {
  const rng = new Rng(22);
  for (const [nQ, qPos0] of [
    [700, 0],
    [250, 390],
  ] as const) {
    const a = randomGroup(rng, nQ, qPos0, 2, 32);
    const patterns: SparsePattern[][] = [
      [
        { kind: 'vertical-slash', vertical: 40, slash: 120 },
        { kind: 'vertical-slash', vertical: 80, slash: 100 },
      ],
      [
        { kind: 'a-shape', sink: 30, local: 100 },
        { kind: 'block-sparse', blocks: 3 },
      ],
    ];
    for (const ps of patterns) {
      const idx = buildGroupIndex(a, ps);
      const ref = sparseAttentionRef(a, idx);
      const cpu = sparseAttentionCpu(attn, a, idx);
      const eo = relErr(cpu.out, ref.out);
      const el = relErr(cpu.lse, ref.lse);
      t.diagnostic(`nQ ${nQ} qPos0 ${qPos0} ${ps.map((p) => p.kind).join('+')}: density ${idx.map((x) => indexDensity(x).toFixed(3)).join('/')}, cpu vs ref out ${eo.toExponential(1)}, lse ${el.toExponential(1)}`);
      assert.ok(eo < 2e-5 && el < 2e-6, `${eo} ${el}`);
    }
  }
});

/**
 * Two query heads over one KV head with planted structure. Keys: k_j = 0.3·noise + 14·c_j (c_j random
 * unit codes), key `col` also carries 14·u. Head 0 (vertical): q_i = 0.3·noise + 14·u — every row's mass
 * sits on key `col`. Head 1 (slash): q_i = 14·c_{max(0, i − off)} — row i attends key i − off (key 0,
 * a forced sink, before the diagonal starts).
 */
function planted(rng: Rng, nQ: number, qPos0: number, d: number, col: number, off: number): HeadGroupInput {
  const nK = qPos0 + nQ;
  const unit = (x: Float32Array) => {
    let n = 0;
    for (const y of x) n += y * y;
    const s = 1 / Math.sqrt(n);
    for (let i = 0; i < x.length; i++) x[i] *= s;
    return x;
  };
  const codes = Array.from({ length: nK }, () => unit(rng.fillNormal(new Float32Array(d), 1, 0)));
  const u = unit(rng.fillNormal(new Float32Array(d), 1, 0));
  const k = rng.fillNormal(new Float32Array(nK * d), 0.3, 0);
  for (let j = 0; j < nK; j++) for (let t = 0; t < d; t++) k[j * d + t] += 14 * codes[j][t] + (j === col ? 14 * u[t] : 0);
  const q = new Float32Array(nQ * 2 * d);
  for (let i = 0; i < nQ; i++) {
    const p = qPos0 + i;
    for (let t = 0; t < d; t++) {
      q[i * 2 * d + t] = 0.3 * rng.normal() + 14 * u[t];
      q[i * 2 * d + d + t] = 14 * codes[Math.max(0, p - off)][t];
    }
  }
  return { q, k, v: rng.fillNormal(new Float32Array(nK * d), 1, 0), nQ, nK, qPos0, nHeads: 2, headDim: d, scale: 1 / Math.sqrt(d) };
}

test('planted vertical column and slash diagonal: small vertical-slash budgets keep recall ≥ 0.99', (t) => {
  const rng = new Rng(23);
  for (const [nQ, qPos0] of [
    [1500, 0],
    [700, 637],
  ] as const) {
    const a = planted(rng, nQ, qPos0, 64, 45, 300);
    const vs: SparsePattern = { kind: 'vertical-slash', vertical: 40, slash: 110 };
    const idx = buildGroupIndex(a, [vs, vs]);
    const dense = denseAttentionRef(a);
    const ref = sparseAttentionRef(a, idx);
    const cpu = sparseAttentionCpu(attn, a, idx);
    for (const [name, r] of [
      ['ref', ref],
      ['cpu', cpu],
    ] as const) {
      const rec = attentionRecall(r.lse, dense.lse);
      for (let h = 0; h < 2; h++) {
        const st = recallStats(rec.subarray(h * nQ, (h + 1) * nQ));
        t.diagnostic(`${name} nQ ${nQ} qPos0 ${qPos0} head ${h} (${h ? 'slash' : 'vertical'}): density ${indexDensity(idx[h]).toFixed(3)}, recall min ${st.min.toFixed(5)} p5 ${st.p5.toFixed(5)} median ${st.median.toFixed(5)}`);
        assert.ok(st.min >= 0.99, `${name} head ${h}: recall min ${st.min}`);
        assert.ok(st.min <= 1 + 1e-5);
      }
      const e = relErr(r.out, dense.out);
      t.diagnostic(`${name}: output error vs dense (max abs / max |dense|) ${e.toExponential(2)}`);
      assert.ok(e < 0.02, `${name}: out error vs dense ${e}`);
    }
    // The recall the CPU path reports equals the reference's.
    const rr = attentionRecall(ref.lse, dense.lse);
    const rc = attentionRecall(cpu.lse, dense.lse);
    let m = 0;
    for (let i = 0; i < rr.length; i++) m = Math.max(m, Math.abs(rr[i] - rc[i]));
    assert.ok(m < 1e-4, `recall cpu vs ref ${m}`);
    // A-shape with the same local window misses the slash at offset 300: recall must show it.
    const ash = buildGroupIndex(a, [
      { kind: 'a-shape', sink: 30, local: 100 },
      { kind: 'a-shape', sink: 30, local: 100 },
    ]);
    const st = recallStats(attentionRecall(sparseAttentionRef(a, ash).lse, dense.lse).subarray(nQ, 2 * nQ));
    t.diagnostic(`a-shape(30, 100) on the slash head: recall median ${st.median.toExponential(2)}`);
    assert.ok(st.median < 0.5);
  }
});
