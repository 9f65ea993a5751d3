import { test } from 'node:test';
import assert from 'node:assert/strict';
import { encodeGGUF } from '../../engine/gguf/writer.js';
import { GGUFValueType } from '../../engine/gguf/types.js';
import type { GGUFArray } from '../../engine/gguf/reader.js';
import { SYNTHETIC_TOKENIZER_KINDS, syntheticTokenizerMetadata, syntheticVocabSize, syntheticTokenId } from '../../engine/text/synthetic.js';

const get = (md: ReturnType<typeof syntheticTokenizerMetadata>, k: string) => md.find(([key]) => key === k)?.[1].value;

for (const kind of SYNTHETIC_TOKENIZER_KINDS) {
  test(`synthetic ${kind}: consistent vocabulary`, () => {
    const md = syntheticTokenizerMetadata(kind);
    const tokens = (get(md, 'tokenizer.ggml.tokens') as GGUFArray).items as string[];
    const types = (get(md, 'tokenizer.ggml.token_type') as GGUFArray).items as number[];
    assert.equal(tokens.length, syntheticVocabSize(kind));
    assert.equal(types.length, tokens.length);
    assert.equal(new Set(tokens).size, tokens.length, 'token texts are unique (llama.cpp asserts this)');
    assert.ok(tokens.length > 4000 && tokens.length < 5000);
    for (const key of ['bos_token_id', 'eos_token_id', 'padding_token_id']) {
      const id = get(md, `tokenizer.ggml.${key}`) as number;
      assert.ok(id >= 0 && id < tokens.length, key);
    }
    assert.equal(typeof get(md, 'tokenizer.chat_template'), 'string');
    if (kind === 'spm') {
      assert.equal(get(md, 'tokenizer.ggml.model'), 'llama');
      assert.equal(tokens[0], '<unk>');
      assert.equal(types[0], 2);
      assert.equal(tokens[3], '<0x00>');
      assert.equal(types[3 + 255], 6);
      assert.ok(tokens.includes('\u2581'));
      const scores = (get(md, 'tokenizer.ggml.scores') as GGUFArray);
      assert.equal(scores.elemType, GGUFValueType.FLOAT32);
      assert.equal(scores.items.length, tokens.length);
    } else {
      assert.equal(get(md, 'tokenizer.ggml.model'), 'gpt2');
      assert.equal(get(md, 'tokenizer.ggml.pre'), kind);
      const merges = (get(md, 'tokenizer.ggml.merges') as GGUFArray).items as string[];
      assert.equal(merges.length, 4000);
      const set = new Set(tokens);
      for (const m of merges) {
        const sp = m.indexOf(' ', 1);
        assert.ok(set.has(m.slice(0, sp)) && set.has(m.slice(sp + 1)) && set.has(m.slice(0, sp) + m.slice(sp + 1)), m);
      }
    }
  });

  test(`synthetic ${kind}: same kind, same bytes`, () => {
    const a = encodeGGUF({ metadata: syntheticTokenizerMetadata(kind), tensors: [] });
    const b = encodeGGUF({ metadata: syntheticTokenizerMetadata(kind), tensors: [] });
    assert.ok(a.equals(b));
  });
}

test('synthetic special tokens are where the families put them', () => {
  const bos = syntheticTokenId('llama-bpe', '<|begin_of_text|>')!;
  assert.equal(syntheticTokenId('llama-bpe', '<|eot_id|>'), bos + 9);
  assert.equal(syntheticVocabSize('llama-bpe'), bos + 256);
  const eot = syntheticTokenId('qwen2', '<|endoftext|>')!;
  assert.equal(syntheticTokenId('qwen2', '<|im_end|>'), eot + 2);
  assert.equal(syntheticTokenId('qwen2', '<|file_sep|>'), eot + 21);
  assert.equal(syntheticTokenId('spm', '</s>'), 2);
});
