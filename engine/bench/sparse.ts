// `repokv bench sparse`: sparse prefill (MInference patterns, issue 8) against our own dense path, in
// one run, on one engine (same backend, same graphs, prefix caching off so nothing is reused).
//
// Per length: the prompt is a passkey task (filler text with a needle and a question, the same ids the
// fidelity harness uses), prefilled dense, then sparse; both answer greedily, so every line also says
// whether the sparse prefill still finds the needle. Reported: whole-prefill time of both, attention
// time of both (the CPU backend keeps attention outside the step graphs in sparse mode, so the dense
// attention graphs are timed on their own), index-estimation time and its share, density (fraction of
// causal entries computed), and attention recall exp(lse_sparse − lse_full) per layer/head (median, 5th
// percentile), sampled on the last 64 rows of every sparse call against dense attention over the same
// keys. Without --model it uses the constructed induction model (engine/model/induction.ts): two
// layers whose heads are a pure slash pattern (layer 0) and a needle-reading induction head (layer 1),
// i.e. planted structure; random-weight models attend diffusely (say so when reading their recall).
//
// A second section (`--planted`, on by default) times the attention op alone on planted inputs at each
// length — queries/keys built so that each row attends a sink, a local diagonal band and a few needle
// columns — dense vs sparse with the same budgets, with recall: the structure real models show.

