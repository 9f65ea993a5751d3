// `repokv bench engine`: prefill and decode throughput of the engine on one backend, against llama.cpp
// (node-llama-cpp's CPU build) on the same GGUF file with the same thread count, measured in the same
// run. Prints one JSON object per prompt length (--json) with both sides, their ratio and peak RSS.
//
// Protocol, per prompt length L: a fresh KV cache, prefill L tokens (chunks of --chunk, the Engine's
// default 512; logits of the last token only), then --decode greedy steps. llama.cpp runs in a child
// process (its own memory, threads and peak RSS); ours runs in this process. With --repeat R the two
// sides alternate R times and each keeps its best time (the machine may be shared).
// Without --model it writes (once, cached in the temp dir) a synthetic model shaped like
// Qwen2.5-0.5B — 24 layers, 896 wide, 14 heads, 2 KV heads, 4864 FFN, tied embeddings and its real
// vocabulary size of 151936 (the synthetic tokenizer padded with unused tokens) — in --type (q8_0).

import { execFile } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { loadavg, tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { GGUFValueType } from '../gguf/types.js';
import { GGUFFile, type GGUFMetaValue } from '../gguf/reader.js';
import { meta } from '../gguf/writer.js';
import { UserError } from '../errors.js';
import type { Backend, KVCache, KVPool } from '../model/backend.js';
import { loadTransformerConfig } from '../model/config.js';
import { argmax } from '../model/sampler.js';
import { planSyntheticModel, presetShape, writeSyntheticModel, WEIGHT_TYPES, type WeightTypeName } from '../model/synthetic.js';
import { Transformer } from '../model/transformer.js';
import { syntheticTokenizerMetadata } from '../text/synthetic.js';
import { flagNumber, flagString, parseArgs } from '../commands/args.js';
import { createBackend, type BackendChoice } from '../engine.js';
import { defaultThreads } from '../backends/cpu/ort.js';
import { TablePagedKV } from '../kv/table-kv.js';

const USAGE = `usage: repokv bench engine [options]
  --model FILE       GGUF model (default: a synthetic Qwen2.5-0.5B-shaped model, written once to the temp dir)
  --type T           weight type of that default model (default q8_0)
  --backend B        cpu | webgpu | reference (default cpu)
  --threads N        threads for both sides (default: the machine's cores)
  --prompt L,L..     prompt lengths (default 512,4096)
  --decode N         greedy decode steps after each prompt (default 64)
  --chunk N          prefill chunk in tokens (default 512)
  --repeat R         alternate the two sides R times, keep each side's best (default 1)
  --kv K             our KV: contiguous (createKV, default), paged (the backend's page pool, pages in
                     order: one zero-copy run) or scattered (every other page: all keys gathered each step)
  --batch B          also decode B sequences sharing the prompt's pages (paged): one step for all B vs
                     B steps one at a time (aggregate tokens/s; ours only)
  --no-peer          skip llama.cpp
  --json             one JSON object per prompt length`;

const QWEN25_VOCAB = 151936;

interface Side {
  prefill_tps: number;
  decode_tps: number;
  prefill_ms: number;
  decode_ms: number;
}

function root(): string {
  let d = dirname(fileURLToPath(import.meta.url));
  while (!existsSync(join(d, 'package.json'))) {
    const up = dirname(d);
    if (up === d) throw new Error('cannot find the repokv checkout');
    d = up;
  }
  return d;
}

/** The default benchmark model: Qwen2.5-0.5B's shape and vocabulary size, synthetic weights. */
export function defaultBenchModel(type: WeightTypeName): string {
  const dir = join(tmpdir(), 'repokv-bench');
  mkdirSync(dir, { recursive: true });
  const path = join(dir, `qwen2-0.5b-shape-${type}-v${QWEN25_VOCAB}.gguf`);
  if (existsSync(path)) return path;
  // The synthetic qwen2 tokenizer, padded with unused tokens to Qwen2.5's 151936 (llama.cpp needs a
  // vocabulary as large as the embedding table).
  const md = syntheticTokenizerMetadata('qwen2').map(([k, v]): [string, GGUFMetaValue] => {
    if (k !== 'tokenizer.ggml.tokens' && k !== 'tokenizer.ggml.token_type') return [k, v];
    const items = (v.value as { items: (string | number)[] }).items;
    const extra = QWEN25_VOCAB - items.length;
    if (k === 'tokenizer.ggml.tokens') return [k, meta.arr(GGUFValueType.STRING, [...(items as string[]), ...Array.from({ length: extra }, (_, i) => `<|unused_${i}|>`)])];
    return [k, meta.arr(GGUFValueType.INT32, [...(items as number[]), ...new Array<number>(extra).fill(5)])];
  });
  const shape = { ...presetShape('qwen2', 'qwen0.5b'), nVocab: QWEN25_VOCAB };
  process.stderr.write(`bench engine: writing ${path} (once)…\n`);
  writeSyntheticModel(path, planSyntheticModel({ arch: 'qwen2', shape, type, seed: 1, tokenizer: 'qwen2', tokenizerMetadata: md, name: 'qwen2.5-0.5b-shaped synthetic' }));
  return path;
}

function promptTokens(n: number, vocab: number): number[] {
  let s = 12345;
  return Array.from({ length: n }, () => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return 100 + (s % Math.min(vocab - 100, 4000));
  });
}

