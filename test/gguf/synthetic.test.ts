// Synthetic models: deterministic bytes, the metadata and tensors llama.cpp needs, plausible weight
// scales, llama.cpp's Q4_K_M mix, and the make-model command line.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { GGUFFile } from '../../engine/gguf/reader.js';
import { readHParams } from '../../engine/gguf/hparams.js';
import { dequantizeTensor } from '../../engine/gguf/quant.js';
import { GGMLType, typeName } from '../../engine/gguf/types.js';
import { Rng, encodeSyntheticModel, presetShape, syntheticModel, writeSyntheticModel } from '../../engine/model/synthetic.js';
import { syntheticVocabSize } from '../../engine/text/synthetic.js';

const root = new URL('../..', import.meta.url).pathname;
const small = { nLayers: 2, nEmbd: 64, nHeads: 4, nKVHeads: 2, nFF: 128, contextLength: 512, tied: false };

function withDir<T>(fn: (dir: string) => T): T {
  const dir = mkdtempSync(join(tmpdir(), 'repokv-synth-'));
  try {
    return fn(dir);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

test('Rng is deterministic and roughly standard normal', () => {
  const a = new Rng(5);
  const b = new Rng(5);
  for (let i = 0; i < 100; i++) assert.equal(a.u32(), b.u32());
  assert.notEqual(new Rng(5).u32(), new Rng(6).u32());
  const x = new Rng(11).fillNormal(new Float32Array(200000), 1);
  let m = 0;
  let v = 0;
  for (const y of x) m += y;
  m /= x.length;
  for (const y of x) v += (y - m) ** 2;
  v /= x.length;
  assert.ok(Math.abs(m) < 0.01 && Math.abs(v - 1) < 0.02, `mean ${m}, variance ${v}`);
  // The first values of seed 1 (checked against a C build of xoshiro128** with the same seeding) are
  // part of the promise that the same seed gives the same bytes.
  assert.deepEqual(Array.from({ length: 3 }, ((r) => () => r.u32())(new Rng(1))), [2442144158, 3238099751, 3819917871]);
});

test('same options and seed give the same bytes; another seed gives other weights', () => {
  const opts = { arch: 'qwen2' as const, shape: small, type: 'q4_k' as const, seed: 3 };
  const a = encodeSyntheticModel(syntheticModel(opts));
  const b = encodeSyntheticModel(syntheticModel(opts));
  assert.ok(a.equals(b));
  const c = encodeSyntheticModel(syntheticModel({ ...opts, seed: 4 }));
  assert.equal(c.length, a.length);
  assert.ok(!a.equals(c));
  // The streaming writer gives the same file as the in-memory encoder.
  withDir((dir) => {
    writeSyntheticModel(join(dir, 'm.gguf'), syntheticModel(opts));
    assert.ok(readFileSync(join(dir, 'm.gguf')).equals(a));
  });
});

for (const arch of ['llama', 'qwen2', 'qwen3'] as const) {
  test(`${arch}: metadata, tensors and hyper-parameters as llama.cpp expects`, () => {
    withDir((dir) => {
      const path = join(dir, `${arch}.gguf`);
      const shape = presetShape(arch, 'tiny');
      writeSyntheticModel(path, syntheticModel({ arch, shape, type: 'q8_0', seed: 1 }));
      const f = GGUFFile.open(path);
      try {
        const hp = readHParams(f); // also checks every tensor name and shape
        const tok = arch === 'llama' ? 'llama-bpe' : 'qwen2';
        assert.equal(hp.arch, arch);
        assert.equal(hp.nLayers, shape.nLayers);
        assert.equal(hp.nEmbd, shape.nEmbd);
        assert.equal(hp.nHeads, shape.nHeads);
        assert.equal(hp.nKVHeads, shape.nKVHeads);
        assert.equal(hp.headDim, arch === 'qwen3' ? 128 : 64);
        assert.equal(hp.nFF, shape.nFF);
        assert.equal(hp.nVocab, syntheticVocabSize(tok));
        assert.equal(hp.ropeType, arch === 'llama' ? 'norm' : 'neox');
        assert.equal(hp.hasQKVBias, arch === 'qwen2');
        assert.equal(hp.hasQKNorm, arch === 'qwen3');
        assert.equal(hp.tiedEmbeddings, arch !== 'llama');
        assert.deepEqual(hp.unusedTensors, []);
        assert.equal(f.getString('tokenizer.ggml.model'), 'gpt2');
        assert.equal(f.getString('tokenizer.ggml.pre'), tok);
        assert.equal(f.getNumber('general.file_type'), 7);
        for (const t of f.tensors) {
          const expect = t.dims.length === 1 ? GGMLType.F32 : GGMLType.Q8_0;
          assert.equal(t.type, expect, `${t.name} is ${typeName(t.type)}`);
        }
        // Scales: projections ~ N(0, 1/fan_in), norms ~ 1, biases small.
        const std = (name: string): { mean: number; std: number } => {
          const x = dequantizeTensor(f, f.tensor(name)!);
          let m = 0;
          for (const v of x) m += v;
          m /= x.length;
          let s = 0;
          for (const v of x) s += (v - m) ** 2;
          return { mean: m, std: Math.sqrt(s / x.length) };
        };
        const q = std('blk.0.attn_q.weight');
        assert.ok(Math.abs(q.std * Math.sqrt(shape.nEmbd) - 1) < 0.05, `attn_q std ${q.std}`);
        const d = std('blk.1.ffn_down.weight');
        assert.ok(Math.abs(d.std * Math.sqrt(shape.nFF) - 1) < 0.05, `ffn_down std ${d.std}`);
        const n = std('blk.0.attn_norm.weight');
        assert.ok(Math.abs(n.mean - 1) < 0.02 && n.std < 0.1, `norm mean ${n.mean} std ${n.std}`);
      } finally {
        f.close();
      }
    });
  });
}

test('--q4km mix follows llama.cpp Q4_K_M: Q6_K for output and for attn_v/ffn_down of the use_more_bits layers', () => {
  const plan = syntheticModel({ arch: 'llama', shape: { ...presetShape('llama', 'tiny'), nLayers: 8, nEmbd: 256, nFF: 512 }, type: 'q4_k', q4km: true, seed: 1 });
  const type = (name: string): string => typeName(plan.tensors.find((t) => t.name === name)!.type);
  assert.equal(type('output.weight'), 'Q6_K');
  assert.equal(type('token_embd.weight'), 'Q4_K');
  // use_more_bits(i, 8): i < 1 || i >= 7 || (i - 1) % 3 == 2  ->  layers 0, 3, 6, 7
  const more = [0, 3, 6, 7];
  for (let i = 0; i < 8; i++) {
    const want = more.includes(i) ? 'Q6_K' : 'Q4_K';
    assert.equal(type(`blk.${i}.attn_v.weight`), want, `layer ${i} attn_v`);
    assert.equal(type(`blk.${i}.ffn_down.weight`), want, `layer ${i} ffn_down`);
    assert.equal(type(`blk.${i}.attn_q.weight`), 'Q4_K');
    assert.equal(type(`blk.${i}.attn_norm.weight`), 'F32');
  }
  const md = new Map(plan.metadata);
  assert.equal(md.get('general.file_type')!.value, 15);
  // Tied embeddings take the output's type.
  const tied = syntheticModel({ arch: 'qwen2', shape: { ...small, nEmbd: 256, tied: true }, type: 'q4_k', q4km: true, seed: 1 });
  assert.equal(typeName(tied.tensors.find((t) => t.name === 'token_embd.weight')!.type), 'Q6_K');
  assert.ok(!tied.tensors.some((t) => t.name === 'output.weight'));
});

test('rows that are not whole blocks fall back as llama.cpp does (Q4_K -> Q5_0, then F16)', () => {
  const plan = syntheticModel({ arch: 'qwen2', shape: presetShape('qwen2', 'qwen0.5b'), type: 'q4_k', seed: 1 });
  const t = (name: string) => typeName(plan.tensors.find((x) => x.name === name)!.type);
  assert.equal(t('blk.0.attn_q.weight'), 'Q5_0'); // 896 is not a multiple of 256
  assert.equal(t('blk.0.ffn_down.weight'), 'Q4_K'); // rows of 4864 = 19 x 256 fit
  const q6 = syntheticModel({ arch: 'qwen2', shape: presetShape('qwen2', 'qwen0.5b'), type: 'q6_k', seed: 1 });
  assert.equal(typeName(q6.tensors.find((x) => x.name === 'blk.0.attn_k.weight')!.type), 'Q8_0');
  const odd = syntheticModel({ arch: 'llama', shape: { ...small, nFF: 100 }, type: 'q8_0', seed: 1 });
  assert.equal(typeName(odd.tensors.find((x) => x.name === 'blk.0.ffn_down.weight')!.type), 'F16'); // rows of 100
  assert.equal(typeName(odd.tensors.find((x) => x.name === 'blk.0.ffn_up.weight')!.type), 'Q8_0'); // rows of 64
  assert.throws(() => syntheticModel({ arch: 'llama', shape: { ...small, nEmbd: 80, nHeads: 4 }, type: 'q8_0', seed: 1 }), /multiple of 32/);
});

test('make-model CLI writes a model and refuses bad options in one sentence', () => {
  withDir((dir) => {
    const out = join(dir, 'cli.gguf');
    const run = (...args: string[]) => spawnSync(process.execPath, [join(root, 'bin/repokv.js'), 'make-model', ...args], { encoding: 'utf8' });
    const ok = run('--arch', 'qwen3', '--layers', '2', '--embd', '128', '--heads', '2', '--kv-heads', '1', '--ff', '256', '--type', 'q6_k', '--seed', '9', '--out', out, '--json');
    assert.equal(ok.status, 0, ok.stderr);
    const summary = JSON.parse(ok.stdout);
    assert.equal(summary.arch, 'qwen3');
    assert.equal(summary.headDim, 128);
    const f = GGUFFile.open(out);
    assert.equal(readHParams(f).nLayers, 2);
    f.close();
    for (const [args, msg] of [
      [['--arch', 'gpt2', '--out', out], /--arch must be one of llama, qwen2, qwen3/],
      [['--arch', 'llama'], /--out FILE is required/],
      [['--arch', 'llama', '--heads', '3', '--out', out], /heads/],
      [['--arch', 'llama', '--vocab', '100', '--out', out], /differs from the llama-bpe tokenizer/],
      [['--arch', 'llama', '--type', 'q4_0', '--q4km', '--out', out], /--q4km/],
      [['--arch', 'llama', '--out', join(dir, 'no', 'such', 'dir', 'x.gguf')], /cannot write/],
    ] as const) {
      const r = run(...args);
      assert.notEqual(r.status, 0, args.join(' '));
      assert.match(r.stderr, msg);
      assert.doesNotMatch(r.stderr, /\n\s+at /, 'no stack trace');
    }
  });
});
