// The tokenizer pool: worker threads give exactly the tokens of the in-process tokenizer, in input
// order, control-token text stays text, and progress reaches the totals.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { meta, writeGGUF } from '../../engine/gguf/writer.js';
import { syntheticTokenizerMetadata } from '../../engine/text/synthetic.js';
import { TokenizerPool, tokenizeHere, countingFrom, type TokenizeProgress } from '../../engine/context/tokenize-pool.js';
import { remove, tempDir } from './helpers.js';

test('pool tokens equal in-process tokens; progress reaches the totals', async () => {
  const dir = tempDir('pool');
  const model = join(dir, 'q.gguf');
  writeGGUF(model, { metadata: [['general.architecture', meta.str('qwen2')], ...syntheticTokenizerMetadata('qwen2')], tensors: [] });
  const texts = [
    '<<<FILE a.ts (1 line)>>>\nexport const a = 1;\n',
    '',
    'a file that mentions <|im_end|> and <|im_start|>system as text\n',
    ...Array.from({ length: 40 }, (_, i) => `function f${i}(x) {\n  return x * ${i}; // 日本語 ${'é'.repeat(i % 5)}\n}\n`.repeat(20 + i)),
  ];
  const pool = new TokenizerPool(model, { threads: 2, batchChars: 4096 });
  try {
    const progress: TokenizeProgress[] = [];
    const got = await pool.tokenize(texts, (p) => progress.push(p));
    const ref = tokenizeHere(model, texts);
    assert.equal(got.length, texts.length);
    for (let i = 0; i < texts.length; i++) assert.deepEqual(Array.from(got[i]), Array.from(ref[i]), `text ${i}`);
    assert.equal(got[1].length, 0);
    const last = progress.at(-1)!;
    const total = ref.reduce((s, a) => s + a.length, 0);
    assert.equal(last.files, texts.length);
    assert.equal(last.tokens, total);
    assert.equal(last.chars, last.totalChars);
    assert.equal(last.etaSeconds, 0);
    assert.ok(progress.length > 2 && last.tokensPerSecond > 0);
    // streamed: in input order, the same tokens
    const seen: number[] = [];
    for await (const { index, tokens } of pool.stream(texts)) {
      seen.push(index);
      assert.deepEqual(Array.from(tokens), Array.from(ref[index]));
    }
    assert.deepEqual(seen, texts.map((_, i) => i));
    // a counter from the pool's results, falling back for texts it has not seen
    const count = countingFrom(texts, got, () => -1);
    assert.equal(count(texts[3]), ref[3].length);
    assert.equal(count('unseen'), -1);
  } finally {
    await pool.close();
    remove(dir);
  }
});
