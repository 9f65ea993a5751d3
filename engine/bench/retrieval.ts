// `repokv bench retrieval`: retrieval attention at decode (issue 9) — dense vs flat scan vs IVF vs the
// attention-aware graph (and the key-only graph as an ablation), per context length, one KV head group.
// Prints one JSON object per (length, method) with --json, then one for the goals; else a text table.
//
// Data: synthetic keys/queries with RetrievalAttention's out-of-distribution property
// (engine/attention/retrieval/ood-data.ts; the Mahalanobis ratio of queries to keys is in each record).
// A synthetic GGUF model has random weights, so its Q/K would be near-isotropic noise — the easy case
// for no index and the hard case for every index, neither what a trained model's are — and capturing
// one layer's K/Q at 128K through the engine costs hours on two cores; so, for now, the generator.
//
// Protocol, per length n (keys 0..n−1 of one KV head, G query heads, head dim d):
//   - decode queries: `--decode` tokens × G heads (held out: not among the sampled prefill queries);
//   - truth: exact top-k by q·k over the middle keys [sink, n − window) per query head;
//   - each index is built once (build time measured); its search parameter (graph ef, IVF nprobe) is
//     swept, and the operating point is the smallest reaching `--recall` (mean recall@k over heads);
//   - per-token time at that point: retrievalAttention for the group (static part, G searches, union
//     of the retrieved keys, exact merge), best of `--repeat`; dense = the same loops over all n keys;
//   - a whole decode step is extrapolated as group time × layers × KV heads (`--shape`, one thread);
//   - build share: index build time over dense causal prefill attention for the group, estimated as
//     n/2 × the measured dense decode time (Σ_i t(i)), and as a ratio of multiply-adds;
//   - memory per KV head: resident (static window K/V, f16) vs the full K/V (f16); index structure and
//     its f32 key copy live in host memory;
//   - sampling: the graph rebuilt from fewer prefill queries (every 4n-th, the last 64 positions only,
//     and every query where n ≤ --all-queries-up-to) — what the sampling costs in recall.
import { flagNumber, flagString, parseArgs } from '../commands/args.js';
import { UserError } from '../errors.js';
import { denseDecodeAttention, retrievalAttention, type RetrievalInput } from '../attention/retrieval/attention.js';
import { FlatIndex } from '../attention/retrieval/flat.js';
import { GraphIndex, type GraphParams } from '../attention/retrieval/graph.js';
import { IVFIndex } from '../attention/retrieval/ivf.js';
import { mahalanobisRatio, oodKeys, oodQueries, type OodData } from '../attention/retrieval/ood-data.js';
import type { RetrievalIndex, SearchOptions } from '../attention/retrieval/types.js';

const USAGE = `usage: repokv bench retrieval [options]
  --contexts N,N..   context lengths (default 8192,32768,131072; K suffix allowed: 8K,32K,128K,512K)
  --methods M,M..    dense,flat,ivf,graph,nsw (default all; nsw = the graph without prefill queries)
  --head-dim D       (default 128)      --group G   query heads per KV head (default 4)
  --shape L,H        layers,KV heads for the whole-step extrapolation (default 32,8: Llama-3-8B)
  --top-k K          keys retrieved per query head (default 100)
  --sink S --window W  static keys (defaults 128, 512)
  --recall R         target recall@k for the operating point (default 0.9)
  --sample-every E   prefill queries kept: every E-th position, all G heads (default 100)
  --all-queries-up-to N  also build from every prefill query where n ≤ N (default 8192)
  --decode T         decode tokens measured (default 16)   --repeat R  timing repeats (default 3)
  --seed S           data seed (default 7)
  --graph-params J   GraphParams as JSON for ablations, e.g. '{"random":0,"routeProbe":0}'
  --json             one JSON object per measurement`;

export interface MethodRecord {
  bench: 'retrieval';
  n: number;
  method: string;
  /** Search parameter at the operating point ('ef=…', 'nprobe=…', or '-'). */
  param: string;
  recall: number;
  /** Keys whose q·k a search computed, over the indexed keys (per query head, mean). */
  scannedFrac: number;
  /** exp(lse − lse_dense): attention mass kept (mean and min over heads × tokens). */
  massMean: number;
  massMin: number;
  /** max |out − out_dense| / max |out_dense| over the tokens. */
  outRelErr: number;
  msPerToken: number;
  searchMsPerToken: number;
  stepMsExtrapolated: number;
  buildMs: number;
  buildShareTime: number;
  buildShareMacs: number;
  indexBytes: number;
  keyCopyBytes: number;
  curve: { param: number; recall: number; scannedFrac: number }[];
  [k: string]: unknown;
}

