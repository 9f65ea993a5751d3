// Sparse vs dense attention kernel time on the WebGPU backend (issue 8), for scripts/gpu-check.sh:
// one JSON object on stdout.
//
//   node --import tsx engine/backends/webgpu/sparse-bench.ts [--lengths 16384,32768,65536,131072]
//        [--chunk 8192] [--heads 12 --kv-heads 2 --head-dim 128] [--repeat 2] [--allow-software] [--tiny]
//
// What is measured, per context length S: the attention of the last chunk of C rows (positions
// S − C … S − 1) over all S keys of a paged f16 KV pool (one layer, Qwen2.5-1.5B's attention shape by
// default: 12 query heads over 2 KV heads of 128) — the most expensive chunk of a chunked prefill, as
// the engine runs it (sparse prefill chunks of max(chunk, 8192) tokens, engine.ts):
//   dense_ms     the dense flash kernel (kernels/attention.wgsl)
//   sparse_ms    the whole sparse path (estimation + top-k + index + sparse flash, sparse.ts)
//   estimate_ms  the sparse path without its flash kernel (estimation + top-k + index)
//   density      kept / causal entries (SparseStats), recall exp(lse_sparse − lse_dense) per (head, row):
//                median, 5th percentile, min
// Patterns: MInference's default vertical-slash budget as the engine scales it for S (config.ts:
// VS(1000, 6096) from 32K on, proportionally less below). Inputs, each reported separately:
//   random   q, k, v ~ N(0, 1): diffuse attention, the worst case for recall;
//   planted  planted structure: slash lines (k_t has a_{t+o} for offsets 1, 2, 5, 17, 300 of a random
//            sequence a that the queries follow), vertical lines (sink tokens 0..3 and 8 needle columns
//            share a direction every query has), recency (q and k carry a RoPE-rotated common vector,
//            so scores decay with distance on average, as RoPE's do), plus noise.
// Why both: top-k always fills its budget, and every slash offset costs a 64-wide key range per query
// block (MInference's block granularity), so on random inputs the chosen offsets scatter and the
// density is high once k_s·64 approaches S; in real heads (and the planted input) they cluster near
// the diagonal and their ranges merge.
// Times: wall clock around a synchronized run (flush, then onSubmittedWorkDone), the minimum of
// --repeat runs after one warm-up. The K/V of positions before the chunk are written straight into
// the pool's pages (writePage), so no dense prefill is needed to set up a length.

import { pathToFileURL } from 'node:url';
import { Rng } from '../../model/rng.js';
import { f32ToF16Array } from '../../kv/f16.js';
import type { AttentionParams, KVPool, SparseStats } from '../../model/backend.js';
import { DEFAULT_SPARSE_THRESHOLD, DEFAULT_VS, scalePattern } from '../../attention/sparse/config.js';
import { recallStats } from '../../attention/sparse/attention.js';
import { WebGPUBackend } from './backend.js';
import { TablePagedKV } from '../../kv/table-kv.js';

export interface SparseBenchOptions {
  lengths: number[];
  chunk: number;
  nHeads: number;
  nKVHeads: number;
  headDim: number;
  repeat: number;
  allowSoftware: boolean;
}


