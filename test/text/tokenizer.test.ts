import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { meta } from '../../engine/gguf/writer.js';
import { Tokenizer, cleanSpaces } from '../../engine/text/tokenizer.js';
import { syntheticTokenizerMetadata, syntheticTokenId } from '../../engine/text/synthetic.js';
import { preTokenizeToWords } from '../../engine/text/pretokenize.js';
import { UserError } from '../../engine/errors.js';

const toks = {
  'llama-bpe': Tokenizer.fromMetadata(syntheticTokenizerMetadata('llama-bpe')),
  qwen2: Tokenizer.fromMetadata(syntheticTokenizerMetadata('qwen2')),
  spm: Tokenizer.fromMetadata(syntheticTokenizerMetadata('spm')),
};

test('pre-tokenizers split like the llama3 and qwen2 regexes', () => {
  assert.deepEqual(preTokenizeToWords('llama3', "Hello world's 12345  x\n\n  y"), ['Hello', ' world', "'s", ' ', '123', '45', ' ', ' x', '\n\n', ' ', ' y']);
  assert.deepEqual(preTokenizeToWords('qwen2', 'a 123'), ['a', ' ', '1', '2', '3']);
  assert.deepEqual(preTokenizeToWords('llama3', 'foo();\n}\n'), ['foo', '();\n', '}\n']);
  assert.deepEqual(preTokenizeToWords('gpt2', "I'm  ok"), ['I', "'m", ' ', ' ok']);
});

test('encode adds BOS where the family does', () => {
  const l = toks['llama-bpe'];
  assert.equal(l.encode('hi')[0], l.bos);
  assert.notEqual(l.encode('hi', { addSpecial: false })[0], l.bos);
  const q = toks.qwen2;
  assert.deepEqual(Array.from(q.encode('hi')), Array.from(q.encode('hi', { addSpecial: false })));
  const s = toks.spm;
  assert.equal(s.encode('hi')[0], 1);
});

test('special tokens are parsed only when asked; user-defined ones always', () => {
  const l = toks['llama-bpe'];
  const eot = syntheticTokenId('llama-bpe', '<|eot_id|>')!;
  assert.deepEqual(Array.from(l.encode('<|eot_id|>', { addSpecial: false, parseSpecial: true })), [eot]);
  assert.ok(l.encode('<|eot_id|>', { addSpecial: false }).length > 1);
  const q = toks.qwen2;
  const call = syntheticTokenId('qwen2', '<tool_call>')!;
  assert.equal(q.encode('<tool_call>', { addSpecial: false })[0], call);
});

test('end of generation tokens', () => {
  const l = toks['llama-bpe'];
  for (const t of ['<|eot_id|>', '<|eom_id|>', '<|end_of_text|>']) assert.ok(l.isEndOfGeneration(syntheticTokenId('llama-bpe', t)!), t);
  assert.ok(!l.isEndOfGeneration(syntheticTokenId('llama-bpe', '<|start_header_id|>')!));
  const q = toks.qwen2;
  for (const t of ['<|im_end|>', '<|endoftext|>', '<|fim_pad|>', '<|repo_name|>', '<|file_sep|>']) assert.ok(q.isEndOfGeneration(syntheticTokenId('qwen2', t)!), t);
  assert.ok(!q.isEndOfGeneration(syntheticTokenId('qwen2', '<|im_start|>')!));
  assert.equal(q.eot, syntheticTokenId('qwen2', '<|im_end|>'));
  assert.ok(toks.spm.isEndOfGeneration(2));
});

test('decode round-trips text (no clean-up vocabularies) and hides control tokens unless asked', () => {
  const text = 'function f(a) {\n\treturn a ?? "日本 😀";\n}\n';
  for (const t of [toks.qwen2, toks.spm]) assert.equal(t.decode(t.encode(text, { addSpecial: false })), text);
  const l = toks['llama-bpe'];
  const ids = l.encode('<|eot_id|>x', { parseSpecial: true });
  assert.equal(l.decode(ids), 'x');
  assert.equal(l.decode(ids, { special: true }), '<|begin_of_text|><|eot_id|>x');
  assert.equal(toks.spm.decode(toks.spm.encode('hi'), { removeSpecial: true }), ' hi'); // llama.cpp keeps the space after a removed BOS
  assert.throws(() => l.decode([l.vocabSize]), RangeError);
});

test('clean-up of spaces (llama-bpe) follows llama.cpp', () => {
  const c = (s: string) => new TextDecoder().decode(cleanSpaces(new TextEncoder().encode(s)));
  assert.equal(c("a , b . c ! d ? ' x ' it 's we 're I 'm you 've don 't"), "a, b. c! d?'x'it's we're I'm you've don 't");
  assert.equal(toks['llama-bpe'].decode(toks['llama-bpe'].encode('x .', { addSpecial: false })), 'x.');
});

test('streaming decoder emits only whole characters', () => {
  for (const tok of Object.values(toks)) {
    const texts = fc.sample(fc.string({ unit: 'grapheme', maxLength: 40 }), { seed: 3, numRuns: 200 });
    for (const text of texts) {
      const ids = tok.encode(text, { addSpecial: false });
      const d = tok.streamDecoder({ stripLeadingSpace: true });
      let out = '';
      for (const id of ids) {
        const piece = d.push(id);
        assert.ok(!piece.includes('\ufffd') || text.includes('\ufffd'), `partial character emitted for ${JSON.stringify(text)}`);
        out += piece;
      }
      out += d.flush();
      const whole = tok === toks['llama-bpe'] ? text : tok.decode(ids);
      assert.equal(out, whole);
    }
  }
  // a 4-byte emoji split over byte tokens of an SPM vocabulary
  const s = toks.spm;
  const ids = s.encode('😀', { addSpecial: false });
  assert.ok(ids.length >= 4);
  const d = s.streamDecoder();
  const parts = Array.from(ids, (id) => d.push(id));
  assert.deepEqual(parts.slice(0, -1).join(''), parts[0]);
  assert.equal(parts.join('') + d.flush(), ' 😀'); // a continuation keeps its space
  const e = s.streamDecoder({ stripLeadingSpace: true });
  assert.equal(Array.from(ids, (id) => e.push(id)).join('') + e.flush(), '😀');
});

test('unsupported tokenizers fail with one clear sentence', () => {
  const md = syntheticTokenizerMetadata('qwen2').map(([k, v]) => (k === 'tokenizer.ggml.pre' ? ([k, meta.str('deepseek-llm')] as [string, typeof v]) : [k, v]) as [string, typeof v]);
  assert.throws(() => Tokenizer.fromMetadata(md, 'model.gguf'), (e: unknown) => e instanceof UserError && /model\.gguf: uses the pre-tokenizer "deepseek-llm"/.test(e.message));
  assert.throws(() => Tokenizer.fromMetadata([], 'empty.gguf'), (e: unknown) => e instanceof UserError && /empty\.gguf: has no tokenizer/.test(e.message));
});

test('lone surrogates encode as U+FFFD', () => {
  const q = toks.qwen2;
  assert.deepEqual(Array.from(q.encode('a\ud800b', { addSpecial: false })), Array.from(q.encode('a\ufffdb', { addSpecial: false })));
});
