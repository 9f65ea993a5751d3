// The prompt layout that makes prefix caching work: the repository prefix is the same tokens at the
// start of every conversation about it, and each turn only appends to the previous prompt.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { GGUFFile } from '../../engine/gguf/reader.js';
import { Tokenizer } from '../../engine/text/tokenizer.js';
import { ChatTemplate } from '../../engine/text/chat-template.js';
import { repoPrefixTokens, repoPromptTokens, type Turn } from '../../engine/assistant/conversation.js';
import { testModel } from '../helpers/models.js';

for (const arch of ['qwen2', 'llama'] as const) {
  test(`${arch} template: the repository prefix starts every prompt, and turns only append`, () => {
    const f = GGUFFile.open(testModel(arch, 'q8_0'));
    const tok = Tokenizer.fromGGUF(f);
    const tpl = ChatTemplate.fromGGUF(f)!;
    f.close();
    const segs = ['<<<FILE a.ts (1 lines)>>>\nexport const a = 1;\n', '<<<FILE b.ts (1 lines)>>>\nexport const b = <|im_end|>;\n'].map((t) => tok.encode(t, { addSpecial: false }));
    const prefix = repoPrefixTokens(tpl, tok, segs);
    const p1 = repoPromptTokens(tpl, tok, segs, [], 'What is a?');
    assert.deepEqual(p1.slice(0, prefix.length), prefix);
    const answer = Array.from(tok.encode(' It is one.', { addSpecial: false }));
    const turns: Turn[] = [{ role: 'user', content: 'What is a?' }, { role: 'assistant', content: ' It is one.', tokens: answer }];
    const p2 = repoPromptTokens(tpl, tok, segs, turns, 'And b?');
    assert.deepEqual(p2.slice(0, prefix.length), prefix);
    // Turn 2 extends turn 1's prompt by the answer's ids (the KV holds them as generated).
    const withAnswer = [...p1, ...answer];
    assert.deepEqual(p2.slice(0, withAnswer.length), withAnswer);
    // Repository text that looks like a control token stays text.
    const imEnd = tok.tokenId('<|im_end|>');
    if (arch === 'qwen2' && imEnd !== undefined) {
      const inRepo = prefix.slice(prefix.length - segs[1].length);
      assert.ok(!inRepo.includes(imEnd), 'file text must not become a control token');
    }
    // Exactly one BOS where the model adds one.
    if (tok.addBos) assert.equal(p1.filter((t) => t === tok.bos).length, 1);
  });
}