interface Setup {
  n: number;
  d: number;
  G: number;
  sink: number;
  window: number;
  topK: number;
  data: OodData;
  /** decode queries [T, G·d] */
  dec: Float32Array;
  T: number;
  truth: Int32Array[][];
  dense: { out: Float32Array; lse: Float32Array }[];
  denseMs: number;
}

function parseLen(s: string): number {
  const m = /^(\d+)([kKmM]?)$/.exec(s.trim());
  if (!m) throw new UserError(`bad context length "${s}" (use e.g. 8192 or 8K)`);
  return Number(m[1]) * (m[2] === '' ? 1 : m[2].toLowerCase() === 'k' ? 1024 : 1 << 20);
}

function best(repeat: number, f: () => void): number {
  let m = Infinity;
  for (let r = 0; r < repeat; r++) {
    const t = performance.now();
    f();
    m = Math.min(m, performance.now() - t);
  }
  return m;
}

function input(s: Setup, t: number): RetrievalInput {
  return { q: s.dec.subarray(t * s.G * s.d, (t + 1) * s.G * s.d), k: s.data.k, v: s.data.v, n: s.n, nHeads: s.G, headDim: s.d, scale: 1 / Math.sqrt(s.d) };
}

function recallOf(ids: Int32Array, truth: Int32Array): number {
  const want = new Set(truth);
  let c = 0;
  for (const x of ids) if (want.has(x)) c++;
  return c / Math.max(1, truth.length);
}

/** Mean recall and scanned fraction of `index` at one search setting over all decode query heads. */
function quality(s: Setup, index: RetrievalIndex, opts: SearchOptions): { recall: number; scannedFrac: number } {
  let recall = 0;
  let scanned = 0;
  for (let t = 0; t < s.T; t++)
    for (let h = 0; h < s.G; h++) {
      const q = s.dec.subarray((t * s.G + h) * s.d, (t * s.G + h + 1) * s.d);
      const r = index.search(q, s.topK, opts);
      recall += recallOf(r.ids, s.truth[t][h]);
      scanned += r.scanned;
    }
  const k = s.T * s.G;
  return { recall: recall / k, scannedFrac: scanned / k / index.size };
}

/** Sweeps a search parameter upward; returns the curve and the first point reaching the target. */
function sweep(s: Setup, index: RetrievalIndex, params: number[], key: 'ef' | 'nprobe', target: number) {
  const curve: { param: number; recall: number; scannedFrac: number }[] = [];
  let op: { param: number; recall: number; scannedFrac: number } | null = null;
  let after = 0;
  for (const p of params) {
    const q = quality(s, index, { [key]: p });
    curve.push({ param: p, ...q });
    if (!op && q.recall >= target) op = curve[curve.length - 1];
    if (op && ++after > 2) break;
  }
  return { curve, op: op ?? curve[curve.length - 1] };
}

function decodeRun(s: Setup, index: RetrievalIndex | null, opts: SearchOptions, repeat: number, gqa: 'union' | 'per-head' = 'union') {
  let massSum = 0;
  let massMin = Infinity;
  let err = 0;
  let mag = 0;
  let scanned = 0;
  let retrieved = 0;
  const results = [];
  for (let t = 0; t < s.T; t++) {
    const r = retrievalAttention(input(s, t), index, { sink: s.sink, window: s.window, topK: s.topK, search: opts, gqa });
    results.push(r);
    retrieved += r.retrieved;
    scanned += r.scanned;
    const want = s.dense[t];
    for (let h = 0; h < s.G; h++) {
      const m = Math.exp(r.lse[h] - want.lse[h]);
      massSum += m;
      massMin = Math.min(massMin, m);
    }
    for (let i = 0; i < want.out.length; i++) {
      err = Math.max(err, Math.abs(r.out[i] - want.out[i]));
      mag = Math.max(mag, Math.abs(want.out[i]));
    }
  }
  const ms = best(repeat, () => {
    for (let t = 0; t < s.T; t++) retrievalAttention(input(s, t), index, { sink: s.sink, window: s.window, topK: s.topK, search: opts, gqa });
  });
  const searchMs = index
    ? best(repeat, () => {
        for (let t = 0; t < s.T; t++) for (let h = 0; h < s.G; h++) index.search(s.dec.subarray((t * s.G + h) * s.d, (t * s.G + h + 1) * s.d), s.topK, opts);
      })
    : 0;
  return { massMean: massSum / (s.T * s.G), massMin, outRelErr: err / Math.max(mag, 1e-30), msPerToken: ms / s.T, searchMsPerToken: searchMs / s.T, scanned: scanned / s.T, retrievedPerHead: retrieved / s.T };
}

