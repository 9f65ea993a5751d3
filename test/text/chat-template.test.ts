import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ChatTemplate, type ChatMessage } from '../../engine/text/chat-template.js';
import { LLAMA2_CHAT_TEMPLATE, LLAMA3_CHAT_TEMPLATE, QWEN25_CHAT_TEMPLATE } from '../../engine/text/templates.js';
import { syntheticTokenizerMetadata } from '../../engine/text/synthetic.js';
import { writeGGUF, meta } from '../../engine/gguf/writer.js';
import { GGUFFile } from '../../engine/gguf/reader.js';
import { UserError } from '../../engine/errors.js';

const chat: ChatMessage[] = [
  { role: 'system', content: 'You are a helpful assistant.' },
  { role: 'user', content: 'Hello' },
];

test('Qwen2.5 template renders the known ChatML string', () => {
  const t = new ChatTemplate(QWEN25_CHAT_TEMPLATE, '<|endoftext|>', '<|im_end|>');
  assert.equal(t.render(chat), '<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\nHello<|im_end|>\n<|im_start|>assistant\n');
  assert.equal(
    t.render([{ role: 'user', content: 'Hi' }, { role: 'assistant', content: 'Hey.' }, { role: 'user', content: 'Bye' }], { addGenerationPrompt: false }),
    '<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nHey.<|im_end|>\n<|im_start|>user\nBye<|im_end|>\n',
  );
  const withCall = t.render([
    { role: 'user', content: 'Weather?' },
    { role: 'assistant', content: '', tool_calls: [{ type: 'function', function: { name: 'get_weather', arguments: { city: 'Paris' } } }] },
    { role: 'tool', content: '{"t": 21}' },
  ]);
  assert.ok(withCall.endsWith('<|im_start|>assistant\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call><|im_end|>\n<|im_start|>user\n<tool_response>\n{"t": 21}\n</tool_response><|im_end|>\n<|im_start|>assistant\n'), withCall);
});

test('Llama 3 template renders the known string', () => {
  const t = new ChatTemplate(LLAMA3_CHAT_TEMPLATE, '<|begin_of_text|>', '<|eot_id|>');
  assert.equal(
    t.render(chat),
    '<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nYou are a helpful assistant.<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nHello<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n',
  );
  assert.equal(
    t.render([{ role: 'user', content: '  spaced  ' }], { addGenerationPrompt: false }),
    '<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nspaced<|eot_id|>',
  );
  // the tokenizer adds BOS itself: the template's is dropped (as llama.cpp's common/chat.cpp does)
  assert.ok(t.render(chat, { addBos: true }).startsWith('<|start_header_id|>system'));
});

test('Llama 2 template renders the known string and rejects bad role order', () => {
  const t = new ChatTemplate(LLAMA2_CHAT_TEMPLATE, '<s>', '</s>', 'llama2.gguf');
  assert.equal(
    t.render([...chat, { role: 'assistant', content: ' Hi! ' }, { role: 'user', content: 'More' }]),
    '<s>[INST] <<SYS>>\nYou are a helpful assistant.\n<</SYS>>\n\nHello [/INST] Hi! </s><s>[INST] More [/INST]',
  );
  assert.throws(
    () => t.render([{ role: 'assistant', content: 'x' }]),
    (e: unknown) => e instanceof UserError && /^llama2\.gguf: its chat template failed to render .*Conversation roles must alternate/.test(e.message),
  );
});

test('a template that does not parse is a clear error naming the model file', () => {
  assert.throws(
    () => new ChatTemplate('{% if messages %}unclosed', '', '', '/models/bad.gguf'),
    (e: unknown) => e instanceof UserError && /^\/models\/bad\.gguf: its chat template does not parse \(Jinja: .+\)/.test(e.message),
  );
});

test('ChatTemplate.fromGGUF reads the template and the BOS/EOS texts', () => {
  const dir = mkdtempSync(join(tmpdir(), 'repokv-tmpl-'));
  try {
    const path = join(dir, 'q.gguf');
    writeGGUF(path, { metadata: [['general.architecture', meta.str('qwen2')], ...syntheticTokenizerMetadata('qwen2')], tensors: [] });
    const f = GGUFFile.open(path, { metadataOnly: true });
    const t = ChatTemplate.fromGGUF(f)!;
    f.close();
    assert.equal(t.bosToken, '<|endoftext|>');
    assert.equal(t.eosToken, '<|im_end|>');
    assert.ok(t.render(chat).startsWith('<|im_start|>system\n'));
    const l = join(dir, 'n.gguf');
    writeGGUF(l, { metadata: [['general.architecture', meta.str('llama')]], tensors: [] });
    const g = GGUFFile.open(l, { metadataOnly: true });
    assert.equal(ChatTemplate.fromGGUF(g), null);
    g.close();
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
