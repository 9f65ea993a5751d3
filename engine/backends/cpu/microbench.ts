// Microbenchmarks that decided the CPU backend's design (README.md records the numbers):
// per-run overhead of onnxruntime-node (public async API vs the synchronous binding), f32 MatMul and
// com.microsoft MatMulNBits (4/8-bit, block 32/16, accuracy levels) at decode (1 row) and prefill rows.
// Usage: npx tsx engine/backends/cpu/microbench.ts [overhead|matmul|nbits|all] [--threads N]
//        npx tsx engine/backends/cpu/microbench.ts kv [--model F] [--ctx 512,4096,16384] [--threads N]
//   kv: a whole decode step of the model at each context length, per KV variant — f32 vs f16 values
//   (Uint16 + Cast in the graph), the step split into graphs of ≤ graphBytes vs one graph, contiguous cache vs the page pool (pages in order: one zero-copy
//   run) vs scattered pages (every other page: all keys gathered each step) vs a batch of 4 sequences
//   sharing the context's pages — alternating the variants, median ms per step. The cache is filled
//   with random values instead of a prefill (attention costs the same).

import * as ortPublic from 'onnxruntime-node';
import { DT, F, GraphBuilder } from './onnx.js';
import { defaultThreads, f32Tensor, Graph } from './ort.js';

const args = process.argv.slice(2);
const what = args.find((a) => !a.startsWith('--')) ?? 'all';
const ti = args.indexOf('--threads');
const threads = ti >= 0 ? Number(args[ti + 1]) : defaultThreads();

function rand(n: number, seed = 1): Float32Array {
  const a = new Float32Array(n);
  let s = seed >>> 0;
  for (let i = 0; i < n; i++) {
    s = (s * 1664525 + 1013904223) >>> 0;
    a[i] = s / 2 ** 32 - 0.5;
  }
  return a;
}

function timeIt(fn: () => void, minMs = 300, minIters = 3): number {
  fn();
  let iters = 0;
  const t0 = performance.now();
  while (performance.now() - t0 < minMs || iters < minIters) {
    fn();
    iters++;
  }
  return (performance.now() - t0) / iters;
}

async function overhead(): Promise<void> {
  const g = new GraphBuilder();
  const x = g.input('x', DT.FLOAT, ['n', 896]);
  const y = g.op('Add', [x, g.f32([1])]);
  g.output(y, DT.FLOAT, ['n', 896]);
  const model = g.build();
  const sync = new Graph(model, { threads });
  const feed = { x: f32Tensor(rand(896), [1, 896]) };
  const tSync = timeIt(() => void sync.run(feed), 300) * 1000;
  const pub = await ortPublic.InferenceSession.create(model, { intraOpNumThreads: threads, executionProviders: ['cpu'] });
  const pfeed = { x: new ortPublic.Tensor('float32', rand(896), [1, 896]) };
  await pub.run(pfeed);
  let it = 0;
  const t0 = performance.now();
  while (performance.now() - t0 < 300) {
    await pub.run(pfeed);
    it++;
  }
  const tPub = ((performance.now() - t0) / it) * 1000;
  console.log(JSON.stringify({ bench: 'run-overhead', graph: 'Add [1,896]', threads, syncBindingUs: +tSync.toFixed(1), publicAsyncUs: +tPub.toFixed(1) }));
  // A 1-row graph with 8 chained elementwise ops: is one run with many nodes cheaper than many runs?
  const g2 = new GraphBuilder();
  let v = g2.input('x', DT.FLOAT, ['n', 896]);
  for (let i = 0; i < 8; i++) v = g2.op(i % 2 ? 'Mul' : 'Add', [v, g2.f32([1.0001])]);
  g2.output(v, DT.FLOAT, ['n', 896]);
  const s2 = new Graph(g2.build(), { threads });
  const t8 = timeIt(() => void s2.run(feed), 300) * 1000;
  console.log(JSON.stringify({ bench: 'run-overhead', graph: '8 elementwise nodes [1,896]', threads, syncBindingUs: +t8.toFixed(1) }));
  // JS loop doing rmsnorm on 896 for comparison
  const xs = rand(896);
  const w = rand(896, 2);
  const out = new Float32Array(896);
  const tJs = timeIt(() => {
    for (let r = 0; r < 1; r++) {
      let ss = 0;
      for (let i = 0; i < 896; i++) ss += xs[i] * xs[i];
      const inv = 1 / Math.sqrt(ss / 896 + 1e-6);
      for (let i = 0; i < 896; i++) out[i] = xs[i] * inv * w[i];
    }
  }, 200) * 1000;
  console.log(JSON.stringify({ bench: 'js-rmsnorm', rows: 1, cols: 896, us: +tJs.toFixed(2) }));
  const big = rand(512 * 896);
  const bigOut = new Float32Array(512 * 896);
  const tJs512 = timeIt(() => {
    for (let r = 0; r < 512; r++) {
      const o = r * 896;
      let ss = 0;
      for (let i = 0; i < 896; i++) ss += big[o + i] * big[o + i];
      const inv = 1 / Math.sqrt(ss / 896 + 1e-6);
      for (let i = 0; i < 896; i++) bigOut[o + i] = big[o + i] * inv * w[i];
    }
  }, 200) * 1000;
  console.log(JSON.stringify({ bench: 'js-rmsnorm', rows: 512, cols: 896, us: +tJs512.toFixed(1) }));
  const gate = rand(512 * 4864);
  const up = rand(512 * 4864, 3);
  const so = new Float32Array(512 * 4864);
  const tSilu = timeIt(() => {
    for (let i = 0; i < so.length; i++) so[i] = (gate[i] / (1 + Math.exp(-gate[i]))) * up[i];
  }, 200) * 1000;
  console.log(JSON.stringify({ bench: 'js-silumul', rows: 512, cols: 4864, us: +tSilu.toFixed(1) }));
}

