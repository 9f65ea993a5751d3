// Retrieval decode through the Engine (issue 9) on the CPU backend: with top-k covering every key the
// split attention equals dense decode; on the constructed induction model the pass key is retrieved
// at decode after a dense prefill and after a sparse one, in a forked sequence that shares the
// parent's index, and after a truncation (the index past the cut is dropped and rebuilt).
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { tmpdir } from 'node:os';
import { Engine, type EngineOptions } from '../../engine/engine.js';
import { planInductionModel, writeInductionModel } from '../../engine/model/induction.js';
import { passkeyTask } from '../../engine/fidelity/tasks.js';
import { randomTokens, testModel } from '../helpers/models.js';

const dir = join(tmpdir(), `repokv-retrieval-engine-${process.pid}`);
mkdirSync(dir, { recursive: true });
after(() => rmSync(dir, { recursive: true, force: true }));

function argmax(x: Float32Array): number {
  let b = 0;
  for (let i = 1; i < x.length; i++) if (x[i] > x[b]) b = i;
  return b;
}

test('retrieval decode with top-k = every key equals dense decode', async () => {
  const model = testModel('qwen2', 'f32', { size: 'tiny', seed: 5 });
  const tokens = randomTokens(900, 3, 200, 3);
  const run = async (o: Partial<EngineOptions>) => {
    const e = await Engine.load({ model, backend: 'cpu', contextSize: 1024, kv: { dtype: 'f32' }, ...o });
    try {
      const seq = e.createSequence();
      let logits = await e.prefill(seq, tokens);
      const out: number[] = [];
      for (let i = 0; i < 8; i++) {
        const t = argmax(logits);
        out.push(t);
        logits = (await e.decodeStep([seq], [t]))[0];
      }
      return { out, logits, stats: e.backend.sparseStats ? { ...e.backend.sparseStats } : null };
    } finally {
      e.dispose();
    }
  };
  const dense = await run({});
  const all = await run({ retrieval: { mode: 'on', config: { minContext: 512, sink: 16, window: 64, topK: 820, kind: 'flat' } } });
  assert.deepEqual(all.out, dense.out);
  let m = 0;
  for (let i = 0; i < dense.logits.length; i++) m = Math.max(m, Math.abs(dense.logits[i] - all.logits[i]));
  assert.ok(m < 1e-3, `logits differ by ${m}`);
  assert.ok((all.stats?.retrievalRows ?? 0) >= 8 * 4 * 2, `retrieval rows ${all.stats?.retrievalRows}`);
});

test('induction model: the pass key is retrieved at decode (dense and sparse prefill, fork, truncate)', async (t) => {
  const model = join(dir, 'induction.gguf');
  writeInductionModel(model, planInductionModel({ seed: 1 }));
  for (const kind of ['graph', 'ivf', 'flat'] as const) {
    const e = await Engine.load({
      model,
      backend: 'cpu',
      contextSize: 6144,
      retrieval: { mode: 'on', config: { minContext: 2048, kind, topK: 16 } },
      sparse: kind === 'graph' ? { config: undefined, threshold: 2048 } : { mode: 'off' },
    });
    try {
      const task = passkeyTask(e.tokenizer, { length: 5000, depth: 0.35, seed: 3 });
      const q = task.questions[0];
      const ctx = e.createSequence();
      await e.prefill(ctx, task.context);
      const answer = async (seq: typeof ctx) => {
        let logits = await e.prefill(seq, q.tokens); // short append: attends through the index
        const got: number[] = [];
        for (let i = 0; i < q.answer.length; i++) {
          got.push(argmax(logits));
          logits = (await e.decodeStep([seq], [got[i]]))[0];
        }
        return got;
      };
      const fork = e.forkSequence(ctx);
      assert.deepEqual(await answer(ctx), q.answer, `${kind}: answer in the context's own sequence`);
      assert.deepEqual(await answer(fork), q.answer, `${kind}: answer in a fork sharing its index`);
      ctx.truncate(task.context.length);
      assert.deepEqual(await answer(ctx), q.answer, `${kind}: answer after a truncation`);
      const st = e.backend.sparseStats!;
      assert.ok((st.retrievalRows ?? 0) > 0);
      // (At 5K keys a search scans much of them; the fraction at 8K–128K is bench retrieval's business.)
      assert.ok((st.retrievalScanned ?? 0) > 0 && (st.retrievalAttended ?? 0) < (st.retrievalKeys ?? 0));
    } finally {
      e.dispose();
    }
  }
});

test('retrieval indexes persist beside the KV pages: a restarted engine loads them; a damaged file is rebuilt', async () => {
  const model = join(dir, 'induction-persist.gguf');
  writeInductionModel(model, planInductionModel({ seed: 1 }));
  const cacheDir = join(dir, 'cache');
  const warnings: string[] = [];
  const open = () => Engine.load({ model, backend: 'cpu', contextSize: 6144, kv: { cacheDir, onWarning: (m) => warnings.push(m) }, retrieval: { mode: 'on', config: { minContext: 2048, topK: 16 } }, sparse: { mode: 'off' } });
  const probe = await open();
  const task = passkeyTask(probe.tokenizer, { length: 5000, depth: 0.5, seed: 7 });
  probe.dispose();
  const q = task.questions[0];
  const ask = async () => {
    const e = await open();
    try {
      const seq = e.createSequence();
      let logits = await e.prefill(seq, [...task.context, ...q.tokens]);
      const got: number[] = [];
      for (let i = 0; i < q.answer.length; i++) {
        got.push(argmax(logits));
        logits = (await e.decodeStep([seq], [got[i]]))[0];
      }
      await e.flushCache();
      return { got, loaded: seq.retrieval!.loaded, saved: seq.retrieval!.saved, restored: seq.lastPrefill!.cachedTokens };
    } finally {
      e.dispose();
    }
  };
  const first = await ask();
  assert.deepEqual(first.got, q.answer, 'first run');
  assert.equal(first.loaded, 0);
  assert.ok(first.saved > 0, 'indexes saved');
  const second = await ask();
  assert.ok(second.restored > 4000, `KV restored from disk (${second.restored})`);
  assert.deepEqual(second.got, q.answer, 'after a restart');
  assert.ok(second.loaded > 0, `indexes loaded (${second.loaded})`);
  // Damage every index file: detected by its checksum, rebuilt, the answer unchanged.
  const rdir = join(cacheDir, 'retrieval');
  for (const f of readdirSync(rdir)) {
    const p = join(rdir, f);
    const b = readFileSync(p);
    b[b.length >> 1] ^= 0x5a;
    writeFileSync(p, b);
  }
  const third = await ask();
  assert.deepEqual(third.got, q.answer, 'with damaged index files');
  assert.equal(third.loaded, 0);
  assert.ok(warnings.some((w) => /retrieval index was unusable/.test(w)), warnings.join('\n'));
});