const EFS = [100, 128, 160, 200, 256, 320, 400, 512, 640, 800, 1024, 1280, 1600, 2048];

export interface RetrievalBenchOptions {
  d: number;
  G: number;
  sink: number;
  window: number;
  topK: number;
  target: number;
  sampleEvery: number;
  allQueriesUpTo: number;
  T: number;
  repeat: number;
  seed: number;
  layers: number;
  kvHeads: number;
  methods: string[];
  graph?: GraphParams;
}

/** Measures one context length; returns one record per method plus the sampling ablation. */
export function measureRetrieval(n: number, o: RetrievalBenchOptions, log: (r: Record<string, unknown>) => void): MethodRecord[] {
  const { d, G, sink, window, topK } = o;
  if (n < sink + window + topK) throw new UserError(`context ${n} is too short for sink ${sink} + window ${window} + top-k ${topK}`);
  let t0 = performance.now();
  const data = oodKeys({ n, d, group: G, seed: o.seed });
  const dec = oodQueries(data, Array.from({ length: o.T }, (_, i) => n + i), o.seed + 1000);
  const genMs = performance.now() - t0;
  const lo = sink;
  const hi = n - window;
  const mid = data.k.subarray(lo * d, hi * d);
  const nMid = hi - lo;
  const flat = FlatIndex.build(mid, d, lo);
  const s: Setup = { n, d, G, sink, window, topK, data, dec, T: o.T, truth: [], dense: [], denseMs: 0 };
  for (let t = 0; t < o.T; t++) s.truth.push(Array.from({ length: G }, (_, h) => flat.search(dec.subarray((t * G + h) * d, (t * G + h + 1) * d), topK).ids));
  for (let t = 0; t < o.T; t++) s.dense.push(denseDecodeAttention(input(s, t)));
  s.denseMs = best(o.repeat, () => {
    for (let t = 0; t < o.T; t++) denseDecodeAttention(input(s, t));
  }) / o.T;
  const ood = mahalanobisRatio(mid.subarray(0, Math.min(nMid, 4096) * d), mid.subarray(Math.max(0, nMid - 2048) * d), dec, d);
  // dense causal prefill attention of the group: Σ_i t(i) ≈ n/2 · t(n); multiply-adds G·n²·d (QKᵀ and PV, causal halves)
  const densePrefillMs = (n / 2) * s.denseMs;
  const densePrefillMacs = G * n * n * d;
  const steps = o.layers * o.kvHeads;
  const kvF16 = (keys: number) => keys * d * 2 * 2; // K and V, f16
  const common = {
    bench: 'retrieval' as const,
    n,
    data: 'synthetic-ood',
    headDim: d,
    group: G,
    sink,
    window,
    topK,
    decodeTokens: o.T,
    mahalanobis: { queries: +ood.queries.toFixed(2), keys: +ood.keys.toFixed(2), ratio: +ood.ratio.toFixed(2) },
    residentBytesPerKVHead: kvF16(sink + window),
    fullKVBytesPerKVHead: kvF16(n),
    extrapolation: `${o.layers} layers × ${o.kvHeads} KV heads, one thread`,
  };
  const out: MethodRecord[] = [];
  const emit = (method: string, param: string, index: RetrievalIndex | null, buildMs: number, buildMacs: number, opts: SearchOptions, curve: MethodRecord['curve'], q: { recall: number; scannedFrac: number }, extra: Record<string, unknown> = {}, gqa: 'union' | 'per-head' = 'union') => {
    const run = decodeRun(s, index, opts, o.repeat, gqa);
    const rec: MethodRecord = {
      ...common,
      method,
      param,
      recall: +q.recall.toFixed(4),
      scannedFrac: +q.scannedFrac.toFixed(5),
      massMean: +run.massMean.toFixed(4),
      massMin: +run.massMin.toFixed(4),
      outRelErr: +run.outRelErr.toExponential(2),
      msPerToken: +run.msPerToken.toFixed(3),
      searchMsPerToken: +run.searchMsPerToken.toFixed(3),
      stepMsExtrapolated: +(run.msPerToken * steps).toFixed(1),
      gqa,
      retrievedPerHead: +run.retrievedPerHead.toFixed(1),
      buildMs: Math.round(buildMs),
      buildShareTime: +(buildMs / densePrefillMs).toFixed(4),
      buildShareMacs: +(buildMacs / densePrefillMacs).toFixed(4),
      indexBytes: index ? index.structureBytes() : 0,
      keyCopyBytes: index && method !== 'dense' ? index.keys.bytes() : 0,
      curve,
      ...extra,
    };
    out.push(rec);
    log(rec);
  };
  const want = (m: string) => o.methods.includes(m);
  if (want('dense')) emit('dense', '-', null, 0, 0, {}, [], { recall: 1, scannedFrac: 1 }, { genMs: Math.round(genMs), densePrefillMsEstimated: Math.round(densePrefillMs) });
  if (want('flat')) emit('flat', '-', flat, 0, 0, {}, [], quality(s, flat, {}));
  if (want('ivf')) {
    t0 = performance.now();
    const ivf = IVFIndex.build(mid, d, lo);
    const buildMs = performance.now() - t0;
    const probes: number[] = [];
    for (let p = 1; p < ivf.nlist; p *= 2) probes.push(p);
    probes.push(ivf.nlist);
    const sw = sweep(s, ivf, probes, 'nprobe', o.target);
    const trainRows = Math.min(nMid, 32 * ivf.nlist);
    emit('ivf', `nprobe=${sw.op.param}/${ivf.nlist}`, ivf, buildMs, (8 * trainRows + nMid) * ivf.nlist * d, { nprobe: sw.op.param }, sw.curve, sw.op);
  }
  const sampled = (every: number, lastOnly = 0): Float32Array => {
    const pos: number[] = [];
    if (lastOnly) for (let p = n - lastOnly; p < n; p++) pos.push(p);
    else for (let p = every - 1; p < n; p += every) pos.push(p);
    return oodQueries(data, pos, o.seed + 2000); // [pos, G·d] = [pos·G, d] query rows
  };
  const graphRun = (name: string, queries: Float32Array, extra: Record<string, unknown>, emitIt: boolean) => {
    t0 = performance.now();
    const g = GraphIndex.build(mid, d, lo, queries, o.graph ?? {});
    const buildMs = performance.now() - t0;
    const m = queries.length / d;
    const sw = sweep(s, g, EFS, 'ef', o.target);
    const st = g.stats!;
    const stats = { queries: m, covered: st.covered, linkedByL2: st.inserted, knnMs: Math.round(st.knnMs), projectMs: Math.round(st.projectMs), insertMs: Math.round(st.insertMs) };
    if (emitIt) emit(name, `ef=${sw.op.param}`, g, buildMs, m * nMid * d, { ef: sw.op.param }, sw.curve, sw.op, { ...extra, graph: stats, graphParams: o.graph ?? {} });
    if (emitIt && name === 'graph') emit(name, `ef=${sw.op.param}`, g, buildMs, m * nMid * d, { ef: sw.op.param }, [], sw.op, { ...extra, graph: stats }, 'per-head');
    return { g, sw, buildMs, stats, m };
  };
  if (want('graph')) {
    const main = graphRun('graph', sampled(o.sampleEvery), { sampleEvery: o.sampleEvery }, true);
    // what the sampling costs: recall at the main operating ef, and the ef the target needs
    const variants: [string, Float32Array][] = [
      [`every ${4 * o.sampleEvery}`, sampled(4 * o.sampleEvery)],
      ['last 64', sampled(0, 64)],
    ];
    if (n <= o.allQueriesUpTo) variants.push(['every query', sampled(1)]);
    const ef = Number(main.sw.op.param);
    for (const [name, q] of variants) {
      const v = graphRun('graph', q, {}, false);
      const at = quality(s, v.g, { ef });
      log({
        bench: 'retrieval',
        n,
        method: 'graph-sampling',
        sampling: name,
        queries: v.m,
        buildMs: Math.round(v.buildMs),
        buildShareTime: +(v.buildMs / densePrefillMs).toFixed(4),
        buildShareMacs: +((v.m * nMid * d) / densePrefillMacs).toFixed(4),
        recallAtMainEf: +at.recall.toFixed(4),
        scannedAtMainEf: +at.scannedFrac.toFixed(5),
        mainEf: ef,
        efForTarget: v.sw.op.recall >= o.target ? v.sw.op.param : null,
        scannedForTarget: v.sw.op.recall >= o.target ? +v.sw.op.scannedFrac.toFixed(5) : null,
        graph: v.stats,
      });
    }
  }
  if (want('nsw')) graphRun('nsw', new Float32Array(0), { note: 'key-only graph (no prefill queries): L2 links, random shortcuts' }, true);
  return out;
}

