// `repokv inspect`: the report on a synthetic model, as text and as JSON.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { inspectModel } from '../../engine/commands/inspect.js';
import { presetShape, syntheticModel, writeSyntheticModel } from '../../engine/model/synthetic.js';

const root = new URL('../..', import.meta.url).pathname;

test('inspect reports architecture, sizes, types, tokenizer, template and KV cost', () => {
  const dir = mkdtempSync(join(tmpdir(), 'repokv-inspect-'));
  try {
    const path = join(dir, 'llama.gguf');
    const plan = syntheticModel({ arch: 'llama', shape: { ...presetShape('llama', 'tiny'), nLayers: 2 }, type: 'q8_0', seed: 2 });
    writeSyntheticModel(path, plan);
    const m = inspectModel(path);
    assert.equal(m.architecture, 'llama');
    assert.equal(m.parameters, plan.nParams);
    assert.equal(m.fileType, 'MOSTLY_Q8_0');
    assert.deepEqual(Object.keys(m.tensorTypes).sort(), ['F32', 'Q8_0']);
    assert.equal(m.tensorTypes.F32.tensors, 2 * 2 + 1); // attn_norm, ffn_norm per layer + output_norm
    assert.equal(m.tensorTypes.Q8_0.tensors, 2 + 2 * 7);
    assert.equal(m.hparams.nVocab, 4512);
    assert.equal(m.kvBytesPerToken.f16, 2 * 2 * 128 * 2);
    assert.equal(m.kvBytesPerToken.f32, 2 * 2 * 128 * 4);
    assert.equal(m.kvBytesAtContext.f16, 2 * 2 * 128 * 2 * 8192);
    assert.equal(m.tokenizer.model, 'gpt2');
    assert.equal(m.tokenizer.pre, 'llama-bpe');
    assert.equal(m.tokenizer.vocabSize, 4512);
    assert.equal(m.tokenizer.special.bos.text, '<|begin_of_text|>');
    assert.equal(m.tokenizer.special.eos.text, '<|eot_id|>');
    assert.ok(m.chatTemplate && m.chatTemplate.head.length > 0 && m.chatTemplate.chars > 100);

    const text = spawnSync(process.execPath, [join(root, 'bin/repokv.js'), 'inspect', path], { encoding: 'utf8' });
    assert.equal(text.status, 0, text.stderr);
    for (const want of [/architecture\s+llama/, /parameters\s+\d+\.\d+M/, /Q8_0/, /norm \(adjacent pairs\), base 500000, 64 dims, no scaling/, /KV per token\s+1\.00 KiB f16, 2\.00 KiB f32/, /gpt2 \/ llama-bpe, 4512 tokens/, /bos \d+ "<\|begin_of_text\|>"/, /chat template\s+\d+ chars/]) {
      assert.match(text.stdout, want);
    }
    const json = spawnSync(process.execPath, [join(root, 'bin/repokv.js'), 'inspect', path, '--json'], { encoding: 'utf8' });
    assert.equal(json.status, 0, json.stderr);
    assert.deepEqual(JSON.parse(json.stdout), JSON.parse(JSON.stringify(m)));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