function matmulGraph(k: number, n: number): Uint8Array {
  const g = new GraphBuilder();
  const x = g.input('x', DT.FLOAT, ['m', k]);
  const w = g.init('w', DT.FLOAT, [k, n], rand(k * n, 7));
  const y = g.op('MatMul', [x, w]);
  g.output(y, DT.FLOAT, ['m', n]);
  return g.build();
}

function nbitsGraph(k: number, n: number, bits: number, block: number, acc: number, zp: 'none' | 'u8' | 'float' = 'none'): Uint8Array {
  const g = new GraphBuilder();
  const x = g.input('x', DT.FLOAT, ['m', k]);
  const kb = k / block;
  const blob = (block * bits) / 8;
  const q = new Uint8Array(n * kb * blob);
  let s = 12345;
  for (let i = 0; i < q.length; i++) {
    s = (s * 1103515245 + 12345) >>> 0;
    q[i] = s >>> 24;
  }
  const scales = new Float32Array(n * kb).fill(0.01);
  g.init('b', DT.UINT8, [n, kb, blob], q);
  g.init('s', DT.FLOAT, [n * kb], scales);
  const ins = [x, 'b', 's'];
  if (zp === 'u8') ins.push(g.init('z', DT.UINT8, [n * Math.ceil((kb * bits) / 8)], new Uint8Array(n * Math.ceil((kb * bits) / 8)).fill(0x77)));
  if (zp === 'float') ins.push(g.init('z', DT.FLOAT, [n * kb], new Float32Array(n * kb).fill(7.3)));
  const y = g.op('MatMulNBits', ins, { K: k, N: n, bits, block_size: block, accuracy_level: acc }, 'com.microsoft');
  g.output(y, DT.FLOAT, ['m', n]);
  return g.build();
}

function runMatmul(label: Record<string, unknown>, model: Uint8Array, k: number, n: number, rowsList: number[]): void {
  let sess: Graph;
  try {
    sess = new Graph(model, { threads });
  } catch (e) {
    console.log(JSON.stringify({ ...label, error: (e as Error).message.slice(0, 200) }));
    return;
  }
  for (const rows of rowsList) {
    const feed = { x: f32Tensor(rand(rows * k, 3), [rows, k]) };
    const ms = timeIt(() => void sess.run(feed), rows === 1 ? 300 : 600);
    console.log(JSON.stringify({ ...label, k, n, rows, us: +(ms * 1000).toFixed(1), gflops: +((2 * rows * k * n) / (ms * 1e6)).toFixed(1), threads }));
  }
  sess.dispose();
}

function flag(name: string): string | undefined {
  const i = args.indexOf(`--${name}`);
  return i >= 0 ? args[i + 1] : undefined;
}

