// `repokv calibrate` end to end: the per-head search on the constructed induction model writes the
// model's config into the cache folder, and an engine on that folder prefills with it.
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, readdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { tmpdir } from 'node:os';
import { planInductionModel, writeInductionModel } from '../../engine/model/induction.js';
import { run as calibrate } from '../../engine/commands/calibrate.js';
import { Engine } from '../../engine/engine.js';
import { passkeyTask } from '../../engine/fidelity/tasks.js';

const dir = join(tmpdir(), `repokv-calibrate-${process.pid}`);
mkdirSync(dir, { recursive: true });
after(() => rmSync(dir, { recursive: true, force: true }));
const model = join(dir, 'induction.gguf');
writeInductionModel(model, planInductionModel({ seed: 1 }));

test('calibrate writes a per-head config that the engine then prefills with', async () => {
  const cache = join(dir, 'kv');
  const logs: string[] = [];
  const log = console.log;
  console.log = (s: string) => logs.push(s);
  try {
    assert.equal(await calibrate(['--model', model, '--length', '1K', '--cache-dir', cache, '--threshold', '512', '--json']), 0);
  } finally {
    console.log = log;
  }
  const out = JSON.parse(logs.join('\n')) as { path: string; config: { source: string; heads: { kind: string }[][]; recall: number[][] } };
  assert.ok(existsSync(out.path));
  assert.equal(out.config.source, 'calibrated');
  assert.equal(out.config.heads.length, 2);
  // Layer 0's heads are pure previous-token slashes: whatever was picked reproduces them exactly.
  for (const r of out.config.recall[0]) assert.ok(r > 0.999, `layer 0 recall ${r}`);
  assert.deepEqual(readdirSync(cache).length, 1);

  const e = await Engine.load({ model, backend: 'cpu', contextSize: 2048, kv: { cacheDir: cache } });
  try {
    assert.equal(e.sparse?.source, 'calibrated');
    assert.equal(e.sparse?.threshold, 512);
    const task = passkeyTask(e.tokenizer, { length: 1000, depth: 0.3, seed: 2 });
    const seq = e.createSequence();
    let logits = await e.prefill(seq, [...task.context, ...task.questions[0].tokens]);
    assert.ok(seq.lastPrefill?.sparse);
    const got: number[] = [];
    for (const _ of task.questions[0].answer) {
      let best = 0;
      for (let j = 1; j < logits.length; j++) if (logits[j] > logits[best]) best = j;
      got.push(best);
      logits = (await e.decodeStep([seq], [best]))[0];
    }
    assert.deepEqual(got, task.questions[0].answer, 'the calibrated sparse prefill still finds the pass key');
  } finally {
    e.dispose();
  }
});
