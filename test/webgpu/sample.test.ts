// GPU sampling (kernels/sample.wgsl `sample`) against its TypeScript reference (sample-ref.ts), and the
// reference against the host Sampler (engine/model/sampler.ts) for the same random stream:
// - the reference picks exactly what Sampler.sample picks, draw for draw;
// - the kernel picks what the reference picks for the same uniform number, on both of its paths
//   (top-k of at most 512 gathered and sorted in workgroup memory; top-k off or large: radix searches
//   over the whole row), with exact logit ties, peaked and flat rows, top-p cuts from 0 to off; a
//   different pick is allowed only where the reference's running weight lies within 1e-5 (relative) of
//   the number it is compared with — the count of those is printed, and bounded;
// - temperature 0 is argmax;
// - Engine.generate picks on the GPU (argmax when greedy, sample otherwise) and produces the same
//   tokens as reading the logits back into the host Sampler, for the same seed.

import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { Rng, Sampler, argmax } from '../../engine/model/sampler.js';
import { sampleRef, type GpuSampleOptions } from '../../engine/backends/webgpu/sample-ref.js';
import type { WebGPUBackend } from '../../engine/backends/webgpu/index.js';
import { openBackend } from './util.js';
import { Engine } from '../../engine/engine.js';
import { randomTokens } from '../helpers/models.js';
import { microModel } from '../kv/helpers.js';

let b: WebGPUBackend;
before(async () => {
  b = await openBackend();
});
after(() => b.dispose());

function logitsOf(kind: 'normal' | 'ties' | 'peaked', n: number, seed: number): Float32Array {
  const rng = new Rng(seed);
  const x = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    const g = rng.normal();
    x[i] = kind === 'normal' ? 3 * g : kind === 'ties' ? Math.round(2 * g) / 2 : g;
  }
  if (kind === 'peaked') {
    x[(seed * 7) % n] = 9;
    x[(seed * 13) % n] = 8.5;
  }
  return x;
}

const OPTIONS: GpuSampleOptions[] = [
  { temperature: 0.8, topK: 40, topP: 0.95 },
  { temperature: 1, topK: 0, topP: 1 },
  { temperature: 0.7, topK: 0, topP: 0.9 },
  { temperature: 1.5, topK: 700, topP: 0.5 },
  { temperature: 1, topK: 512, topP: 1 },
  { temperature: 0.5, topK: 3, topP: 0.3 },
  { temperature: 1, topK: 0, topP: 0 },
];

test('the reference is the host Sampler with its random number passed in (same picks, same stream)', () => {
  for (const o of OPTIONS) {
    for (const kind of ['normal', 'ties', 'peaked'] as const) {
      const x = logitsOf(kind, 1500, 3);
      const seed = 1234;
      const sampler = new Sampler({ ...o, seed });
      const stream = new Rng(seed);
      for (let i = 0; i < 100; i++) assert.equal(sampleRef(x, 0, x.length, o, stream.uniform()).token, sampler.sample(x), `${JSON.stringify(o)} ${kind} draw ${i}`);
    }
  }
});

test('GPU sampling picks what the reference picks for the same uniform number (both kernel paths)', async () => {
  const ROWS = 48;
  let compared = 0;
  let boundary = 0;
  let exactBoundary = 0;
  for (const n of [300, 2000]) {
    for (const kind of ['normal', 'ties', 'peaked'] as const) {
      const row = logitsOf(kind, n, n + kind.length);
      const x = new Float32Array(ROWS * n);
      for (let r = 0; r < ROWS; r++) x.set(row, r * n);
      const rng = new Rng(n * 31 + kind.length);
      const u = Float32Array.from({ length: ROWS }, (_, r) => (r + rng.uniform()) / ROWS);
      for (const o of OPTIONS) {
        const got = await b.sample(b.fromHost(x, ROWS, n), o, u);
        b.endStep();
        for (let r = 0; r < ROWS; r++) {
          const want = sampleRef(row, 0, n, o, u[r]);
          compared++;
          if (got[r] === want.token) {
            if (want.margin < 1e-5) exactBoundary++;
            continue;
          }
          boundary++;
          assert.ok(want.margin < 1e-5, `n ${n} ${kind} ${JSON.stringify(o)} u ${u[r]}: GPU ${got[r]}, reference ${want.token} (margin ${want.margin.toExponential(2)})`);
        }
      }
    }
  }
  console.log(`# GPU vs reference picks: ${compared} compared, ${boundary} differ (all within 1e-5 of a boundary; ${exactBoundary} such near-boundary picks agreed)`);
  assert.ok(boundary <= compared / 200);
});

test('temperature 0 is argmax; rows are independent', async () => {
  const n = 1000;
  const rows = [logitsOf('normal', n, 1), logitsOf('ties', n, 2), logitsOf('peaked', n, 3)];
  const x = new Float32Array(3 * n);
  rows.forEach((r, i) => x.set(r, i * n));
  const got = await b.sample(b.fromHost(x, 3, n), { temperature: 0, topK: 40, topP: 0.9 }, new Float32Array(3));
  b.endStep();
  assert.deepEqual(Array.from(got), rows.map((r) => argmax(r)));
  await assert.rejects(b.sample(b.fromHost(x, 3, n), { temperature: 1, topK: 0, topP: 1 }, new Float32Array(2)), /2 random numbers for 3 rows/);
  b.endStep();
});

test('Engine.generate picks tokens on the GPU: the same tokens as the host Sampler over read-back logits', async () => {
  const e = await Engine.load({ model: microModel(), backend: 'webgpu', allowSoftwareGpu: true });
  try {
    const prompt = randomTokens(40, 300, 4000, 61);
    const run = async (opts: Parameters<Engine['generate']>[2]) => {
      const s = e.createSequence(128);
      const logits = await e.prefill(s, prompt);
      const out: number[] = [];
      for await (const c of e.generate(s, logits, { maxTokens: 24, stopAtEog: false, ...opts })) if (c.token >= 0) out.push(c.token);
      e.freeSequence(s);
      return out;
    };
    const settings = [{ temperature: 0 }, { temperature: 0.9, topK: 40, topP: 0.95, seed: 7 }, { temperature: 1.2, topK: 0, topP: 0.9, seed: 8 }];
    const onGpu = [];
    for (const o of settings) onGpu.push(await run(o));
    // The same backend without its device pickers: generate reads the logits and samples on the host.
    const b = e.backend as unknown as Record<string, unknown>;
    b.argmax = undefined;
    b.sample = undefined;
    for (let i = 0; i < settings.length; i++) assert.deepEqual(onGpu[i], await run(settings[i]), JSON.stringify(settings[i]));
    assert.notDeepEqual(onGpu[1], onGpu[0], 'sampling is not greedy');
  } finally {
    e.dispose();
  }
});
