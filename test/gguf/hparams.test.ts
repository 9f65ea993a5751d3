// readHParams: llama.cpp's keys and defaults, rope scaling, the tensors each architecture requires,
// and one clear error (naming the file) for every way a header can be wrong.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { GGUFError, GGUFFile, type GGUFMetaValue } from '../../engine/gguf/reader.js';
import { readHParams, expectedTensors, type ModelHParams } from '../../engine/gguf/hparams.js';
import { meta } from '../../engine/gguf/writer.js';
import { encodeSyntheticModel, syntheticModel, type SyntheticModelPlan } from '../../engine/model/synthetic.js';

const shape = { nLayers: 2, nEmbd: 64, nHeads: 4, nKVHeads: 2, nFF: 128, contextLength: 1024, tied: false };

/** Writes a tiny model of `arch` after `edit` changed its plan; returns readHParams' result or error. */
function read(arch: 'llama' | 'qwen2' | 'qwen3', edit: (p: SyntheticModelPlan) => void = () => {}, opts: { metadataOnly?: boolean } = {}): ModelHParams {
  const dir = mkdtempSync(join(tmpdir(), 'repokv-hp-'));
  const path = join(dir, `${arch}.gguf`);
  try {
    // qwen3 gets Qwen3's wider heads: key_length twice embd / heads.
    const plan = syntheticModel({ arch, shape: arch === 'qwen3' ? { ...shape, headDim: 32 } : shape, type: 'f32', seed: 1 });
    edit(plan);
    writeFileSync(path, encodeSyntheticModel(plan));
    const f = GGUFFile.open(path, opts);
    try {
      return readHParams(f);
    } finally {
      f.close();
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

const setMeta = (key: string, v: GGUFMetaValue) => (p: SyntheticModelPlan) => {
  const i = p.metadata.findIndex(([k]) => k === key);
  if (i >= 0) p.metadata[i] = [key, v];
  else p.metadata.push([key, v]);
};
const dropMeta = (key: string) => (p: SyntheticModelPlan) => {
  p.metadata = p.metadata.filter(([k]) => k !== key);
};
const dropTensor = (name: string) => (p: SyntheticModelPlan) => {
  p.tensors = p.tensors.filter((t) => t.name !== name);
};

function refuses(fn: () => unknown, problem: RegExp): void {
  assert.throws(fn, (e: unknown) => {
    assert.ok(e instanceof GGUFError, `expected a GGUFError, got ${String(e)}`);
    assert.match(e.message, /\.gguf: /, 'names the file');
    assert.match(e.message, problem);
    assert.ok(!e.message.includes('\n'), 'one line');
    return true;
  });
}

test('llama: values, defaults and the KV size per token', () => {
  const hp = read('llama');
  assert.equal(hp.arch, 'llama');
  assert.equal(hp.nLayers, 2);
  assert.equal(hp.nHeads, 4);
  assert.equal(hp.nKVHeads, 2);
  assert.equal(hp.headDim, 16);
  assert.equal(hp.headDimV, 16);
  assert.equal(hp.ropeDim, 16);
  assert.equal(hp.contextLength, 1024);
  assert.equal(hp.ropeFreqBase, 500000);
  assert.equal(hp.ropeType, 'norm');
  assert.ok(Math.abs(hp.normEps - 1e-5) < 1e-12);
  assert.deepEqual(hp.ropeScaling, { type: 'none', factor: 1, origCtx: 1024, attnFactor: 1 });
  assert.equal(hp.fileType, 0);
  // 2 layers x 2 KV heads x (16 + 16) per token
  assert.equal(hp.kvBytesPerToken('f16'), 2 * 2 * 32 * 2);
  assert.equal(hp.kvBytesPerToken('f32'), 2 * 2 * 32 * 4);
  assert.equal(hp.kvBytesPerToken('q8_0'), 2 * 2 * 32 * (34 / 32));
  // Without rope.freq_base llama.cpp uses 10000; without head_count_kv, the head count.
  const d = read('llama', (p) => {
    dropMeta('llama.rope.freq_base')(p);
    dropMeta('llama.attention.head_count_kv')(p);
    for (const t of p.tensors) if (/attn_[kv]\.weight/.test(t.name)) t.dims = [64, 64];
  });
  assert.equal(d.ropeFreqBase, 10000);
  assert.equal(d.nKVHeads, 4);
});

test('qwen2 and qwen3: neox rope, biases, q/k norms, key_length', () => {
  const q2 = read('qwen2');
  assert.equal(q2.ropeType, 'neox');
  assert.equal(q2.hasQKVBias, true);
  assert.equal(q2.hasQKNorm, false);
  const q3 = read('qwen3');
  assert.equal(q3.ropeType, 'neox');
  assert.equal(q3.hasQKVBias, false);
  assert.equal(q3.hasQKNorm, true);
  assert.equal(q3.headDim, 32); // key_length: twice embd / heads, as in Qwen3
  assert.equal(q3.kvBytesPerToken('f16'), 2 * 2 * 64 * 2);
  const names = expectedTensors(q3).filter((t) => t.required).map((t) => t.name);
  for (const n of ['token_embd.weight', 'output_norm.weight', 'blk.1.attn_q_norm.weight', 'blk.1.attn_k_norm.weight', 'blk.0.ffn_gate.weight']) assert.ok(names.includes(n), n);
});

test('tied embeddings: no output.weight', () => {
  assert.equal(read('qwen2', dropTensor('output.weight')).tiedEmbeddings, true);
  assert.equal(read('qwen2').tiedEmbeddings, false);
});

test('rope scaling: linear, yarn with its parameters, legacy key', () => {
  const lin = read('llama', (p) => {
    setMeta('llama.rope.scaling.type', meta.str('linear'))(p);
    setMeta('llama.rope.scaling.factor', meta.f32(4))(p);
  });
  assert.deepEqual(lin.ropeScaling, { type: 'linear', factor: 4, origCtx: 1024, attnFactor: 1 });
  const legacy = read('llama', setMeta('llama.rope.scale_linear', meta.f32(2)));
  assert.equal(legacy.ropeScaling.type, 'linear');
  assert.equal(legacy.ropeScaling.factor, 2);
  const yarn = read('qwen2', (p) => {
    setMeta('qwen2.rope.scaling.type', meta.str('yarn'))(p);
    setMeta('qwen2.rope.scaling.factor', meta.f32(4))(p);
    setMeta('qwen2.rope.scaling.original_context_length', meta.u32(256))(p);
    setMeta('qwen2.rope.scaling.yarn_beta_fast', meta.f32(32))(p);
    setMeta('qwen2.rope.scaling.yarn_log_multiplier', meta.f32(0.5))(p);
  });
  assert.deepEqual(yarn.ropeScaling, { type: 'yarn', factor: 4, origCtx: 256, attnFactor: 1, yarnBetaFast: 32, yarnLogMul: 0.5 });
  refuses(() => read('llama', setMeta('llama.rope.scaling.type', meta.str('longrope'))), /rope scaling type "longrope" is not supported/);
});

test('header-only reads (no tensor table) still give the hyper-parameters', () => {
  const hp = read('qwen3', () => {}, { metadataOnly: true });
  assert.equal(hp.nVocab, 4278);
  assert.equal(hp.nFF, 128);
});

test('bad headers and missing tensors are refused with one sentence naming the file', () => {
  refuses(() => read('llama', setMeta('general.architecture', meta.str('gpt2'))), /architecture "gpt2" is not supported \(RepoKV runs llama, qwen2, qwen3\)/);
  refuses(() => read('llama', dropMeta('general.architecture')), /"general.architecture" is missing/);
  refuses(() => read('llama', dropMeta('llama.block_count')), /required metadata "llama.block_count" is missing/);
  refuses(() => read('llama', dropMeta('llama.attention.layer_norm_rms_epsilon')), /layer_norm_rms_epsilon" is missing/);
  refuses(() => read('llama', setMeta('llama.block_count', meta.u32(0))), /"llama.block_count" is 0, expected a whole number/);
  refuses(() => read('llama', setMeta('llama.block_count', meta.str('two'))), /block_count/);
  refuses(() => read('llama', setMeta('llama.embedding_length', meta.u32(1 << 30))), /embedding_length" is 1073741824/);
  refuses(() => read('llama', setMeta('llama.attention.head_count_kv', meta.u32(3))), /4 attention heads cannot be shared evenly by 3 KV heads/);
  refuses(() => read('llama', setMeta('llama.rope.dimension_count', meta.u32(8))), /differs from the head size/);
  refuses(() => read('llama', dropTensor('blk.1.ffn_up.weight')), /required tensor "blk.1.ffn_up.weight" is missing for architecture llama/);
  refuses(() => read('qwen3', dropTensor('blk.0.attn_k_norm.weight')), /"blk.0.attn_k_norm.weight" is missing/);
  refuses(() => read('qwen2', dropTensor('blk.1.attn_v.bias')), /"blk.1.attn_v.bias" is missing/);
  refuses(
    () =>
      read('llama', (p) => {
        p.tensors.find((t) => t.name === 'blk.0.attn_q.weight')!.dims = [64, 32];
      }),
    /tensor "blk.0.attn_q.weight" has shape \[64, 32\], expected \[64, 64\]/,
  );
  refuses(
    () =>
      read('llama', (p) => {
        const q = p.tensors.find((t) => t.name === 'blk.0.attn_q.weight')!;
        q.name = 'blk.0.attn_qkv.weight';
        q.dims = [64, 128];
      }),
    /fused QKV\) is not supported/,
  );
  refuses(
    () =>
      read('llama', (p) => {
        setMeta('llama.attention.head_count', meta.arr(5, [4, 8]))(p);
      }),
    /differs between layers/,
  );
});
