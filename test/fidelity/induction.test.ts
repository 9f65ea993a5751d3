// The constructed induction model (engine/model/induction.ts): dense attention continues the needle
// on our reference and CPU backends and on llama.cpp with the same file and token ids.
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { tmpdir } from 'node:os';
import { GGUFFile } from '../../engine/gguf/reader.js';
import { readHParams } from '../../engine/gguf/hparams.js';
import { Tokenizer } from '../../engine/text/tokenizer.js';
import { INDUCTION, planInductionModel, writeInductionModel } from '../../engine/model/induction.js';
import { checkAnswerPath, kvTask, passkeyTask } from '../../engine/fidelity/tasks.js';
import { EngineMethod, LlamaMethod } from '../../engine/fidelity/methods.js';

const dir = join(tmpdir(), `repokv-fidelity-${process.pid}`);
mkdirSync(dir, { recursive: true });
after(() => rmSync(dir, { recursive: true, force: true }));
const model = join(dir, 'induction.gguf');
const plan = planInductionModel({ seed: 1 });
writeInductionModel(model, plan);
const file = GGUFFile.open(model, { metadataOnly: true });
const tok = Tokenizer.fromGGUF(file);
const hp = readHParams(file);
file.close();

test('induction model: file shape, huge rope base and biases as llama.cpp reads them; designed margins', () => {
  assert.equal(hp.arch, 'qwen2');
  assert.equal(hp.nLayers, 2);
  assert.equal(hp.hasQKVBias, true);
  assert.equal(hp.ropeFreqBase, Math.fround(INDUCTION.freqBase));
  assert.equal(hp.contextLength, 1 << 20);
  const m = plan.margins;
  // Layer 0's slash score keeps ≥ 20% of its peak between the wanted offset and every other one up to 2^20.
  assert.ok(m.gap0 > 0.2, `gap0 ${m.gap0}`);
  assert.ok(m.codeCoherence < 0.9, `coherence ${m.codeCoherence}`);
  for (const v of [m.margin0, m.margin1, m.marginOut]) assert.ok(v >= 20, `margin ${v}`);
  assert.ok(m.maxContentAngle < 0.05, `content pairs rotate ${m.maxContentAngle} rad over the context`);
});

test('answer-path check: a needle whose 2-gram recurs with another continuation is refused', () => {
  assert.equal(checkAnswerPath([5, 6, 7, 8, 9, 5, 6], [7]), null);
  assert.match(checkAnswerPath([5, 6, 7, 8, 5, 6, 9, 5, 6], [7]) ?? '', /followed by/);
  assert.match(checkAnswerPath([1, 2, 3], [4]) ?? '', /does not occur/);
});

async function expectAllCorrect(m: EngineMethod | LlamaMethod, insts: ReturnType<typeof passkeyTask>[], modes: ('multi-request' | 'multi-turn')[]) {
  const generated: number[][] = [];
  for (const inst of insts) {
    for (const mode of modes) {
      const r = await m.run(inst, mode);
      for (const q of r.questions) {
        assert.ok(q.correct, `${m.name} ${inst.task} ${inst.length} ${mode} depth ${q.depth.toFixed(2)}: got ${tok.decode(q.generated)} want ${tok.decode(q.expected)}`);
        if (q.margin !== null) assert.ok(q.margin >= 20, `${m.name}: logit margin ${q.margin} < 20`);
        generated.push(q.generated);
      }
      if (mode === 'multi-request' && inst.questions.length > 1 && r.prefixShared) {
        // one context prefill + N question prefills, not N context prefills
        const perQuestion = r.questions.map((q) => q.computedTokens);
        assert.ok(Math.max(...perQuestion) < 64 + 40, `questions recomputed the context: ${perQuestion}`);
      }
    }
  }
  return generated;
}

test('reference backend: passkey at 0/50/100% depth and kv retrieval in both modes (short)', async () => {
  const m = await EngineMethod.create({ model, backend: 'reference', maxTokens: 1024 });
  try {
    await expectAllCorrect(m, [0, 0.5, 1].map((depth) => passkeyTask(tok, { length: 400, depth, seed: 3 })), ['multi-request']);
    await expectAllCorrect(m, [kvTask(tok, { length: 400, questions: 3, seed: 3 })], ['multi-request', 'multi-turn']);
  } finally {
    await m.close();
  }
});

test('CPU backend and llama.cpp: the same needles, the same answers, margins ≥ 20', async () => {
  const insts = [0, 0.5, 1].map((depth) => passkeyTask(tok, { length: 1024, depth, seed: 5 }));
  const kv = kvTask(tok, { length: 1024, questions: 3, seed: 5 });
  const cpu = await EngineMethod.create({ model, backend: 'cpu', maxTokens: 1400, threads: 2 });
  let ours: number[][];
  try {
    ours = await expectAllCorrect(cpu, [...insts, kv], ['multi-request']);
    await expectAllCorrect(cpu, [kv], ['multi-turn']);
  } finally {
    await cpu.close();
  }
  const llama = new LlamaMethod(model, { threads: 1 });
  const theirs = await expectAllCorrect(llama, [...insts, kv], ['multi-request']);
  assert.deepEqual(theirs, ours);
});
