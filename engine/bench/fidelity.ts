// `repokv bench fidelity`: does an attention method answer like dense attention? (issue 7)
// Tasks modelled on RULER's passkey and SCBench's Retr.KV (engine/fidelity/tasks.ts), in SCBench's
// multi-request and multi-turn modes, answered by dense attention on our engine and by llama.cpp on
// the same file and token ids; sparse prefill / retrieval decode plug in as engine/fidelity/methods.ts
// AttentionPlugins. Without --model it uses the constructed induction model (engine/model/induction.ts),
// written once to the temp dir, on which dense attention provably answers every question.
//
// Output: one JSON object per run (--json): method, task, mode, length, depth, accuracy, times,
// tokens computed (context + questions) next to what the same questions cost as cold runs, the
// smallest logit margin, attention recall (null for dense: 1 by definition); then a summary line
// with the heatmap cells. --out FILE.svg|FILE.png writes the heatmap (and FILE.vl.json, its spec).

import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { UserError } from '../errors.js';
import { flagNumber, flagString, parseArgs, parseTokenCount } from '../commands/args.js';
import { GGUFFile } from '../gguf/reader.js';
import { Tokenizer } from '../text/tokenizer.js';
import { planInductionModel, writeInductionModel } from '../model/induction.js';
import type { BackendChoice } from '../engine.js';
import { EngineMethod, EngineSparseRecall, LlamaMethod, type FidelityMethod } from '../fidelity/methods.js';
import { parsePattern } from './sparse.js';
import { withPattern, type SparseModelConfig } from '../attention/sparse/config.js';
import { storedSparseConfig } from '../engine.js';
import { loadTransformerConfig } from '../model/config.js';
import { runFidelity, type FidelityPlan, type RunRecord } from '../fidelity/harness.js';
import { ALL_MODES, MODES, TASK_NAMES, type SharedContextMode, type TaskName } from '../fidelity/tasks.js';
import { heatmapSpec, writeHeatmap } from '../fidelity/chart.js';

const USAGE = `usage: repokv bench fidelity [options]
  --model FILE        GGUF model (default: the constructed induction model, written once to the temp dir)
  --methods M,M..     dense, llama, and sparse prefill on the engine (CPU backend): sparse (the model's
                      stored or default config), vs:V/S  ashape:SINK/LOCAL  block:K (every head);
                      retrieval[:K] (dense prefill, retrieval decode; index K = graph (projection
                      only), graph-l2 (+ every key linked by L2: the engine's default), ivf, flat)
                      and M+retrieval[:K] for any sparse M
                      (default dense,llama)
  --cache-dir DIR     where \`repokv calibrate\` wrote the model's sparse config (for "sparse")
  --backend B         backend of the dense method: cpu | reference | webgpu (default cpu)
  --threads N         threads for both engines (default: the machine's cores)
  --tasks T,T..       passkey, kv (default both)
  --lengths L,L..     prompt lengths in tokens, K suffix allowed (default 4K,8K,16K,32K)
  --depths D,D..      needle depths in percent (default 0,25,50,75,100)
  --modes M,M..       multi-request, multi-turn (SCBench; default both), single (one cold prompt per
                      question, context + question prefilled together, as RULER; sparse prefill then
                      covers the question's rows too)
  --questions N       questions per kv context (default 8)
  --seed N            task seed (default 1)
  --llama-max L       longest length llama.cpp runs (default 32K; it is slower here)
  --flash-attn        llama.cpp with flash attention
  --out FILE          heatmap picture (.svg or .png) and FILE.vl.json (its Vega-Lite spec)
  --json              one JSON object per run, then a summary`;

function list(v: string | undefined, dflt: string[]): string[] {
  return v === undefined ? dflt : v.split(',').map((s) => s.trim()).filter(Boolean);
}

function tokens(s: string): number {
  const n = parseTokenCount(s);
  if (n < 256 || n > 1 << 20) throw new UserError(`length ${s} must be from 256 to 1M tokens`);
  return n;
}

/** The constructed induction model in the temp dir (written once). */
export function defaultInductionModel(): string {
  const dir = join(tmpdir(), 'repokv-bench');
  mkdirSync(dir, { recursive: true });
  const path = join(dir, 'induction-v1-seed1.gguf');
  if (!existsSync(path)) {
    process.stderr.write(`bench fidelity: writing ${path} (once)…\n`);
    writeInductionModel(path, planInductionModel({ seed: 1 }));
  }
  return path;
}