/** Keys and values [S, G, d] of one input kind, and the queries [C, H, d] of the chunk ending at S. */
function inputs(kind: 'random' | 'planted', Smax: number, C: number, H: number, G: number, d: number, seed: number) {
  const rng = new Rng(seed);
  const k = new Float32Array(Smax * G * d);
  const v = rng.fillNormal(new Float32Array(Smax * G * d), 1);
  if (kind === 'random') {
    rng.fillNormal(k, 1);
    const q = rng.fillNormal(new Float32Array(C * H * d), 1);
    return { k, v, q: (S: number) => q.subarray((C - Math.min(C, S)) * H * d) };
  }
  const OFFS = [1, 2, 5, 17, 300];
  const gamma = 0.7 / Math.sqrt(OFFS.length);
  const a = rng.fillNormal(new Float32Array((Smax + 301) * G * d), 1);
  const u = rng.fillNormal(new Float32Array(G * d), 1);
  const vert = new Set([0, 1, 2, 3]);
  while (vert.size < 12) vert.add(rng.int(Smax));
  rng.fillNormal(k, 0.3);
  for (let t = 0; t < Smax; t++) {
    for (let x = 0; x < G * d; x++) {
      let s = k[t * G * d + x];
      for (const o of OFFS) s += gamma * a[(t + o) * G * d + x];
      if (vert.has(t)) s += u[x];
      k[t * G * d + x] = s;
    }
  }
  // Recency (RoPE's long-term decay): q_i and k_j both carry R(position)·w, so q_i·k_j gains
  // Σ_p |w_p|² cos((i − j)θ_p), largest near the diagonal — the slash lines real heads have.
  const w = rng.fillNormal(new Float32Array(G * d), 0.8);
  const half = d / 2;
  const theta = Float64Array.from({ length: half }, (_, i) => Math.pow(10000, (-2 * i) / d));
  const rot = (t: number, g: number, out: Float32Array, o: number) => {
    for (let i = 0; i < half; i++) {
      const c = Math.cos(t * theta[i]);
      const sn = Math.sin(t * theta[i]);
      const x0 = w[g * d + i];
      const x1 = w[g * d + i + half];
      out[o + i] += x0 * c - x1 * sn;
      out[o + i + half] += x0 * sn + x1 * c;
    }
  };
  for (let t = 0; t < Smax; t++) for (let g = 0; g < G; g++) rot(t, g, k, (t * G + g) * d);
  const noise = rng.fillNormal(new Float32Array(C * H * d), 0.3);
  const per = H / G;
  const q = (S: number) => {
    const n = Math.min(C, S);
    const out = noise.slice(0, n * H * d);
    for (let i = 0; i < n; i++) {
      const t = S - n + i;
      for (let h = 0; h < H; h++) {
        const g = Math.floor(h / per);
        for (let x = 0; x < d; x++) out[(i * H + h) * d + x] += a[(t * G + g) * d + x] + 0.5 * u[g * d + x];
        rot(t, g, out, (i * H + h) * d);
      }
    }
    return out;
  };
  return { k, v, q };
}

/** Writes rows [0, n) of k/v into the pool's pages (one layer), as the page serialization. */
function writePages(pool: KVPool, pages: Int32Array, k: Float32Array, v: Float32Array, n: number, rowSize: number): void {
  const P = pool.opts.pageSize;
  const half = new Uint16Array(pool.pageBytes / 2);
  for (let pg = 0; pg * P < n; pg++) {
    half.fill(0);
    const rows = Math.min(P, n - pg * P);
    f32ToF16Array(k, half, rows * rowSize, pg * P * rowSize, 0);
    f32ToF16Array(v, half, rows * rowSize, pg * P * rowSize, P * rowSize);
    pool.writePage(pages[pg], new Uint8Array(half.buffer));
  }
}