type KVMode = 'contiguous' | 'paged' | 'scattered';
const PAGE = 64;


function createPool(model: Transformer, backend: Backend, nPages: number): KVPool {
  if (!backend.createKVPool) throw new UserError(`the ${backend.info.name} backend has no KV page pool (--kv paged needs one)`);
  const c = model.cfg;
  return backend.createKVPool({ nLayers: c.nLayers, nKVHeads: c.nKVHeads, headDim: c.headDim, pageSize: PAGE, nPages, dtype: 'f16' });
}

function benchKV(model: Transformer, backend: Backend, tokens: number, mode: KVMode): { kv: KVCache; pool?: KVPool } {
  if (mode === 'contiguous') return { kv: model.createKV(tokens) };
  const n = Math.ceil(tokens / PAGE);
  const pool = createPool(model, backend, 2 * n);
  const table = Int32Array.from({ length: n }, (_, i) => (mode === 'paged' ? i : 2 * i));
  return { kv: new TablePagedKV(pool, table), pool };
}

interface BatchSide {
  batch: number;
  batched_tps: number;
  separate_tps: number;
}

/** B sequences sharing the prompt's full pages (each with a copy of the partial one): one step for all vs one at a time. */
async function runBatch(model: Transformer, backend: Backend, prompt: number[], nGen: number, chunk: number, B: number): Promise<BatchSide> {
  const full = Math.floor(prompt.length / PAGE);
  const own = Math.ceil((prompt.length + 2 * nGen + 2) / PAGE) - full;
  const pool = createPool(model, backend, full + (B + 1) * own);
  const base = new TablePagedKV(pool, Int32Array.from({ length: full + own }, (_, i) => i));
  let logits: Float32Array = new Float32Array(0);
  for (let s = 0; s < prompt.length; s += chunk) {
    const e = Math.min(prompt.length, s + chunk);
    logits = await model.forward({ tokens: Int32Array.from(prompt.slice(s, e)), positions: Int32Array.from({ length: e - s }, (_, i) => s + i), seqs: [{ kv: base, row: 0, n: e - s, pos: s }], logitRows: e === prompt.length ? [e - s - 1] : [] });
  }
  const seqs = Array.from({ length: B }, (_, b) => {
    const table = Int32Array.from({ length: full + own }, (_, i) => (i < full ? i : full + (b + 1) * own + (i - full)));
    if (prompt.length % PAGE) pool.copyPage(full, table[full]);
    const kv = new TablePagedKV(pool, table);
    kv.length = prompt.length;
    return kv;
  });
  const first = argmax(logits);
  const step = (kvs: TablePagedKV[], toks: number[]) =>
    model.forward({
      tokens: Int32Array.from(toks),
      positions: Int32Array.from(kvs, (k) => k.length),
      seqs: kvs.map((kv, i) => ({ kv, row: i, n: 1, pos: kv.length })),
      logitRows: kvs.map((_, i) => i),
    });
  // Batched: nGen steps of B rows; then separate: nGen steps of 1 row for each sequence (further on).
  const t0 = performance.now();
  let toks = seqs.map(() => first);
  for (let i = 0; i < nGen; i++) {
    const out = await step(seqs, toks);
    toks = seqs.map((_, b) => argmax(out.subarray(b * model.cfg.nVocab, (b + 1) * model.cfg.nVocab)));
  }
  const t1 = performance.now();
  for (let i = 0; i < nGen; i++) for (const [b, kv] of seqs.entries()) toks[b] = argmax(await step([kv], [toks[b]]));
  const t2 = performance.now();
  pool.dispose();
  return { batch: B, batched_tps: +(((B * nGen) / (t1 - t0)) * 1000).toFixed(2), separate_tps: +(((B * nGen) / (t2 - t1)) * 1000).toFixed(2) };
}