async function kvDecode(): Promise<void> {
  const { GGUFFile } = await import('../../gguf/reader.js');
  const { loadTransformerConfig } = await import('../../model/config.js');
  const { Transformer } = await import('../../model/transformer.js');
  const { CpuBackend } = await import('./index.js');
  const { defaultBenchModel } = await import('../../bench/engine.js');
  const path = flag('model') ?? defaultBenchModel('q8_0');
  const ctxs = (flag('ctx') ?? '512,4096,16384').split(',').map(Number);
  const steps = Number(flag('steps') ?? 6);
  const rounds = Number(flag('rounds') ?? 3);
  const file = GGUFFile.open(path);
  const cfg = loadTransformerConfig(file);
  const load = (kv: 'f16' | 'f32', graphBytes?: number) => {
    const b = new CpuBackend({ threads, kv, graphBytes });
    const m = new Transformer(cfg, b);
    m.load(file);
    return { b, m };
  };
  const sides = { f16: load('f16'), f32: load('f32'), f16one: load('f16', Infinity) };
  type Side = keyof typeof sides;
  file.close();
  const { nLayers: L, nKVHeads: G, headDim: d } = cfg;
  const fill = (a: Float32Array | Uint16Array) => {
    let s = 1;
    for (let i = 0; i < a.length; i++) {
      s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
      if (a instanceof Uint16Array) a[i] = 0x2c00 + (s >>> 22); // halves in [1/16, 1): finite
      else a[i] = (s >>> 8) / 2 ** 24 - 0.5;
    }
  };
  type Kv = import('../../model/backend.js').KVCache;
  for (const ctx of ctxs) {
    const nP = Math.ceil((ctx + 1) / 64);
    const pool = sides.f16.b.createKVPool({ nLayers: L, nKVHeads: G, headDim: d, pageSize: 64, nPages: 2 * nP + 4 * 2, dtype: 'f16' }) as import('./kv.js').CpuKVPool;
    const paged = (table: number[]): Kv => ({ pool, pageSize: 64, pageTable: Int32Array.from(table), pageTableVersion: 0, length: ctx, capacity: table.length * 64, commit() {}, truncate() {}, free() {} }) as unknown as Kv;
    for (let b = 0; b < Math.ceil(pool.nPages / pool.arenaPages); b++) for (let l = 0; l < L; l++) for (const w of [0, 1] as const) fill(pool.array(b, l, w));
    const contiguous = (side: Side): Kv => {
      const kv = sides[side].m.createKV(ctx + 1) as import('./kv.js').CpuKVCache;
      for (let l = 0; l < L; l++) for (const w of [0, 1] as const) fill(kv.array(0, l, w));
      return kv;
    };
    // Batch: 4 sequences sharing the context's full pages, each with its own copy of the last one.
    const full = Math.floor(ctx / 64);
    const shared = Array.from({ length: full }, (_, i) => i);
    const batch = [0, 1, 2, 3].map((j) => paged([...shared, 2 * nP + 2 * j, 2 * nP + 2 * j + 1].slice(0, nP)));
    const variants: { name: string; side: Side; kvs: Kv[] }[] = [
      { name: 'f32 contiguous', side: 'f32', kvs: [contiguous('f32')] },
      { name: 'f16 contiguous', side: 'f16', kvs: [contiguous('f16')] },
      { name: 'f16 contiguous, one graph per step', side: 'f16one', kvs: [contiguous('f16one')] },
      { name: 'f16 paged', side: 'f16', kvs: [paged(Array.from({ length: nP }, (_, i) => i))] },
      { name: 'f16 scattered', side: 'f16', kvs: [paged(Array.from({ length: nP }, (_, i) => 2 * i))] },
      { name: 'f16 batch of 4 (shared pages)', side: 'f16', kvs: batch },
    ];
    const only = flag('only')?.split(',');
    if (only) variants.splice(0, variants.length, ...variants.filter((v) => only.some((o) => v.name.includes(o))));
    const times = new Map<string, number[]>(variants.map((v) => [v.name, []]));
    const step = async (v: (typeof variants)[number]) => {
      const n = v.kvs.length;
      await sides[v.side].m.forward({
        tokens: Int32Array.from({ length: n }, (_, i) => 100 + i),
        positions: new Int32Array(n).fill(ctx),
        seqs: v.kvs.map((kv, i) => ({ kv, row: i, n: 1, pos: ctx })),
        logitRows: Array.from({ length: n }, (_, i) => i),
      });
    };
    for (const v of variants) await step(v); // compile, first touch
    for (let r = 0; r < rounds; r++) {
      for (const v of variants) {
        for (let i = 0; i < steps; i++) {
          const t0 = performance.now();
          await step(v);
          times.get(v.name)!.push(performance.now() - t0);
        }
      }
    }
    const median = (a: number[]) => [...a].sort((x, y) => x - y)[Math.floor(a.length / 2)];
    for (const v of variants) {
      const ms = median(times.get(v.name)!);
      const bytesPerToken = 2 * L * G * d * (v.name.startsWith('f32') ? 4 : 2);
      console.log(JSON.stringify({ bench: 'kv-decode', ctx, variant: v.name, msPerStep: +ms.toFixed(2), tokensPerS: +((v.kvs.length / ms) * 1000).toFixed(2), kvBytesPerToken: bytesPerToken, threads }));
    }
    pool.dispose();
  }
  for (const s of Object.values(sides)) s.b.dispose();
}