import { copyFileSync, existsSync, mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { AssistantService } from '../assistant/service.js';
import { runPeer } from './engine.js';
import { defaultThreads } from '../backends/cpu/ort.js';
import { UserError } from '../errors.js';
import { flagNumber, flagString, parseArgs, parseTokenCount } from '../commands/args.js';
import { GGUFFile } from '../gguf/reader.js';
import { Tokenizer } from '../text/tokenizer.js';
import { Engine, type BackendChoice } from '../engine.js';
import { DEFAULT_SPARSE_THRESHOLD, DEFAULT_VS, scalePattern, withPattern, type SparseModelConfig } from '../attention/sparse/config.js';
import type { SparsePattern } from '../attention/sparse/patterns.js';
import { passkeyTask } from '../fidelity/tasks.js';
import { defaultInductionModel } from './fidelity.js';
import { recallStats, buildGroupIndex, type HeadGroupInput } from '../attention/sparse/attention.js';
import { BatchedSparseCpu } from '../attention/sparse/batched-cpu.js';
import { CPU_SPARSE_BLOCK } from '../backends/cpu/host-attention.js';
import { CpuAttention } from '../attention/cpu-attention.js';
import { CpuVerticalSlashEstimator } from '../attention/sparse/estimate-cpu.js';
import { indexDensity } from '../attention/sparse/patterns.js';
import { Rng } from '../model/synthetic.js';
import type { CpuBackend } from '../backends/cpu/index.js';
import { storedSparseConfig } from '../engine.js';
import { loadTransformerConfig } from '../model/config.js';
import { argmax } from '../model/sampler.js';

const USAGE = `usage: repokv bench sparse [options]
  --model FILE        GGUF model (default: the constructed induction model)
  --lengths L,L..     prompt lengths, K suffix allowed (default 16K,32K,64K,128K)
  --pattern P         every head: vs:V,S | ashape:SINK,LOCAL | block:K | config (the stored/default
                      per-head config; default). With --cache-dir, config reads \`repokv calibrate\`'s file.
  --cache-dir DIR     where \`repokv calibrate\` wrote the model's config
  --threads N         CPU threads (default: the machine's cores)
  --chunk N           sparse prefill chunk (default 8192); dense uses the engine default (512)
  --no-planted        skip the attention-only section on planted inputs
  --dense-host        also prefill with every head 'dense' through the sparse path (same chunk size,
                      same host tiles): separates the gain of sparsity from that of the path
  --ask DIR           also: time to first token of \`repokv ask DIR\` cold (the real assistant path:
                      walk, tokenize, prefill) with sparse prefill, against llama.cpp's dense prefill
                      of the same prompt tokens (same file, same threads); --ask-ctx N sets the
                      context (default 98304; the model's own must be as long)
  --json              one JSON object per length, then a summary`;

export function parsePattern(s: string): SparsePattern | 'config' {
  if (s === 'config') return 'config';
  const [kind, rest = ''] = s.split(':');
  const n = rest.split(/[,/]/).map(Number);
  const ok = (k: number) => n.length === k && n.every((x) => Number.isInteger(x) && x > 0);
  if (kind === 'vs' && ok(2)) return { kind: 'vertical-slash', vertical: n[0], slash: n[1] };
  if (kind === 'ashape' && ok(2)) return { kind: 'a-shape', sink: n[0], local: n[1] };
  if (kind === 'block' && ok(1)) return { kind: 'block-sparse', blocks: n[0] };
  if (kind === 'dense') return { kind: 'dense' };
  throw new UserError(`--pattern "${s}" is not one of vs:V,S  ashape:SINK,LOCAL  block:K  dense  config`);
}

const ms = (x: number) => Math.round(x * 10) / 10;

export async function run(args: string[]): Promise<number> {
  const p = parseArgs(args, ['json', 'help', 'no-planted', 'no-prefill', 'dense-host']);
  if (p.flags.has('help')) {
    console.log(USAGE);
    return 0;
  }
  const known = new Set(['model', 'lengths', 'pattern', 'cache-dir', 'threads', 'chunk', 'no-planted', 'json', 'help', 'backend', 'ask', 'ask-ctx', 'no-prefill', 'dense-host']);
  for (const k of p.flags.keys()) if (!known.has(k)) throw new UserError(`unknown option --${k} (see repokv bench sparse --help)`);
  const json = p.flags.has('json');
  const model = flagString(p, 'model') ?? defaultInductionModel();
  if (!existsSync(model)) throw new UserError(`model file ${model} does not exist; give an existing GGUF file to --model`);
  const lengths = (flagString(p, 'lengths') ?? '16K,32K,64K,128K').split(',').map(parseTokenCount);
  const pattern = parsePattern(flagString(p, 'pattern') ?? 'config');
  const threads = p.flags.has('threads') ? flagNumber(p, 'threads', 0) : undefined;
  const chunk = flagNumber(p, 'chunk', 8192);
  const backend = (flagString(p, 'backend') ?? 'cpu') as BackendChoice;
  const cacheDir = flagString(p, 'cache-dir');
  const emit = (o: Record<string, unknown>) => {
    if (json) console.log(JSON.stringify(o));
  };

  const file = GGUFFile.open(model);
  let tok: Tokenizer;
  let cfg: SparseModelConfig;
  try {
    tok = Tokenizer.fromGGUF(file);
    const tc = loadTransformerConfig(file);
    cfg = storedSparseConfig(model, file, tc, cacheDir);
    if (pattern !== 'config') cfg = withPattern(cfg, pattern);
  } finally {
    file.close();
  }
  const maxLen = Math.max(...lengths);
  // Sparse at every measured length: the threshold is the bench's business here (the engine default is
  // 32K); budgets still scale with the context as in production (config.ts scalePattern).
  const engine = await Engine.load({
    model,
    backend,
    threads,
    contextSize: maxLen + 64,
    kv: { prefixCaching: false },
    sparse: { config: { ...cfg, threshold: Math.min(cfg.threshold, Math.floor(Math.min(...lengths) / 2)) }, chunk },
  });
  const results: Record<string, unknown>[] = [];
  try {
    const cpu = engine.backend.info.name === 'cpu' ? (engine.backend as CpuBackend) : null;
    if (p.flags.has('no-prefill')) lengths.length = 0;
    if (cpu) cpu.host.recall = [];
    for (const L of lengths) {
      const task = passkeyTask(tok, { length: L, depth: 0.5, seed: 1 });
      const q = task.questions[0];
      const prompt = [...task.context, ...q.tokens];
      const answer = async (sparse: boolean) => {
        const seq = engine.createSequence(prompt.length + q.answer.length + 8);
        const st = cpu ? { ...cpu.stats } : null;
        const t0 = performance.now();
        let logits = await engine.prefill(seq, prompt, { sparse });
        const prefillMs = performance.now() - t0;
        const attMs = cpu && st ? cpu.stats.attentionRunMs - st.attentionRunMs : null;
        const got: number[] = [];
        for (let i = 0; i < q.answer.length; i++) {
          const best = argmax(logits);
          got.push(best);
          logits = (await engine.decodeStep([seq], [best]))[0];
        }
        engine.freeSequence(seq);
        return { prefillMs, attMs, correct: got.every((t, i) => t === q.answer[i]), report: seq.lastPrefill };
      };
      const dense = await answer(false);
      // Every head 'dense' through the sparse path: same chunks, same host tiles, nothing dropped.
      let denseHost: { prefillMs: number } | null = null;
      if (p.flags.has('dense-host')) {
        const keep = engine.sparse!.heads;
        (engine.sparse as { heads: SparsePattern[][] }).heads = keep.map((l) => l.map(() => ({ kind: 'dense' as const })));
        try {
          denseHost = await answer(true);
        } finally {
          (engine.sparse as { heads: SparsePattern[][] }).heads = keep;
        }
      }
      const s0 = { ...engine.backend.sparseStats! };
      if (cpu) cpu.host.recall = [];
      const sparse = await answer(true);
      const s1 = engine.backend.sparseStats!;
      const recall = cpu?.host.recall?.map((l) => l.map((rows) => recallStats(Float64Array.from(rows)))) ?? null;
      const kept = s1.keptEntries - s0.keptEntries;
      const causal = s1.causalEntries - s0.causalEntries;
      const estimateMs = s1.estimateMs - s0.estimateMs;
      const sparseAttMs = s1.attentionMs - s0.attentionMs;
      const r = {
        bench: 'sparse',
        section: 'prefill',
        model,
        backend: engine.backend.info.device,
        config: pattern === 'config' ? cfg.source : pattern,
        length: prompt.length,
        denseChunk: engine.prefillChunk,
        sparseChunk: chunk,
        dense: { prefillMs: ms(dense.prefillMs), attentionMs: dense.attMs === null ? null : ms(dense.attMs), correct: dense.correct },
        sparse: {
          prefillMs: ms(sparse.prefillMs),
          attentionMs: ms(sparseAttMs),
          estimateMs: ms(estimateMs),
          estimateShare: +(estimateMs / sparse.prefillMs).toFixed(4),
          density: causal ? +(kept / causal).toFixed(4) : 1,
          correct: sparse.correct,
          sparsePrefill: !!sparse.report?.sparse,
        },
        prefillSpeedup: +(dense.prefillMs / sparse.prefillMs).toFixed(2),
        ...(denseHost ? { denseHostPrefillMs: ms(denseHost.prefillMs), speedupOverDenseHost: +(denseHost.prefillMs / sparse.prefillMs).toFixed(2) } : {}),
        attentionSpeedup: dense.attMs ? +(dense.attMs / sparseAttMs).toFixed(2) : null,
        recall: recall?.map((l) => l.map((x) => ({ median: +x.median.toFixed(4), p5: +x.p5.toFixed(4) }))) ?? null,
      };
      results.push(r);
      emit(r);
      if (!json) {
        console.log(
          `${String(r.length).padStart(7)} tokens: dense ${(dense.prefillMs / 1000).toFixed(2)} s (attention ${dense.attMs ? (dense.attMs / 1000).toFixed(2) : '?'} s), ` +
            `sparse ${(sparse.prefillMs / 1000).toFixed(2)} s (attention ${(sparseAttMs / 1000).toFixed(2)} s, estimate ${(estimateMs / 1000).toFixed(2)} s), ` +
            `${r.prefillSpeedup}× whole prefill, density ${r.sparse.density}, answers dense ${dense.correct ? 'right' : 'WRONG'} / sparse ${sparse.correct ? 'right' : 'WRONG'}`,
        );
        if (recall) console.log(`         recall median/p5 per layer/head: ${recall.map((l, i) => `L${i} ` + l.map((x) => `${x.median.toFixed(3)}/${x.p5.toFixed(3)}`).join(' ')).join('  ')}`);
      }
    }
  } finally {
    engine.dispose();
  }
  if (!p.flags.has('no-planted')) {
    // The model's calibrated heads describe that model's attention, not the planted one: default
    // budgets (scaled to the length as in production) unless a pattern was given.
    for (const L of lengths) {
      const pat = pattern === 'config' ? scalePattern(DEFAULT_VS, L, DEFAULT_SPARSE_THRESHOLD) : pattern;
      const r = plantedAttention(L, pat, threads);
      results.push(r);
      emit(r);
      if (!json) console.log(`planted ${String(L).padStart(7)}: dense attention ${(r.denseMs / 1000).toFixed(2)} s, sparse ${(r.sparseMs / 1000).toFixed(2)} s (${r.speedup}×), density ${r.density}, recall median ${r.recall.median} p5 ${r.recall.p5}`);
    }
  }
  const askDir = flagString(p, 'ask');
  if (askDir) {
    const r = await askTtft(model, askDir, flagNumber(p, 'ask-ctx', 98304), cacheDir, cfg, threads);
    results.push(r);
    emit(r);
    if (!json) {
      console.log(
        `ask ${askDir}: ${r.promptTokens} prompt tokens, sparse prefill ${r.sparsePrefill ? 'on' : 'OFF'}: prefill ${(r.prefillMs / 1000).toFixed(1)} s, ` +
          `first token ${(r.timeToFirstTokenMs / 1000).toFixed(1)} s (walk, tokenize, load included); llama.cpp dense prefill ${(r.llamaPrefillMs / 1000).toFixed(1)} s → ${r.prefillSpeedupVsLlama}× (prefill), ${r.ttftSpeedupVsLlama}× (first token)`,
      );
    }
  }
  emit({ bench: 'sparse', summary: true, lengths, pattern: pattern === 'config' ? cfg.source : pattern });
  return 0;
}

/**
 * `repokv ask DIR` cold, through the real assistant path (a fresh cache folder holding only the
 * model's sparse config), then llama.cpp prefilling exactly the same prompt ids, one run.
 */
async function askTtft(model: string, dir: string, ctx: number, calibrated: string | undefined, cfg: SparseModelConfig, threads?: number) {
  const tmp = mkdtempSync(join(tmpdir(), 'repokv-ask-ttft-'));
  try {
    if (calibrated) {
      const src = join(calibrated, cfg.fingerprint, 'sparse.json');
      if (existsSync(src)) {
        mkdirSync(join(tmp, 'kv', cfg.fingerprint), { recursive: true });
        copyFileSync(src, join(tmp, 'kv', cfg.fingerprint, 'sparse.json'));
      }
    }
    const service = new AssistantService({ cacheDir: tmp, model, backend: 'cpu', contextSize: ctx });
    let prompt: number[] = [];
    let st;
    try {
      st = (await service.ask({ roots: [dir], question: 'Explain how this repository is organised.', maxTokens: 1, onPrompt: (t) => (prompt = [...t]) })).status;
    } finally {
      await service.close();
    }
    const peer = await runPeer(model, [prompt], 0, threads ?? defaultThreads(), 512);
    const llamaPrefillMs = peer.results[0].prefillMs;
    return {
      bench: 'sparse',
      section: 'ask-ttft',
      model,
      folder: dir,
      promptTokens: prompt.length,
      sparsePrefill: !!st.sparsePrefill,
      config: calibrated ? 'calibrated' : 'default',
      prefillMs: ms(st.prefillMs),
      timeToFirstTokenMs: ms(st.timeToFirstTokenMs),
      llamaPrefillMs: ms(llamaPrefillMs),
      llama: peer.version,
      prefillSpeedupVsLlama: +(llamaPrefillMs / st.prefillMs).toFixed(2),
      ttftSpeedupVsLlama: +(llamaPrefillMs / st.timeToFirstTokenMs).toFixed(2),
    };
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
}

/**
 * The attention op alone on planted inputs: one head group (2 query heads, d 128) of L keys where
 * every query attends to the sink (key 0), to its neighbourhood with a power-law tail (RoPE-like
 * decay) and to 8 needle columns; the rest is noise. Dense (CpuAttention over all keys)
 * vs sparse (estimate + index + BatchedSparseCpu) on the same inputs; recall on the last 512 rows
 * against the dense lse (sparse rows are exact where they keep the mass).
 */
export function plantedAttention(L: number, pattern: SparsePattern, threads?: number) {
  const d = 128;
  const H = 2;
  const rng = new Rng(L);
  const q = new Float32Array(L * H * d);
  const k = new Float32Array(L * d);
  const v = new Float32Array(L * d);
  for (let i = 0; i < q.length; i++) q[i] = rng.normal() * 0.3;
  for (let i = 0; i < k.length; i++) {
    k[i] = rng.normal() * 0.3;
    v[i] = rng.normal();
  }
  // Dimension 0: every query has a large component; the sink (key 0) and the needles a large key there.
  // Dimensions 1..96: 48 RoPE-like pairs at log-spaced frequencies θ_m = 10000^(−m/48), q_i = A·(cos θi,
  // sin θi), k_j = (cos θj, sin θj): q·k = A Σ cos(θ_m (i − j)) ≈ 48·A·(1 − log10(i − j)/4), i.e. scores
  // that fall off with the log of the distance — RoPE's long-term decay, how trained models attend
  // locally with a power-law tail. The rest is noise (content).
  const needles = Array.from({ length: 8 }, (_, i) => Math.floor(((i + 1) * L) / 9));
  const M = 48;
  const A = 3.3;
  const theta = Array.from({ length: M }, (_, m) => Math.pow(10000, -m / M));
  for (let i = 0; i < L; i++) {
    for (let h = 0; h < H; h++) {
      const o = i * H * d + h * d;
      q[o] = 4;
      for (let m = 0; m < M; m++) {
        q[o + 1 + 2 * m] = A * Math.cos(theta[m] * i);
        q[o + 2 + 2 * m] = A * Math.sin(theta[m] * i);
      }
    }
    k[i * d] = 0;
    for (let m = 0; m < M; m++) {
      k[i * d + 1 + 2 * m] = Math.cos(theta[m] * i);
      k[i * d + 2 + 2 * m] = Math.sin(theta[m] * i);
    }
  }
  k[0] = 20;
  for (const j of needles) k[j * d] = 12;
  const a: HeadGroupInput = { q, k, v, nQ: L, nK: L, qPos0: 0, nHeads: H, headDim: d, scale: 1 / Math.sqrt(d) };
  const cfg = threads ? { threads } : {};
  const attn = new CpuAttention(cfg);
  const est = new CpuVerticalSlashEstimator(cfg);
  const batched = new BatchedSparseCpu(cfg);
  try {
    let t0 = performance.now();
    const dense = attn.run({ q, nQ: L, qPos0: 0, k: [k], v: [v], nK: L, nHeads: H, nKVHeads: 1, headDim: d, scale: a.scale });
    const denseMs = performance.now() - t0;
    t0 = performance.now();
    const idx = buildGroupIndex(a, [pattern, pattern], (h, vert, sl) => est.estimate(h, vert, sl), CPU_SPARSE_BLOCK);
    const estimateMs = performance.now() - t0;
    const sparse = batched.run(a, idx);
    const sparseMs = performance.now() - t0;
    const rows: number[] = [];
    for (let h = 0; h < H; h++) for (let i = Math.max(0, L - 512); i < L; i++) rows.push(Math.exp(sparse.lse[h * L + i] - dense.lse[h * L + i]));
    const rs = recallStats(Float64Array.from(rows));
    return {
      bench: 'sparse',
      section: 'planted-attention',
      length: L,
      pattern,
      denseMs: ms(denseMs),
      sparseMs: ms(sparseMs),
      estimateMs: ms(estimateMs),
      speedup: +(denseMs / sparseMs).toFixed(2),
      density: +(idx.reduce((s, x) => s + indexDensity(x), 0) / idx.length).toFixed(4),
      recall: { median: +rs.median.toFixed(4), p5: +rs.p5.toFixed(4), min: +rs.min.toFixed(4) },
    };
  } finally {
    attn.dispose();
    est.dispose();
    batched.dispose();
  }
}