export async function run(args: string[]): Promise<number> {
  const p = parseArgs(args, ['json', 'help', 'flash-attn']);
  if (p.flags.has('help')) {
    console.log(USAGE);
    return 0;
  }
  const known = new Set(['cache-dir', 'model', 'methods', 'backend', 'threads', 'tasks', 'lengths', 'depths', 'modes', 'questions', 'seed', 'llama-max', 'flash-attn', 'out', 'json', 'help']);
  for (const k of p.flags.keys()) if (!known.has(k)) throw new UserError(`unknown option --${k} (see repokv bench fidelity --help)`);
  const json = p.flags.has('json');
  const model = flagString(p, 'model') ?? defaultInductionModel();
  if (!existsSync(model)) throw new UserError(`model file ${model} does not exist; give an existing GGUF file to --model`);
  const backend = (flagString(p, 'backend') ?? 'cpu') as BackendChoice;
  if (!['cpu', 'reference', 'webgpu', 'auto'].includes(backend)) throw new UserError(`--backend must be cpu, reference or webgpu, got "${backend}"`);
  const methodNames = list(flagString(p, 'methods'), ['dense', 'llama']);
  // retrieval[:KIND] and M+retrieval[:KIND], KIND = graph (default) | graph-l2 | ivf | flat.
  const retrievalOf = (m: string) => /(?:^|\+)retrieval(?::([a-z0-9-]+))?$/.exec(m);
  const prefillOf = (m: string) => {
    const r = retrievalOf(m);
    return r ? (r.index === 0 ? 'dense' : m.slice(0, r.index)) : m;
  };
  for (const m of methodNames) {
    const k = retrievalOf(m)?.[1];
    if (k && !['graph', 'graph-l2', 'ivf', 'flat'].includes(k)) throw new UserError(`unknown retrieval index "${k}" in "${m}" (graph, graph-l2, ivf, flat)`);
  }
  for (const m of methodNames) if (!['dense', 'llama', 'sparse'].includes(prefillOf(m))) parsePattern(prefillOf(m)); // a clear error for a bad one
  const tasks = list(flagString(p, 'tasks'), [...TASK_NAMES]) as TaskName[];
  for (const t of tasks) if (!TASK_NAMES.includes(t)) throw new UserError(`unknown task "${t}" (passkey, kv)`);
  const modes = list(flagString(p, 'modes'), [...MODES]) as SharedContextMode[];
  for (const m of modes) if (!ALL_MODES.includes(m)) throw new UserError(`unknown mode "${m}" (multi-request, multi-turn, single)`);
  const lengths = list(flagString(p, 'lengths'), ['4K', '8K', '16K', '32K']).map(tokens);
  const depths = list(flagString(p, 'depths'), ['0', '25', '50', '75', '100']).map((d) => {
    const v = Number(d);
    if (!Number.isFinite(v) || v < 0 || v > 100) throw new UserError(`depth "${d}" must be a percentage from 0 to 100`);
    return v / 100;
  });
  const threads = p.flags.has('threads') ? flagNumber(p, 'threads', 0) : undefined;
  const llamaMax = tokens(flagString(p, 'llama-max') ?? '32K');
  const kvQuestions = flagNumber(p, 'questions', 8);
  const seed = flagNumber(p, 'seed', 1);
  const out = flagString(p, 'out');

  const file = GGUFFile.open(model, { metadataOnly: true });
  let tok: Tokenizer;
  try {
    tok = Tokenizer.fromGGUF(file);
  } finally {
    file.close();
  }
  const maxTokens = Math.max(...lengths) + kvQuestions * 64 + 256;
  const emit = (o: unknown) => {
    if (json) console.log(JSON.stringify(o));
  };
  const plan: FidelityPlan = { tasks, lengths, depths, modes, kvQuestions, seed };
  const allRecords: RunRecord[] = [];
  const allCells: Awaited<ReturnType<typeof runFidelity>>['cells'] = [];
  const say = (r: RunRecord) => {
    emit({ bench: 'fidelity', ...r });
    if (!json) {
      const d = r.depth === null ? '' : ` depth ${Math.round(r.depth * 100)}%`;
      const margin = r.minMargin === null ? '' : `, min margin ${r.minMargin.toFixed(1)}`;
      console.log(
        `${r.method.padEnd(11)} ${r.task.padEnd(7)} ${r.mode.padEnd(13)} ${String(r.length).padStart(7)}${d}: ${r.correct}/${r.total} correct, ` +
          `${(r.totalMs / 1000).toFixed(2)} s (context ${(r.contextMs / 1000).toFixed(2)} s), computed ${r.totalComputedTokens} tokens (cold runs: ${r.coldComputedTokens})${margin}`,
      );
    }
  };
  for (const name of methodNames) {
    let method: FidelityMethod;
    const methodPlan = { ...plan };
    const rk = retrievalOf(name);
    const retrieval = !!rk;
    const pre = prefillOf(name);
    // Retrieval decode from half the shortest length on (sink 128, window 512, top-100).
    const kind = rk?.[1] ?? 'graph';
    const ret = retrieval
      ? { mode: 'on' as const, config: { minContext: Math.floor(Math.min(...lengths) / 2), kind: kind === 'graph-l2' ? ('graph' as const) : (kind as 'graph' | 'ivf' | 'flat'), graph: { l2all: kind === 'graph-l2' } } }
      : undefined;
    if (name === 'dense') method = await EngineMethod.create({ model, backend, threads, maxTokens });
    else if (pre === 'dense') method = await EngineMethod.create({ model, backend, threads, maxTokens, name, retrieval: ret, attention: new EngineSparseRecall(name, { retrieval: kind }) });
    else if (name !== 'llama') {
      // Sparse prefill from the shortest length on (the engine's default threshold is 32K); prompts of
      // fewer than 64 new rows (questions after a cached context, decode) stay dense, as in production.
      const cfg = sparseConfigOf(model, pre, flagString(p, 'cache-dir'));
      method = await EngineMethod.create({
        model,
        backend,
        threads,
        maxTokens,
        name,
        sparse: { config: cfg, threshold: Math.floor(Math.min(...lengths) / 2) },
        retrieval: ret,
        attention: new EngineSparseRecall(name, { config: cfg.source, pattern: pre, ...(retrieval ? { retrieval: kind } : {}) }),
      });
    } else {
      method = new LlamaMethod(model, { threads, flashAttention: p.flags.has('flash-attn') });
      methodPlan.lengths = lengths.filter((l) => l <= llamaMax);
      if (!methodPlan.lengths.length) continue;
    }
    try {
      const { records, cells } = await runFidelity(tok, methodPlan, [method], say);
      allRecords.push(...records);
      allCells.push(...cells);
    } finally {
      await method.close();
    }
  }
  if (out) {
    await writeHeatmap(out, allCells);
    writeFileSync(out.replace(/\.(svg|png)$/i, '') + '.vl.json', JSON.stringify(heatmapSpec(allCells), null, 1));
  }
  const byMethod: Record<string, { correct: number; total: number }> = {};
  for (const r of allRecords) {
    const m = (byMethod[r.method] ??= { correct: 0, total: 0 });
    m.correct += r.correct;
    m.total += r.total;
  }
  const summary = {
    bench: 'fidelity-summary',
    model,
    accuracy: Object.fromEntries(Object.entries(byMethod).map(([k, v]) => [k, v.total ? v.correct / v.total : 0])),
    questions: Object.fromEntries(Object.entries(byMethod).map(([k, v]) => [k, v.total])),
    recall: 'dense attention: 1 by definition (measured once sparse methods plug in)',
    cells: allCells,
    ...(out ? { out } : {}),
  };
  if (json) console.log(JSON.stringify(summary));
  else {
    for (const [k, v] of Object.entries(byMethod)) console.log(`${k}: ${v.correct}/${v.total} correct (${((100 * v.correct) / Math.max(1, v.total)).toFixed(1)}%)`);
    if (out) console.log(`heatmap: ${out}`);
  }
  return 0;
}

/** The sparse config of a fidelity method: "sparse" = stored (--cache-dir) or default; a pattern = every head. */
function sparseConfigOf(model: string, method: string, cacheDir: string | undefined): SparseModelConfig {
  const f = GGUFFile.open(model);
  try {
    const cfg = storedSparseConfig(model, f, loadTransformerConfig(f), cacheDir);
    if (method === 'sparse') return cfg;
    const pat = parsePattern(method);
    return pat === 'config' ? cfg : withPattern(cfg, pat);
  } finally {
    f.close();
  }
}
