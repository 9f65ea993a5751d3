// WebGPU engine benchmark for scripts/gpu-check.sh: prefill and greedy decode through the Engine API
// (paged f16 KV, tokens picked on the GPU) on a synthetic model, one JSON object on stdout.
//
//   node --import tsx scripts/gpu-bench.ts [--size qwen1.5b|qwen0.5b|small|tiny] [--vocab N]
//        [--prompt 512] [--decode 128] [--repeat 2] [--allow-software] [--bandwidth 4.8e12] [--dir D]
//        [--write-only]   (only write the model file)
//
// The model: qwen2 architecture in llama.cpp's Q4_K_M mix, the preset's shape, and (by default for the
// qwen presets) Qwen2.5's real vocabulary of 151,936 tokens — the synthetic tokenizer padded with unused
// tokens — so the tied output matrix weighs what it does in the real model. Written once into --dir
// (default: the temp dir). Speed does not depend on the weights' values, and quantizing 1.5 B random
// values in JavaScript takes minutes, so each 2-D weight is 64 random rows repeated (norms and biases
// are fully random): the logits are meaningless, the bytes read per token are the real model's.
//
// Decode speed is also given as a fraction of the memory-bandwidth bound: every weight byte is read once
// per token (the embeddings too: they are the tied output matrix), so tokens/s ≤ bandwidth ÷ weight
// bytes. --bandwidth defaults to an H200's 4.8 TB/s.

import { existsSync, mkdirSync, renameSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { GGUFFile, type GGUFMetaValue } from '../engine/gguf/reader.js';
import { GGUFValueType, tensorBytes } from '../engine/gguf/types.js';
import { quantize } from '../engine/gguf/quant.js';
import { meta, writeGGUFStream } from '../engine/gguf/writer.js';
import { planSyntheticModel, presetShape, tensorValues, type SizePreset } from '../engine/model/synthetic.js';
import { syntheticTokenizerMetadata } from '../engine/text/synthetic.js';
import { Engine } from '../engine/engine.js';

const QWEN25_VOCAB = 151936;
const TILE_ROWS = 64;

function flag(name: string): string | undefined {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? process.argv[i + 1] : undefined;
}
const num = (name: string, d: number): number => Number(flag(name) ?? d);

const size = (flag('size') ?? 'qwen1.5b') as SizePreset;
const vocab = num('vocab', size.startsWith('qwen') ? QWEN25_VOCAB : 0);
const promptLen = num('prompt', 512);
const decode = num('decode', 128);
const repeat = Math.max(1, num('repeat', 2));
const bandwidth = num('bandwidth', 4.8e12);
const allowSoftware = process.argv.includes('--allow-software');
const dir = flag('dir') ?? join(tmpdir(), 'repokv-bench');

/** The benchmark model (written once): path and seconds spent writing it (0 when reused). */
function benchModel(): { path: string; writeS: number } {
  mkdirSync(dir, { recursive: true });
  const path = join(dir, `gpu-bench-qwen2-${size}-q4km-v${vocab || 'synthetic'}-tiled${TILE_ROWS}.gguf`);
  if (existsSync(path)) return { path, writeS: 0 };
  const t0 = performance.now();
  let md = syntheticTokenizerMetadata('qwen2');
  if (vocab > 0) {
    md = md.map(([k, v]): [string, GGUFMetaValue] => {
      if (k !== 'tokenizer.ggml.tokens' && k !== 'tokenizer.ggml.token_type') return [k, v];
      const items = (v.value as { items: (string | number)[] }).items;
      const extra = vocab - items.length;
      if (extra < 0) throw new Error(`--vocab ${vocab} is smaller than the synthetic tokenizer's ${items.length} tokens`);
      if (k === 'tokenizer.ggml.tokens') return [k, meta.arr(GGUFValueType.STRING, [...(items as string[]), ...Array.from({ length: extra }, (_, i) => `<|unused_${i}|>`)])];
      return [k, meta.arr(GGUFValueType.INT32, [...(items as number[]), ...new Array<number>(extra).fill(5)])];
    });
  }
  const shape = { ...presetShape('qwen2', size), ...(vocab > 0 ? { nVocab: vocab } : {}) };
  const plan = planSyntheticModel({ arch: 'qwen2', shape, type: 'q4_k', q4km: true, seed: 1, tokenizer: 'qwen2', tokenizerMetadata: md, name: `gpu-bench ${size} (tiled weights)` });
  const tmp = path + '.part';
  writeGGUFStream(tmp, {
    metadata: plan.metadata,
    tensors: plan.tensors.map((t) => ({
      name: t.name,
      dims: t.dims,
      type: t.type,
      produce: () => {
        const rows = t.dims.slice(1).reduce((a, b) => a * b, 1);
        if (t.dims.length < 2 || rows <= TILE_ROWS) return quantize(t.type, tensorValues(plan, t));
        const tile = quantize(t.type, tensorValues(plan, { ...t, dims: [t.dims[0], TILE_ROWS] }));
        const rowBytes = tensorBytes(t.type, t.dims[0]);
        const out = new Uint8Array(rows * rowBytes);
        for (let r = 0; r < rows; r += TILE_ROWS) out.set(tile.subarray(0, Math.min(TILE_ROWS, rows - r) * rowBytes), r * rowBytes);
        return out;
      },
    })),
  });
  renameSync(tmp, path);
  return { path, writeS: (performance.now() - t0) / 1000 };
}

function tokens(n: number, nVocab: number, seed: number): number[] {
  let s = seed >>> 0;
  return Array.from({ length: n }, () => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return 100 + (s % Math.min(nVocab - 100, 4000));
  });
}