async function runOurs(model: Transformer, backend: Backend, prompt: number[], nGen: number, chunk: number, mode: KVMode = 'contiguous'): Promise<Side> {
  const { kv, pool } = benchKV(model, backend, prompt.length + nGen + 1, mode);
  const t0 = performance.now();
  let logits: Float32Array = new Float32Array(0);
  for (let s = 0; s < prompt.length; s += chunk) {
    const e = Math.min(prompt.length, s + chunk);
    const n = e - s;
    logits = await model.forward({
      tokens: Int32Array.from(prompt.slice(s, e)),
      positions: Int32Array.from({ length: n }, (_, i) => s + i),
      seqs: [{ kv, row: 0, n, pos: s }],
      logitRows: e === prompt.length ? [n - 1] : [],
    });
  }
  const t1 = performance.now();
  let pos = prompt.length;
  for (let i = 0; i < nGen; i++) {
    const t = argmax(logits);
    logits = await model.forward({ tokens: Int32Array.of(t), positions: Int32Array.of(pos), seqs: [{ kv, row: 0, n: 1, pos }], logitRows: [0] });
    pos++;
  }
  const t2 = performance.now();
  kv.free();
  pool?.dispose();
  return { prefill_ms: t1 - t0, decode_ms: t2 - t1, prefill_tps: (prompt.length / (t1 - t0)) * 1000, decode_tps: (nGen / (t2 - t1)) * 1000 };
}

interface PeerOut {
  results: { n: number; prefillMs: number; decodeMs: number; nGen: number }[];
  loadMs: number;
  peakRssMb: number;
  version: string;
}

/** llama.cpp (node-llama-cpp's CPU build) on the same file and token ids, in its own process. */
export function runPeer(model: string, prompts: number[][], nGen: number, threads: number, chunk: number): Promise<PeerOut> {
  const child = join(root(), 'engine', 'bench', 'llama-child.mjs');
  let arg = JSON.stringify({ model, prompts, nGen, threads, batchSize: chunk });
  // Long prompts exceed the argument list (E2BIG): hand them over in a file.
  let file: string | null = null;
  if (arg.length > 64 * 1024) {
    file = join(mkdtempSync(join(tmpdir(), 'repokv-llama-')), 'request.json');
    writeFileSync(file, arg);
    arg = '@' + file;
  }
  return new Promise((resolve, reject) => {
    execFile(process.execPath, [child, arg], { maxBuffer: 16 << 20, timeout: 3_600_000 }, (err, stdout, stderr) => {
      if (file) rmSync(dirname(file), { recursive: true, force: true });
      if (err) return reject(new UserError(`llama.cpp (node-llama-cpp) failed on ${model}: ${(stderr || err.message).trim().split('\n').slice(-3).join(' ')}`));
      try {
        resolve(JSON.parse(stdout.trim().split('\n').pop() ?? '') as PeerOut);
      } catch {
        reject(new Error(`llama.cpp child printed no JSON: ${stdout.slice(-500)}`));
      }
    });
  });
}

