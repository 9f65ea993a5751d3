// `repokv calibrate`: MInference's offline, kernel-aware per-head pattern search (issue 8;
// engine/attention/sparse/calibrate.ts) on one calibration input, written as the model's sparse-prefill
// config (<cache>/kv/<model id>/sparse.json), which every later engine on that cache directory reads.
//
// The model runs the calibration prompt (a key-value retrieval task, SCBench's Retr.KV — MInference
// calibrates on one KV-retrieval example) in one chunk on the CPU backend with exact attention; at each
// layer the backend hands over each KV head's (q, k, v) before computing it, and each query head gets
// the candidate of the search space (scaled to the calibration length) that best reproduces its dense
// output within the cost budget, refined while its attention recall stays under the target.

import { join } from 'node:path';
import { existsSync } from 'node:fs';
import { UserError } from '../errors.js';
import { flagNumber, flagString, parseArgs, parseTokenCount } from './args.js';
import { cacheDir } from '../paths.js';
import { Engine, sparseFingerprint } from '../engine.js';
import { GGUFFile } from '../gguf/reader.js';
import { loadTransformerConfig } from '../model/config.js';
import { calibrateHead, cpuRunner, SEARCH_SPACE, type HeadCalibration } from '../attention/sparse/calibrate.js';
import { defaultSparseConfig, saveSparseConfig, withPattern, scalePattern, SPARSE_CONFIG_VERSION, type SparseModelConfig } from '../attention/sparse/config.js';
import { CpuAttention } from '../attention/cpu-attention.js';
import { CpuVerticalSlashEstimator } from '../attention/sparse/estimate-cpu.js';
import { kvTask } from '../fidelity/tasks.js';
import type { CpuBackend } from '../backends/cpu/index.js';
import { resolveModel } from '../model/default-model.js';
import type { SparsePattern } from '../attention/sparse/patterns.js';

const USAGE = `usage: repokv calibrate [options]
  --model FILE       GGUF model (default: $REPOKV_MODEL or the built-in synthetic model)
  --length L         calibration prompt length in tokens, K suffix allowed (default 32K, MInference's 30K)
  --recall R         refine a head's budgets while its 5th-percentile recall is under R (default 0.95)
  --cache-dir DIR    where the config goes (default: RepoKV's KV cache folder, which ask/serve read)
  --threshold N      context tokens from which prefill goes sparse (default 32768)
  --threads N        CPU threads
  --seed N           calibration task seed (default 1)
  --json             the config and per-head results as JSON`;

function tokens(s: string): number {
  const n = parseTokenCount(s);
  if (n < 512) throw new UserError(`--length must be at least 512 tokens`);
  return n;
}

const name = (p: SparsePattern) =>
  p.kind === 'dense' ? 'dense' : p.kind === 'a-shape' ? `a-shape(${p.sink},${p.local})` : p.kind === 'vertical-slash' ? `vs(${p.vertical},${p.slash})` : `block(${p.blocks})`;

export async function run(args: string[]): Promise<number> {
  const p = parseArgs(args, ['json', 'help']);
  if (p.flags.has('help')) {
    console.log(USAGE);
    return 0;
  }
  const known = new Set(['model', 'length', 'recall', 'cache-dir', 'threshold', 'threads', 'seed', 'json', 'help']);
  for (const k of p.flags.keys()) if (!known.has(k)) throw new UserError(`unknown option --${k} (see repokv calibrate --help)`);
  const model = resolveModel(flagString(p, 'model')).path;
  if (!existsSync(model)) throw new UserError(`model file ${model} does not exist; give an existing GGUF file to --model`);
  const L = tokens(flagString(p, 'length') ?? '32K');
  const recallTarget = flagNumber(p, 'recall', 0.95);
  const dir = flagString(p, 'cache-dir') ?? join(cacheDir(), 'kv');
  const threshold = flagNumber(p, 'threshold', 32768);
  const threads = p.flags.has('threads') ? flagNumber(p, 'threads', 0) : undefined;
  const seed = flagNumber(p, 'seed', 1);
  const json = p.flags.has('json');
  const log = (s: string) => process.stderr.write(s + '\n');

  // The model's shape and id from its header; then exact attention through the host path: a config of
  // dense patterns, sparse (i.e. host-computed, capturable) from the first token, the prompt in one chunk.
  const f = GGUFFile.open(model);
  let fingerprint: string;
  let nLayers: number;
  let nHeads: number;
  try {
    const tc = loadTransformerConfig(f);
    ({ nLayers, nHeads } = tc);
    fingerprint = sparseFingerprint(model, f, tc);
  } finally {
    f.close();
  }
  const exact = withPattern(defaultSparseConfig(fingerprint, nLayers, nHeads, 0), { kind: 'dense' });
  const eng = await Engine.load({ model, backend: 'cpu', threads, contextSize: L + 64, kv: { prefixCaching: false }, sparse: { config: exact, chunk: L + 64 } });

  const candidates = SEARCH_SPACE.map((c) => scalePattern(c, L, 30 * 1024));
  const attn = new CpuAttention(threads ? { threads } : {});
  const est = new CpuVerticalSlashEstimator(threads ? { threads } : {});
  const results: HeadCalibration[][] = Array.from({ length: nLayers }, () => []);
  const group = nHeads / eng.config.nKVHeads;
  const t0 = performance.now();
  try {
    const cpu = eng.backend as CpuBackend;
    cpu.host.capture = (layer, g, a) => {
      for (let h = 0; h < a.nHeads; h++) {
        const r = calibrateHead(a, h, { candidates, recallTarget, runner: cpuRunner(attn), estimate: (x, v, s) => est.estimate(x, v, s) });
        results[layer][g * group + h] = r;
        log(`layer ${layer} head ${g * group + h}: ${name(r.pattern)} density ${r.density.toFixed(4)}, output error ${r.outputError.toFixed(4)}, recall median ${r.recallMedian.toFixed(4)} p5 ${r.recallP5.toFixed(4)}${r.refined ? `, refined ×${r.refined}` : ''}`);
      }
    };
    const task = kvTask(eng.tokenizer, { length: L, questions: 1, seed });
    const prompt = [...task.context, ...task.questions[0].tokens];
    log(`calibrating ${model} on a ${prompt.length}-token key-value retrieval prompt (${nLayers} layers × ${nHeads} heads)…`);
    const seq = eng.createSequence(prompt.length + 8);
    await eng.prefill(seq, prompt);
    eng.freeSequence(seq);
  } finally {
    attn.dispose();
    est.dispose();
    eng.dispose();
  }
  if (results.some((l) => l.length !== nHeads || l.some((x) => !x))) throw new Error('calibration did not see every head (the prompt ran below the sparse path?)');
  const cfg: SparseModelConfig = {
    version: SPARSE_CONFIG_VERSION,
    fingerprint,
    source: 'calibrated',
    threshold,
    referenceLength: L,
    heads: results.map((l) => l.map((r) => r.pattern)),
    recall: results.map((l) => l.map((r) => +r.recallP5.toFixed(4))),
    calibration: { task: 'kv', length: L, seed, recallTarget, seconds: +((performance.now() - t0) / 1000).toFixed(1), model },
  };
  const path = saveSparseConfig(dir, cfg);
  if (json) console.log(JSON.stringify({ path, config: cfg, heads: results }));
  else {
    console.log(`wrote ${path}`);
    results.forEach((l, i) => console.log(`  layer ${i}: ${l.map((r) => `${name(r.pattern)} [${r.density.toFixed(3)}, recall ${r.recallMedian.toFixed(3)}]`).join('  ')}`));
  }
  return 0;
}
