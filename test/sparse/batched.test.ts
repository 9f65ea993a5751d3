// The batched CPU sparse kernel (engine/attention/sparse/batched-cpu.ts): one onnxruntime run for many
// (head, query block) items, each attending its gathered selection, equals the sparse reference for
// every pattern — ragged lengths, a chunk after a cached prefix, budgets larger than the sequence, a
// score budget small enough to force many runs — and equals dense under a full budget.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Rng } from '../../engine/model/rng.js';
import type { SparsePattern } from '../../engine/attention/sparse/patterns.js';
import { buildGroupIndex, denseAttentionRef, sparseAttentionRef, type HeadGroupInput } from '../../engine/attention/sparse/attention.js';
import { BatchedSparseCpu } from '../../engine/attention/sparse/batched-cpu.js';

function maxRel(got: Float32Array, want: Float32Array): number {
  let err = 0;
  let mag = 0;
  for (let i = 0; i < want.length; i++) {
    if (want[i] === -Infinity) {
      assert.equal(got[i], -Infinity, `row ${i} should attend nothing`);
      continue;
    }
    err = Math.max(err, Math.abs(got[i] - want[i]));
    mag = Math.max(mag, Math.abs(want[i]));
  }
  return err / Math.max(mag, 1e-30);
}

function group(rng: Rng, nQ: number, qPos0: number, nHeads: number, d: number): HeadGroupInput {
  const nK = qPos0 + nQ;
  return { q: rng.fillNormal(new Float32Array(nQ * nHeads * d), 1, 0), k: rng.fillNormal(new Float32Array(nK * d), 1, 0), v: rng.fillNormal(new Float32Array(nK * d), 1, 0), nQ, nK, qPos0, nHeads, headDim: d, scale: 1 / Math.sqrt(d) };
}

test('batched sparse CPU kernel = sparse reference (every pattern, ragged, after a prefix, forced small batches)', () => {
  const rng = new Rng(31);
  for (const tileFloats of [1 << 22, 64 * 300]) {
    const k = new BatchedSparseCpu({ threads: 1 }, tileFloats);
    try {
      for (const [nQ, qPos0] of [
        [333, 0],
        [190, 261],
        [64, 0],
        [7, 100],
      ] as const) {
        const a = group(rng, nQ, qPos0, 3, 32);
        const patterns: SparsePattern[][] = [
          [
            { kind: 'vertical-slash', vertical: 40, slash: 100 },
            { kind: 'a-shape', sink: 16, local: 70 },
            { kind: 'block-sparse', blocks: 2 },
          ],
          [
            { kind: 'vertical-slash', vertical: 5000, slash: 5000 },
            { kind: 'dense' },
            { kind: 'block-sparse', blocks: 1000 },
          ],
        ];
        for (const ps of patterns) {
          const idx = buildGroupIndex(a, ps);
          const ref = sparseAttentionRef(a, idx);
          const got = k.run(a, idx);
          assert.ok(maxRel(got.out, ref.out) < 2e-5, `out ${maxRel(got.out, ref.out)} (${nQ}/${qPos0}, ${ps.map((p) => p.kind)})`);
          assert.ok(maxRel(got.lse, ref.lse) < 2e-6, `lse ${maxRel(got.lse, ref.lse)}`);
        }
        const dense = denseAttentionRef(a);
        const full = k.run(a, buildGroupIndex(a, [{ kind: 'dense' }, { kind: 'dense' }, { kind: 'dense' }]));
        assert.ok(maxRel(full.out, dense.out) < 2e-5 && maxRel(full.lse, dense.lse) < 2e-6);
      }
      if (tileFloats < 1 << 20) assert.ok(k.runs > 20, `small score budget: ${k.runs} runs`);
    } finally {
      k.dispose();
    }
  }
});