function parseGraphParams(s: string | undefined): GraphParams | undefined {
  if (!s) return undefined;
  try {
    return JSON.parse(s) as GraphParams;
  } catch {
    throw new UserError(`--graph-params must be JSON, e.g. '{"random":0}', got ${s}`);
  }
}

export async function run(args: string[]): Promise<number> {
  const p = parseArgs(args, ['json', 'help']);
  if (p.flags.has('help')) {
    console.log(USAGE);
    return 0;
  }
  const json = p.flags.has('json');
  const contexts = (flagString(p, 'contexts') ?? '8192,32768,131072').split(',').map(parseLen);
  const [layers, kvHeads] = (flagString(p, 'shape') ?? '32,8').split(',').map(Number);
  const o: RetrievalBenchOptions = {
    d: flagNumber(p, 'head-dim', 128),
    G: flagNumber(p, 'group', 4),
    sink: flagNumber(p, 'sink', 128),
    window: flagNumber(p, 'window', 512),
    topK: flagNumber(p, 'top-k', 100),
    target: flagNumber(p, 'recall', 0.9),
    sampleEvery: flagNumber(p, 'sample-every', 100),
    allQueriesUpTo: flagNumber(p, 'all-queries-up-to', 8192),
    T: flagNumber(p, 'decode', 16),
    repeat: Math.max(1, flagNumber(p, 'repeat', 3)),
    seed: flagNumber(p, 'seed', 7),
    layers,
    kvHeads,
    methods: (flagString(p, 'methods') ?? 'dense,flat,ivf,graph,nsw').split(','),
    graph: parseGraphParams(flagString(p, 'graph-params')),
  };
  const log = (r: Record<string, unknown>) => {
    if (json) console.log(JSON.stringify(r));
    else if (r.method === 'graph-sampling')
      console.log(`  ${String(r.n).padStart(7)} sampling ${String(r.sampling).padEnd(12)} ${String(r.queries).padStart(6)} queries  build ${r.buildMs} ms (${((r.buildShareTime as number) * 100).toFixed(2)}% of dense prefill attn)  recall@ef${r.mainEf} ${r.recallAtMainEf}  target at ef ${r.efForTarget ?? '-'}`);
    else {
      const m = r as MethodRecord;
      console.log(
        `${String(m.n).padStart(7)} ${(m.method + (m.gqa === 'per-head' ? '/ph' : '')).padEnd(9)} ${m.param.padEnd(14)} recall ${m.recall.toFixed(3)}  scanned ${(m.scannedFrac * 100).toFixed(2).padStart(6)}%  mass ${m.massMean.toFixed(3)}  ${m.msPerToken.toFixed(2).padStart(7)} ms/token/group (search ${m.searchMsPerToken.toFixed(2)})  step≈${m.stepMsExtrapolated} ms  build ${m.buildMs} ms (${(m.buildShareTime * 100).toFixed(2)}%)  index ${(m.indexBytes / 2 ** 20).toFixed(1)} MiB`,
      );
    }
  };
  const byN = new Map<number, MethodRecord[]>();
  for (const n of contexts) byN.set(n, measureRetrieval(n, o, log));
  // goals (issue 9): ≤ 3% scanned at recall ≥ 0.9 (graph); per-token time at the longest within 1.5× of the shortest
  const ns = [...byN.keys()].sort((a, b) => a - b);
  const g = (n: number, m: string) => byN.get(n)?.find((r) => r.method === m && r.gqa !== 'per-head');
  const lo = ns[0];
  const hi = ns[ns.length - 1];
  const goals = {
    bench: 'retrieval',
    method: 'goals',
    scannedAtTarget: Object.fromEntries(ns.map((n) => [n, g(n, 'graph') ? { scannedFrac: g(n, 'graph')!.scannedFrac, recall: g(n, 'graph')!.recall, ok: g(n, 'graph')!.scannedFrac <= 0.03 && g(n, 'graph')!.recall >= o.target } : null])),
    graphTimeRatio: g(hi, 'graph') && g(lo, 'graph') ? { from: lo, to: hi, ratio: +(g(hi, 'graph')!.msPerToken / g(lo, 'graph')!.msPerToken).toFixed(2) } : null,
    graphVsDenseAtShortest: g(hi, 'graph') && g(lo, 'dense') ? { ratio: +(g(hi, 'graph')!.msPerToken / g(lo, 'dense')!.msPerToken).toFixed(2) } : null,
  };
  if (json) console.log(JSON.stringify(goals));
  else console.log(JSON.stringify(goals, null, 1));
  return 0;
}