export async function run(args: string[]): Promise<number> {
  const p = parseArgs(args, ['json', 'no-peer', 'help']);
  if (p.flags.has('help')) {
    console.log(USAGE);
    return 0;
  }
  const type = (flagString(p, 'type') ?? 'q8_0') as WeightTypeName;
  if (!(type in WEIGHT_TYPES)) throw new UserError(`--type must be one of ${Object.keys(WEIGHT_TYPES).join(', ')}`);
  const modelPath = flagString(p, 'model') ?? defaultBenchModel(type);
  const backendName = (flagString(p, 'backend') ?? 'cpu') as BackendChoice;
  const threads = flagNumber(p, 'threads', defaultThreads());
  const lengths = (flagString(p, 'prompt') ?? '512,4096').split(',').map((s) => Number(s.trim()));
  if (lengths.some((n) => !Number.isInteger(n) || n < 1)) throw new UserError('--prompt takes positive whole numbers, e.g. 512,4096');
  const nGen = flagNumber(p, 'decode', 64);
  const chunk = flagNumber(p, 'chunk', 512);
  const repeat = Math.max(1, flagNumber(p, 'repeat', 1));
  const peer = !p.flags.has('no-peer');
  const json = p.flags.has('json');
  const kvMode = (flagString(p, 'kv') ?? 'contiguous') as KVMode;
  if (!['contiguous', 'paged', 'scattered'].includes(kvMode)) throw new UserError('--kv must be contiguous, paged or scattered');
  const batch = flagNumber(p, 'batch', 0);

  const file = GGUFFile.open(modelPath);
  const cfg = loadTransformerConfig(file);
  const t0 = performance.now();
  const backend = await createBackend(backendName, { threads });
  const model = new Transformer(cfg, backend);
  model.load(file);
  file.close();
  const loadMs = performance.now() - t0;
  // First step compiles the graphs (CPU backend): timed on its own, not in the throughput.
  const t1 = performance.now();
  await runOurs(model, backend, promptTokens(1, cfg.nVocab), 1, chunk);
  const warmupMs = performance.now() - t1;
  const prompts = lengths.map((n) => promptTokens(n, cfg.nVocab));
  if (Math.max(...lengths) + nGen > cfg.contextLength) throw new UserError(`a ${Math.max(...lengths)}-token prompt plus ${nGen} steps exceeds the model's context of ${cfg.contextLength}`);

  const best = <T extends Side>(a: T | undefined, b: T): T => (!a ? b : { ...a, prefill_ms: Math.min(a.prefill_ms, b.prefill_ms), decode_ms: Math.min(a.decode_ms, b.decode_ms), prefill_tps: Math.max(a.prefill_tps, b.prefill_tps), decode_tps: Math.max(a.decode_tps, b.decode_tps) });
  const ours: (Side | undefined)[] = lengths.map(() => undefined);
  const theirs: (Side | undefined)[] = lengths.map(() => undefined);
  let peerInfo: PeerOut | undefined;
  const batched: (BatchSide | undefined)[] = lengths.map(() => undefined);
  for (let r = 0; r < repeat; r++) {
    for (let i = 0; i < prompts.length; i++) ours[i] = best(ours[i], await runOurs(model, backend, prompts[i], nGen, chunk, kvMode));
    if (peer) {
      const out = await runPeer(modelPath, prompts, nGen, threads, chunk);
      peerInfo = !peerInfo || out.peakRssMb > peerInfo.peakRssMb ? out : peerInfo;
      out.results.forEach((x, i) => {
        theirs[i] = best(theirs[i], { prefill_ms: x.prefillMs, decode_ms: x.decodeMs, prefill_tps: (x.n / x.prefillMs) * 1000, decode_tps: (x.nGen / x.decodeMs) * 1000 });
      });
    }
  }
  if (batch > 1) {
    for (let i = 0; i < prompts.length; i++) batched[i] = await runBatch(model, backend, prompts[i], nGen, chunk, batch);
  }
  const peakRssMb = process.resourceUsage().maxRSS / 1024;
  const stats = (backend as unknown as { stats?: unknown; residentBytes?: number }).stats;
  const resident = (backend as unknown as { residentBytes?: number }).residentBytes;
  // WebGPU: buffers alive now and at their peak (engine/backends/webgpu/device.ts counts them).
  const gpuMemory = (backend as unknown as { ctx?: { memory?: { bytes: number; peakBytes: number } } }).ctx?.memory;
  lengths.forEach((n, i) => {
    const o = ours[i]!;
    const t = theirs[i];
    const rec: Record<string, unknown> = {
      bench: 'engine',
      model: modelPath,
      arch: cfg.arch,
      backend: backend.info.name,
      device: backend.info.device,
      threads,
      // The machine may be shared: its load average when the measurements ended (cores: os.availableParallelism).
      load_avg_1m: +loadavg()[0].toFixed(2),
      prompt: n,
      decode_steps: nGen,
      kv: kvMode,
      repokv: { prefill_tps: +o.prefill_tps.toFixed(1), decode_tps: +o.decode_tps.toFixed(2), load_ms: Math.round(loadMs), first_step_ms: Math.round(warmupMs), peak_rss_mb: Math.round(peakRssMb), weights_resident_mb: resident !== undefined ? Math.round(resident / 2 ** 20) : undefined, gpu_mb: gpuMemory ? Math.round(gpuMemory.bytes / 2 ** 20) : undefined, gpu_peak_mb: gpuMemory ? Math.round(gpuMemory.peakBytes / 2 ** 20) : undefined },
    };
    if (t && peerInfo) {
      rec['llama.cpp'] = { prefill_tps: +t.prefill_tps.toFixed(1), decode_tps: +t.decode_tps.toFixed(2), load_ms: Math.round(peerInfo.loadMs), peak_rss_mb: Math.round(peerInfo.peakRssMb), version: peerInfo.version };
      rec.ratio = { prefill: +(o.prefill_tps / t.prefill_tps).toFixed(3), decode: +(o.decode_tps / t.decode_tps).toFixed(3) };
    }
    if (batched[i]) rec.batch = batched[i];
    if (stats) rec.backend_stats = stats;
    if (json) console.log(JSON.stringify(rec));
    else {
      const peerTxt = t ? `  llama.cpp: prefill ${t.prefill_tps.toFixed(1)} tok/s, decode ${t.decode_tps.toFixed(2)} tok/s  ratio ${(o.prefill_tps / t.prefill_tps).toFixed(2)}× / ${(o.decode_tps / t.decode_tps).toFixed(2)}×` : '';
      console.log(`${n} tokens, ${threads} threads, ${backend.info.name}: prefill ${o.prefill_tps.toFixed(1)} tok/s, decode ${o.decode_tps.toFixed(2)} tok/s, peak RSS ${Math.round(peakRssMb)} MB${peerTxt}`);
    }
  });
  backend.dispose();
  return 0;
}