const { path, writeS } = benchModel();
if (process.argv.includes('--write-only')) {
  console.log(JSON.stringify({ model: path, model_write_s: +writeS.toFixed(1), model_file_bytes: statSync(path).size }));
  process.exit(0);
}
const file = GGUFFile.open(path);
const weightBytes = file.tensors.reduce((s, t) => s + t.nBytes, 0);
const nParams = file.tensors.reduce((s, t) => s + t.nElements, 0);
file.close();

const t0 = performance.now();
const engine = await Engine.load({ model: path, backend: 'webgpu', allowSoftwareGpu: allowSoftware, contextSize: promptLen + decode + 64, kv: { prefixCaching: false } });
const loadS = (performance.now() - t0) / 1000;
try {
  const nVocab = engine.config.nVocab;
  // First step compiles the pipelines: timed on its own.
  const t1 = performance.now();
  {
    const s = engine.createSequence(64);
    const l = await engine.prefill(s, tokens(16, nVocab, 1));
    for await (const _ of engine.generate(s, l, { maxTokens: 3, stopAtEog: false })) void _;
    engine.freeSequence(s);
  }
  const warmS = (performance.now() - t1) / 1000;
  let best: { prefill_tps: number; decode_tps: number } | undefined;
  for (let r = 0; r < repeat; r++) {
    const s = engine.createSequence(promptLen + decode + 8);
    const a = performance.now();
    const logits = await engine.prefill(s, tokens(promptLen, nVocab, 100 + r));
    const b = performance.now();
    let first = 0;
    let n = 0;
    for await (const c of engine.generate(s, logits, { maxTokens: decode, stopAtEog: false })) {
      if (c.token < 0) continue;
      if (n === 0) first = performance.now();
      n++;
    }
    const e = performance.now();
    engine.freeSequence(s);
    const prefillTps = (promptLen / (b - a)) * 1000;
    const decodeTps = n > 1 ? ((n - 1) / (e - first)) * 1000 : 0; // n − 1 forward steps after the first token
    best = !best ? { prefill_tps: prefillTps, decode_tps: decodeTps } : { prefill_tps: Math.max(best.prefill_tps, prefillTps), decode_tps: Math.max(best.decode_tps, decodeTps) };
  }
  const info = engine.backend.info;
  console.log(
    JSON.stringify({
      bench: 'gpu-engine',
      model: path,
      size,
      arch: 'qwen2',
      type: 'Q4_K_M',
      weights: `random, ${TILE_ROWS}-row tiles repeated (speed only)`,
      params: nParams,
      vocab: nVocab,
      weight_bytes: weightBytes,
      device: info.device,
      software: (info.details as { software?: boolean }).software ?? null,
      prompt: promptLen,
      decode_tokens: decode,
      repeat,
      prefill_tps: +best!.prefill_tps.toFixed(1),
      decode_tps: +best!.decode_tps.toFixed(2),
      decode_ms_per_token: +(1000 / best!.decode_tps).toFixed(3),
      bandwidth_bytes_per_s: bandwidth,
      bandwidth_bound_tps: +(bandwidth / weightBytes).toFixed(1),
      bandwidth_fraction: +((weightBytes * best!.decode_tps) / bandwidth).toFixed(4),
      model_write_s: +writeS.toFixed(1),
      model_file_bytes: statSync(path).size,
      load_s: +loadS.toFixed(2),
      first_steps_s: +warmS.toFixed(2),
    }),
  );
} finally {
  engine.dispose();
}
