// The Engine API on the reference backend: chunked prefill equals one-shot prefill, a batched decode
// step equals separate steps, generation streams text, stops at stop strings, honours cancellation
// and max tokens, and a sequence can be truncated and continued.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Engine } from '../../engine/engine.js';
import { argmax } from '../../engine/model/sampler.js';
import { randomTokens, testModel } from '../helpers/models.js';

const model = testModel('qwen2', 'f32');

function maxAbsDiff(a: Float32Array, b: Float32Array): number {
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]));
  return m;
}

test('chunked prefill gives the logits of a one-shot prefill', async () => {
  const prompt = randomTokens(150, 300, 4000, 11);
  const one = await Engine.load({ model, backend: 'reference', prefillChunk: 1000 });
  const chunked = await Engine.load({ model, backend: 'reference', prefillChunk: 37 });
  const a = await one.prefill(one.createSequence(256), prompt);
  const b = await chunked.prefill(chunked.createSequence(256), prompt);
  assert.ok(maxAbsDiff(a, b) < 1e-4, `differ by ${maxAbsDiff(a, b)}`);
});

test('one batched decode step for three sequences equals three separate steps', async () => {
  const e = await Engine.load({ model, backend: 'reference' });
  const prompts = [randomTokens(20, 300, 4000, 1), randomTokens(33, 300, 4000, 2), randomTokens(7, 300, 4000, 3)];
  const seqs = prompts.map(() => e.createSequence(64));
  const firsts: number[] = [];
  for (let i = 0; i < 3; i++) firsts.push(argmax(await e.prefill(seqs[i], prompts[i])));
  const batched = await e.decodeStep(seqs, firsts);
  for (let i = 0; i < 3; i++) {
    const solo = e.createSequence(64);
    await e.prefill(solo, prompts[i]);
    const [l] = await e.decodeStep([solo], [firsts[i]]);
    assert.ok(maxAbsDiff(l, batched[i]) < 1e-4, `sequence ${i} differs by ${maxAbsDiff(l, batched[i])}`);
  }
});

test('generate streams text that adds up to the result, and stops at max tokens', async () => {
  const e = await Engine.load({ model, backend: 'reference' });
  const seq = e.createSequence(128);
  const logits = await e.prefill(seq, Array.from(e.tokenizer.encode('function add(a, b) {')));
  const gen = e.generate(seq, logits, { maxTokens: 12 });
  let text = '';
  let r = await gen.next();
  let n = 0;
  while (!r.done) {
    text += r.value.text;
    n++;
    r = await gen.next();
  }
  assert.equal(r.value.stopReason === 'length' || r.value.stopReason === 'eog', true);
  assert.equal(text, r.value.text);
  assert.ok(r.value.tokens.length <= 12);
  assert.equal(e.tokenizer.decode(r.value.tokens), r.value.text);
});

test('a stop string ends generation and is not emitted', async () => {
  const e = await Engine.load({ model, backend: 'reference' });
  const seq = e.createSequence(128);
  const prompt = Array.from(e.tokenizer.encode('const x = 1;'));
  // Learn what greedy decoding writes, then stop on a piece of it.
  const full = await collect(e.generate(seq, await e.prefill(seq, prompt), { maxTokens: 16, stopAtEog: false }));
  assert.ok(full.text.length > 4, `greedy text too short to test: ${JSON.stringify(full.text)}`);
  const stop = full.text.slice(2, 4);
  const seq2 = e.createSequence(128);
  const cut = await collect(e.generate(seq2, await e.prefill(seq2, prompt), { maxTokens: 16, stop: [stop], stopAtEog: false }));
  assert.equal(cut.stopReason, 'stop');
  assert.equal(cut.text, full.text.slice(0, full.text.indexOf(stop)));
  assert.equal(cut.streamed, cut.text);
});

test('cancellation stops between steps', async () => {
  const e = await Engine.load({ model, backend: 'reference' });
  const seq = e.createSequence(128);
  const ac = new AbortController();
  const gen = e.generate(seq, await e.prefill(seq, [400, 500, 600]), { maxTokens: 50, signal: ac.signal, stopAtEog: false });
  await gen.next();
  await gen.next();
  ac.abort();
  let r = await gen.next();
  while (!r.done) r = await gen.next();
  assert.equal(r.value.stopReason, 'cancelled');
  assert.ok(r.value.tokens.length <= 3);
});

test('truncating a sequence and continuing gives the same logits as never having gone further', async () => {
  const e = await Engine.load({ model, backend: 'reference' });
  const a = randomTokens(40, 300, 4000, 5);
  const b = randomTokens(10, 300, 4000, 6);
  const seq = e.createSequence(128);
  await e.prefill(seq, a);
  await e.prefill(seq, randomTokens(25, 300, 4000, 9)); // a turn that is then retried
  seq.truncate(a.length);
  const retried = await e.prefill(seq, b);
  const fresh = e.createSequence(128);
  const direct = await e.prefill(fresh, [...a, ...b]);
  assert.ok(maxAbsDiff(retried, direct) < 1e-4);
});

test('a prompt longer than the sequence fails with a clear message', async () => {
  const e = await Engine.load({ model, backend: 'reference' });
  await assert.rejects(e.prefill(e.createSequence(16), randomTokens(20, 300, 4000)), /needs 20 tokens of context but the sequence holds 16/);
});

async function collect(gen: AsyncGenerator<{ text: string }, { text: string; stopReason: string }>) {
  let streamed = '';
  let r = await gen.next();
  while (!r.done) {
    streamed += r.value.text;
    r = await gen.next();
  }
  return { ...r.value, streamed };
}

test('a chat prompt starts with exactly one BOS when the template writes it and the tokenizer adds it', async () => {
  const e = await Engine.load({ model: testModel('llama', 'f32'), backend: 'reference' });
  const ids = e.chatTokens([{ role: 'user', content: 'hi' }]);
  assert.equal(ids[0], e.tokenizer.bos);
  assert.notEqual(ids[1], e.tokenizer.bos);
});