async function main(): Promise<void> {
  if (what === 'kv') return kvDecode();
  if (what === 'overhead' || what === 'all') await overhead();
  const shapes: [number, number][] = [
    [896, 896],
    [896, 4864],
    [4864, 896],
  ];
  if (what === 'matmul' || what === 'all') {
    for (const [k, n] of shapes) runMatmul({ bench: 'matmul-f32' }, matmulGraph(k, n), k, n, [1, 512]);
  }
  if (what === 'nbits' || what === 'all') {
    for (const [bits, block, acc] of [
      [4, 32, 4],
      [8, 32, 4],
      [8, 16, 4],
      [4, 32, 0],
      [8, 32, 0],
    ]) {
      for (const [k, n] of shapes) runMatmul({ bench: 'matmulnbits', bits, block, acc }, nbitsGraph(k, n, bits, block, acc), k, n, [1, 512]);
    }
  }
  if (what === 'b16') {
    runMatmul({ bench: 'matmulnbits', bits: 4, block: 16, acc: 4 }, nbitsGraph(896, 4864, 4, 16, 4), 896, 4864, [1, 512]);
  }
  if (what === 'zp') {
    for (const zp of ['u8', 'float'] as const) runMatmul({ bench: 'matmulnbits', bits: 4, block: 32, acc: 4, zp }, nbitsGraph(896, 4864, 4, 32, 4, zp), 896, 4864, [1, 512]);
  }
  if (what === 'feedw') {
    // Weights passed as feeds (not initializers): no prepacking, one graph for every layer.
    for (const [bits, block] of [[8, 32], [4, 32], [8, 16]]) {
      for (const [k, n] of shapes) {
        const g = new GraphBuilder();
        const x = g.input('x', DT.FLOAT, ['m', k]);
        const kb = k / block;
        const blob = (block * bits) / 8;
        g.input('b', DT.UINT8, [n, kb, blob]);
        g.input('s', DT.FLOAT, [n * kb]);
        const y = g.op('MatMulNBits', [x, 'b', 's'], { K: k, N: n, bits, block_size: block, accuracy_level: 4 }, 'com.microsoft');
        g.output(y, DT.FLOAT, ['m', n]);
        const sess = new Graph(g.build(), { threads });
        const q = new Uint8Array(n * kb * blob).map((_, i) => (i * 2654435761) >>> 24);
        const { ort } = await import('./ort.js');
        const T = ort().Tensor;
        for (const rows of [1, 512]) {
          const feed = { x: f32Tensor(rand(rows * k, 3), [rows, k]), b: new T('uint8', q, [n, kb, blob]), s: f32Tensor(new Float32Array(n * kb).fill(0.01), [n * kb]) };
          const ms = timeIt(() => void sess.run(feed), 400);
          console.log(JSON.stringify({ bench: 'matmulnbits-fed', bits, block, k, n, rows, us: +(ms * 1000).toFixed(1), gflops: +((2 * rows * k * n) / (ms * 1e6)).toFixed(1) }));
        }
      }
    }
    for (const [k, n] of shapes) {
      const g = new GraphBuilder();
      const x = g.input('x', DT.FLOAT, ['m', k]);
      g.input('w', DT.FLOAT, [k, n]);
      g.output(g.op('MatMul', [x, 'w']), DT.FLOAT, ['m', n]);
      const sess = new Graph(g.build(), { threads });
      for (const rows of [1, 512]) {
        const feed = { x: f32Tensor(rand(rows * k, 3), [rows, k]), w: f32Tensor(rand(k * n, 5), [k, n]) };
        const ms = timeIt(() => void sess.run(feed), 400);
        console.log(JSON.stringify({ bench: 'matmul-f32-fed', k, n, rows, us: +(ms * 1000).toFixed(1), gflops: +((2 * rows * k * n) / (ms * 1e6)).toFixed(1) }));
      }
    }
  }
  if (what === 'lmhead') {
    runMatmul({ bench: 'matmulnbits', bits: 8, block: 32, acc: 4 }, nbitsGraph(896, 151936, 8, 32, 4), 896, 151936, [1]);
  }
  void F;
}

await main();