export async function runSparseBench(o: SparseBenchOptions): Promise<Record<string, unknown>> {
  const gpu = await WebGPUBackend.create({ allowSoftware: o.allowSoftware });
  const { nHeads: H, nKVHeads: G, headDim: d, chunk: C } = o;
  const rowSize = G * d;
  const Smax = Math.max(...o.lengths);
  const pool = gpu.createKVPool({ nLayers: 1, nKVHeads: G, headDim: d, pageSize: 64, nPages: Math.ceil(Smax / 64), dtype: 'f16' });
  if (pool.nPages * 64 < Smax) throw new Error(`the KV pool holds ${pool.nPages * 64} tokens, fewer than ${Smax}`);
  const rows: Record<string, unknown>[] = [];
  const base: AttentionParams = { layer: 0, nHeads: H, nKVHeads: G, headDim: d, scale: 1 / Math.sqrt(d) };
  const sync = async (): Promise<void> => {
    await gpu.sync();
  };
  let warm = false;
  for (const kind of ['random', 'planted'] as const) {
    const t0 = performance.now();
    const data = inputs(kind, Smax, C, H, G, d, kind === 'random' ? 1 : 2);
    const genMs = performance.now() - t0;
    for (const S of o.lengths) {
      const n = Math.min(C, S);
      const pos = S - n;
      const pages = Int32Array.from({ length: Math.ceil(S / 64) }, (_, i) => i);
      const kv = new TablePagedKV(pool, pages);
      writePages(pool, pages, data.k, data.v, pos, rowSize);
      kv.commit(pos);
      const qx = data.q(S);
      const kx = data.k.subarray(pos * rowSize, S * rowSize);
      const vx = data.v.subarray(pos * rowSize, S * rowSize);
      const pattern = scalePattern(DEFAULT_VS, S, DEFAULT_SPARSE_THRESHOLD);
      const p: AttentionParams = { ...base, sparse: Array.from({ length: H }, () => pattern) };
      const once = async (params: AttentionParams, indexOnly = false) => {
        const Q = gpu.fromHost(qx, n, H * d);
        const K = gpu.fromHost(kx, n, rowSize);
        const V = gpu.fromHost(vx, n, rowSize);
        await sync();
        gpu.sparseRunner.indexOnly = indexOnly;
        const t = performance.now();
        const r = gpu.attentionWithLse(Q, K, V, [{ kv, row: 0, n, pos }], params);
        await sync();
        const ms = performance.now() - t;
        gpu.sparseRunner.indexOnly = false;
        const lse = indexOnly ? null : await gpu.read(r.lse);
        gpu.endStep();
        return { ms, lse };
      };
      if (!warm) {
        await once(base);
        await once(p);
        await once(p, true);
        warm = true;
      }
      const best = async (params: AttentionParams, indexOnly = false) => {
        let r = await once(params, indexOnly);
        for (let i = 1; i < o.repeat; i++) {
          const x = await once(params, indexOnly);
          if (x.ms < r.ms) r = x;
        }
        return r;
      };
      const dense = await best(base);
      gpu.sparseStats = { calls: 0, keptEntries: 0, causalEntries: 0, estimateMs: 0, attentionMs: 0 };
      const sparse = await best(p);
      const st: SparseStats = { ...gpu.sparseStats };
      const est = await best(p, true);
      const recall = new Float64Array(H * n);
      for (let i = 0; i < recall.length; i++) recall[i] = Math.exp(sparse.lse![i] - dense.lse![i]);
      const rs = recallStats(recall);
      rows.push({
        input: kind,
        S,
        chunkRows: n,
        pattern,
        dense_ms: +dense.ms.toFixed(2),
        sparse_ms: +sparse.ms.toFixed(2),
        estimate_ms: +est.ms.toFixed(2),
        estimate_share: +(est.ms / sparse.ms).toFixed(3),
        speedup: +(dense.ms / sparse.ms).toFixed(2),
        density: +(st.keptEntries / st.causalEntries).toFixed(4),
        recall: { median: +rs.median.toFixed(4), p5: +rs.p5.toFixed(4), min: +rs.min.toFixed(4), mean: +rs.mean.toFixed(4) },
      });
      process.stderr.write(`sparse-bench: ${kind} S=${S} dense ${dense.ms.toFixed(1)} ms, sparse ${sparse.ms.toFixed(1)} ms (estimate ${est.ms.toFixed(1)}), density ${(st.keptEntries / st.causalEntries).toFixed(3)}, recall median ${rs.median.toFixed(3)}\n`);
    }
    rows.push({ input: kind, generate_ms: +genMs.toFixed(0) });
  }
  const result = {
    bench: 'sparse-attention',
    device: gpu.info.device,
    software: gpu.ctx.adapter.software,
    shape: { nHeads: H, nKVHeads: G, headDim: d, kv: 'paged f16' },
    chunk: C,
    what: 'attention of the last chunk (rows S-C..S-1) over all S keys; min of repeats after a warm-up',
    denseFallbacks: gpu.sparseRunner.denseFallbacks,
    rows,
  };
  pool.dispose();
  gpu.dispose();
  return result;
}

function flag(name: string): string | undefined {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? process.argv[i + 1] : undefined;
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  const tiny = process.argv.includes('--tiny');
  const num = (name: string, dflt: number) => Number(flag(name) ?? dflt);
  const opts: SparseBenchOptions = {
    lengths: (flag('lengths') ?? (tiny ? '512,1024' : '16384,32768,65536,131072')).split(',').map(Number),
    chunk: num('chunk', tiny ? 256 : 8192),
    nHeads: num('heads', tiny ? 4 : 12),
    nKVHeads: num('kv-heads', 2),
    headDim: num('head-dim', tiny ? 64 : 128),
    repeat: num('repeat', tiny ? 1 : 2),
    allowSoftware: tiny || process.argv.includes('--allow-software'),
  };
  runSparseBench(opts).then(
    (r) => console.log(JSON.stringify(r)),
    (e) => {
      console.error(`sparse-bench: ${(e as Error).message}`);
      process.exit(1);
    },
  );
}
