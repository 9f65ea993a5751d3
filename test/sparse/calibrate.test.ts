// Kernel-aware calibration on planted heads: among equal-cost candidates the one that reproduces the
// dense output wins (vertical-slash for a slash head far outside the local window, where A-shape cannot
// see it), and a candidate whose recall is under the target has its budgets grown until it is not.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Rng } from '../../engine/model/rng.js';
import { calibrateHead, cpuRunner, growPattern } from '../../engine/attention/sparse/calibrate.js';
import { CpuAttention } from '../../engine/attention/cpu-attention.js';
import type { HeadGroupInput } from '../../engine/attention/sparse/attention.js';

/** One query head attending key i − off (key 0 before that); keys carry random unit codes. */
function slashHead(rng: Rng, n: number, d: number, off: number): HeadGroupInput {
  const codes: Float32Array[] = [];
  for (let j = 0; j < n; j++) {
    const c = rng.fillNormal(new Float32Array(d), 1, 0);
    const s = 1 / Math.hypot(...c);
    codes.push(c.map((x) => x * s));
  }
  const k = new Float32Array(n * d);
  const q = new Float32Array(n * d);
  for (let j = 0; j < n; j++) k.set(codes[j].map((x) => 14 * x), j * d);
  for (let i = 0; i < n; i++) q.set(codes[Math.max(0, i - off)].map((x) => 14 * x), i * d);
  return { q, k, v: rng.fillNormal(new Float32Array(n * d), 1, 0), nQ: n, nK: n, qPos0: 0, nHeads: 1, headDim: d, scale: 1 / Math.sqrt(d) };
}

test('calibration picks the pattern that reproduces the output at equal cost', (t) => {
  const a = slashHead(new Rng(31), 900, 32, 400);
  const c = calibrateHead(a, 0, {
    candidates: [
      { kind: 'a-shape', sink: 30, local: 250 },
      { kind: 'vertical-slash', vertical: 30, slash: 104 },
    ],
    maxDensity: 1,
  });
  t.diagnostic(JSON.stringify(c));
  assert.equal(c.pattern.kind, 'vertical-slash');
  assert.ok(c.outputError < 0.01 && c.recallP5 > 0.99, `${c.outputError} ${c.recallP5}`);
  const ash = c.tried.find((x) => x.pattern.kind === 'a-shape')!;
  assert.ok(ash.outputError > 0.5, `a-shape error ${ash.outputError}`);
  // The CPU runner (what real calibration lengths need) makes the same choice with the same numbers.
  const attn = new CpuAttention({ threads: 1 });
  try {
    const cc = calibrateHead(a, 0, { candidates: c.tried.map((x) => x.pattern), maxDensity: 1, runner: cpuRunner(attn) });
    assert.deepEqual(cc.pattern, c.pattern);
    assert.ok(Math.abs(cc.tried[0].outputError - ash.outputError) < 1e-4);
  } finally {
    attn.dispose();
  }
});

test('refinement grows budgets until recall reaches the target', (t) => {
  const a = slashHead(new Rng(32), 700, 32, 180);
  const c = calibrateHead(a, 0, { candidates: [{ kind: 'a-shape', sink: 30, local: 100 }], recallTarget: 0.99 });
  t.diagnostic(JSON.stringify({ pattern: c.pattern, refined: c.refined, p5: c.recallP5, density: c.density }));
  assert.ok(c.refined >= 1 && c.recallP5 >= 0.99);
  assert.deepEqual(growPattern({ kind: 'vertical-slash', vertical: 30, slash: 100 }, 1.5), { kind: 'vertical-slash', vertical: 45, slash: 150 });
});
