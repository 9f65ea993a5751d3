// The CPU backend: onnxruntime-node's CPU execution provider (MLAS) running graphs built here from the
// GGUF weights. Design, from the measurements in README.md:
//
// - Ops are recorded lazily, attention included, and everything up to the point where the host needs
//   values (selectRows, read, or the end of a step) runs as ONE onnxruntime graph: a whole decode step
//   is one run over all layers plus one for the output head. Why one: every onnxruntime session has
//   its own intra-op thread pool, and a pool that slept since the previous token wakes slowly; 24
//   per-layer sessions measured 2.5× slower than the same products in one graph (README).
// - Attention reads the KV cache through zero-copy views (head-major cache: each KV head's keys are
//   one contiguous slab) and writes the new K/V rows as graph outputs straight into the cache.
//   Batches of several sequences run the graph once per sequence (each has its own past).
// - A graph is cached by its structure (ops, wiring, weights); rows and the past length are symbolic,
//   so every step of every length reuses it. Matrices become the initializers of the one graph that
//   uses them (in-memory external data; MatMulNBits prepacks them), and the backend drops its copy.
// - Liveness comes from `release`: a run fetches only the activations the caller still holds.

import type { GGUFTensorInfo } from '../../gguf/reader.js';
import { dequantize, dequantizeInto } from '../../gguf/quant.js';
import { TYPE_TRAITS, typeName } from '../../gguf/types.js';
import { isPagedKV, type Act, type AttentionParams, type Backend, type BackendInfo, type KVCache, type KVCacheOptions, type RopeConfig, type SeqSlice, type Weight } from '../../model/backend.js';
import { CpuKVCache, type KVPrecision } from './kv.js';
import { DT, GraphBuilder } from './onnx.js';
import { ACCURACY_INT8, emitAdd, emitAttention, emitMatmul, emitRmsNorm, emitRope, emitSiluMul } from './ops.js';
import { defaultThreads, f32Tensor, Graph, i64Tensor, ort, type SessionConfig } from './ort.js';
import { canPack, concatMatrices, packedBytes, packMatrix, supportedTypes, type PackedMatrix, type Precision } from './weights.js';
import { cpuDeviceName } from './doctor.js';

export interface CpuBackendOptions {
  /** Intra-op threads (default: the machine's cores; env REPOKV_CPU_THREADS overrides the default). */
  threads?: number;
  /** 'int8' (default): quantized weights through MatMulNBits, int8 activations. 'f32': exact f32 products. */
  precision?: Precision;
  /** KV cache values: 'f16' (default, as llama.cpp) or 'f32'. */
  kv?: KVPrecision;
  /** Largest row count per run; longer batches run in slices (bounds temporaries). */
  maxRows?: number;
  /** Attention score budget per run, in floats (heads × rows × keys); long prefills run in row slices. */
  scoreFloats?: number;
}

interface CpuWeight extends Weight {
  readonly id: number;
  readonly info: GGUFTensorInfo;
  /** GGUF bytes until a segment graph holds the matrix (kept for embedding tables). */
  raw: Uint8Array | null;
  /** 1-D weights (norms, biases) in f32. */
  vec: Float32Array | null;
  /** Signature of the segment whose graph holds this matrix. */
  owner: string | null;
}

type OpRec =
  | { kind: 'rmsnorm'; x: CpuAct; w: CpuWeight; eps: number; group: number }
  | { kind: 'matmul'; x: CpuAct; w: CpuWeight; bias?: CpuWeight }
  | { kind: 'rope'; x: CpuAct; positions: Int32Array; nHeads: number; headDim: number; cfg: RopeConfig }
  | { kind: 'silumul'; g: CpuAct; u: CpuAct }
  | { kind: 'add'; a: CpuAct; b: CpuAct }
  | { kind: 'attention'; q: CpuAct; k: CpuAct; v: CpuAct; p: AttentionParams; seqs: SeqSlice[] };

class CpuAct implements Act {
  released = false;
  /** Pending ops that read this activation. */
  uses = 0;
  constructor(
    readonly rows: number,
    readonly cols: number,
    public data: Float32Array | null,
    public op: OpRec | null,
  ) {}
}

function inputsOf(op: OpRec): CpuAct[] {
  switch (op.kind) {
    case 'silumul':
      return [op.g, op.u];
    case 'add':
      return [op.a, op.b];
    case 'attention':
      return [op.q, op.k, op.v];
    default:
      return [op.x];
  }
}

/** cos/sin of every position for one RopeConfig, grown on demand: [positions, dims/2]. */
class RopeTable {
  cos = new Float32Array(0);
  sin = new Float32Array(0);
  n = 0;
  constructor(readonly cfg: RopeConfig) {}
  ensure(maxPos: number): void {
    if (maxPos < this.n) return;
    const half = this.cfg.dims / 2;
    const n = Math.max(maxPos + 1, 2 * this.n, 1024);
    const cos = new Float32Array(n * half);
    const sin = new Float32Array(n * half);
    cos.set(this.cos);
    sin.set(this.sin);
    for (let p = this.n; p < n; p++) {
      for (let i = 0; i < half; i++) {
        const theta = p * this.cfg.invFreq[i];
        cos[p * half + i] = Math.cos(theta) * this.cfg.mscale;
        sin[p * half + i] = Math.sin(theta) * this.cfg.mscale;
      }
    }
    this.cos = cos;
    this.sin = sin;
    this.n = n;
  }
  gather(positions: Int32Array, r0: number, r1: number): [Float32Array, Float32Array] {
    const half = this.cfg.dims / 2;
    let max = 0;
    for (let r = r0; r < r1; r++) max = Math.max(max, positions[r]);
    this.ensure(max);
    const c = new Float32Array((r1 - r0) * half);
    const s = new Float32Array((r1 - r0) * half);
    for (let r = r0; r < r1; r++) {
      const p = positions[r];
      if (p < 0) throw new Error(`negative position ${p}`);
      c.set(this.cos.subarray(p * half, (p + 1) * half), (r - r0) * half);
      s.set(this.sin.subarray(p * half, (p + 1) * half), (r - r0) * half);
    }
    return [c, s];
  }
}

interface Segment {
  graph: Graph;
  /** Graph output name of each node (by position in the segment). */
  outputs: string[];
}

export class CpuBackend implements Backend {
  readonly info: BackendInfo;
  private readonly threads: number;
  private readonly precision: Precision;
  private readonly kvPrecision: KVPrecision;
  private readonly maxRows: number;
  private readonly scoreFloats: number;
  private readonly session: SessionConfig;
  private pending: CpuAct[] = [];
  private segments = new Map<string, Segment>();
  private ropeTables = new WeakMap<RopeConfig, RopeTable>();
  private ids = new WeakMap<object, number>();
  private nextId = 1;
  private weights: CpuWeight[] = [];
  /** Bytes of weights handed to onnxruntime (packed), and of embedding tables kept on the host. */
  residentBytes = 0;
  /** Segment graphs compiled and runs made (for benchmarks and tests). */
  stats = { segments: 0, runs: 0, compileMs: 0, runMs: 0 };

  constructor(opts: CpuBackendOptions = {}) {
    this.threads = opts.threads ?? defaultThreads();
    this.precision = opts.precision ?? 'int8';
    this.kvPrecision = opts.kv ?? 'f16';
    this.maxRows = opts.maxRows ?? 1024;
    this.scoreFloats = opts.scoreFloats ?? 1 << 25;
    this.session = { threads: this.threads };
    const o = ort();
    this.info = {
      name: 'cpu',
      device: `${cpuDeviceName()} (${this.threads} thread${this.threads === 1 ? '' : 's'})`,
      details: { onnxruntime: o.version, threads: this.threads, precision: this.precision, kv: this.kvPrecision },
    };
  }

  private positions = new BigInt64Array(0);
  /** 0 .. n−1 as int64 (RotaryEmbedding's position ids: row r reads row r of the cos/sin feed). */
  private arange(n: number): BigInt64Array {
    if (this.positions.length < n) this.positions = BigInt64Array.from({ length: Math.max(n, 1024) }, (_, i) => BigInt(i));
    return this.positions.subarray(0, n);
  }

  private idOf(o: object): number {
    let id = this.ids.get(o);
    if (id === undefined) {
      id = this.nextId++;
      this.ids.set(o, id);
    }
    return id;
  }

  uploadWeight(t: GGUFTensorInfo, bytes: Uint8Array): Weight {
    const is1D = t.dims.length === 1 || t.nElements === t.dims[0];
    if (!is1D && !canPack(t.type)) {
      throw new Error(`tensor ${t.name} has type ${typeName(t.type)}, which the CPU backend cannot compute with (supported: ${supportedTypes().join(', ')})`);
    }
    const w: CpuWeight = {
      name: t.name,
      dims: t.dims,
      id: this.nextId++,
      info: t,
      raw: is1D ? null : bytes,
      vec: is1D ? dequantize(t.type, bytes, t.nElements) : null,
      owner: null,
    };
    this.weights.push(w);
    return w;
  }

  createKV(opts: KVCacheOptions): KVCache {
    return new CpuKVCache(opts, this.kvPrecision);
  }

  embed(table: Weight, tokens: Int32Array): Act {
    const w = table as CpuWeight;
    const [d, nVocab] = w.dims;
    if (!w.raw) throw new Error(`embed: ${w.name} is no longer on the host (it was compiled into a matmul graph first)`);
    const tr = TYPE_TRAITS[w.info.type];
    const rowBytes = (d / tr.blockSize) * tr.typeSize;
    const out = new Float32Array(tokens.length * d);
    for (let i = 0; i < tokens.length; i++) {
      const t = tokens[i];
      if (t < 0 || t >= nVocab) throw new Error(`token id ${t} is outside the vocabulary of ${nVocab}`);
      dequantizeInto(w.info.type, w.raw.subarray(t * rowBytes, (t + 1) * rowBytes), out.subarray(i * d, (i + 1) * d));
    }
    return new CpuAct(tokens.length, d, out, null);
  }

  private record(rows: number, cols: number, op: OpRec): CpuAct {
    for (const x of inputsOf(op)) {
      if (!x.data && !x.op) throw new Error('an op used an activation that was released or never computed');
      x.uses++;
    }
    const a = new CpuAct(rows, cols, null, op);
    this.pending.push(a);
    return a;
  }

  rmsNorm(x: Act, w: Weight, eps: number, groupSize?: number): Act {
    const a = x as CpuAct;
    const W = w as CpuWeight;
    const group = groupSize ?? a.cols;
    if (!W.vec || W.vec.length !== group) throw new Error(`rmsNorm: ${W.name} has ${W.vec?.length ?? 'matrix'} values, expected ${group}`);
    if (a.cols % group !== 0) throw new Error(`rmsNorm: ${a.cols} columns are not whole groups of ${group}`);
    return this.record(a.rows, a.cols, { kind: 'rmsnorm', x: a, w: W, eps, group });
  }

  matmul(x: Act, w: Weight, bias?: Weight): Act {
    const a = x as CpuAct;
    const W = w as CpuWeight;
    const [k, n] = W.dims;
    if (a.cols !== k) throw new Error(`matmul: ${a.cols} input columns, weight ${W.name} takes ${k}`);
    if (bias && (bias as CpuWeight).vec?.length !== n) throw new Error(`matmul: bias ${bias.name} does not have ${n} values`);
    return this.record(a.rows, n, { kind: 'matmul', x: a, w: W, bias: bias as CpuWeight | undefined });
  }

  rope(x: Act, positions: Int32Array, nHeads: number, headDim: number, cfg: RopeConfig): Act {
    const a = x as CpuAct;
    if (a.cols !== nHeads * headDim) throw new Error(`rope: ${a.cols} columns, expected ${nHeads}×${headDim}`);
    if (positions.length !== a.rows) throw new Error(`rope: ${positions.length} positions for ${a.rows} rows`);
    return this.record(a.rows, a.cols, { kind: 'rope', x: a, positions, nHeads, headDim, cfg });
  }

  siluMul(gate: Act, up: Act): Act {
    const g = gate as CpuAct;
    const u = up as CpuAct;
    if (g.rows !== u.rows || g.cols !== u.cols) throw new Error('siluMul: shapes differ');
    return this.record(g.rows, g.cols, { kind: 'silumul', g, u });
  }

  add(a: Act, b: Act): Act {
    const x = a as CpuAct;
    const y = b as CpuAct;
    if (x.rows !== y.rows || x.cols !== y.cols) throw new Error('add: shapes differ');
    return this.record(x.rows, x.cols, { kind: 'add', a: x, b: y });
  }

  attention(q: Act, k: Act, v: Act, seqs: SeqSlice[], p: AttentionParams): Act {
    const Q = q as CpuAct;
    const K = k as CpuAct;
    const V = v as CpuAct;
    const { nHeads: H, nKVHeads: G, headDim: d } = p;
    if (Q.cols !== H * d || K.cols !== G * d || V.cols !== G * d) throw new Error(`attention: q/k/v have ${Q.cols}/${K.cols}/${V.cols} columns for ${H}/${G} heads of ${d}`);
    if (H % G !== 0) throw new Error(`attention: ${H} heads cannot share ${G} KV heads`);
    let rows = 0;
    for (const s of seqs) {
      if (isPagedKV(s.kv) || !(s.kv instanceof CpuKVCache)) throw new Error('the CPU backend attends over its own KV caches (createKV); paged KV pools are not supported yet');
      if (s.pos + s.n > s.kv.capacity) throw new Error(`sequence needs ${s.pos + s.n} tokens of KV, capacity is ${s.kv.capacity}`);
      if (s.row !== rows) throw new Error('attention: sequences must cover the batch rows in order');
      rows += s.n;
    }
    if (rows !== Q.rows) throw new Error(`attention: sequences cover ${rows} rows of ${Q.rows}`);
    return this.record(Q.rows, Q.cols, { kind: 'attention', q: Q, k: K, v: V, p: { ...p }, seqs });
  }

  selectRows(x: Act, rows: number[]): Act {
    const a = x as CpuAct;
    this.flush([a]);
    const data = a.data!;
    if (rows.length === a.rows && rows.every((r, i) => r === i)) return new CpuAct(a.rows, a.cols, data, null);
    const out = new Float32Array(rows.length * a.cols);
    rows.forEach((r, i) => {
      if (r < 0 || r >= a.rows) throw new Error(`selectRows: row ${r} of ${a.rows}`);
      out.set(data.subarray(r * a.cols, (r + 1) * a.cols), i * a.cols);
    });
    return new CpuAct(rows.length, a.cols, out, null);
  }

  async read(x: Act): Promise<Float32Array> {
    const a = x as CpuAct;
    this.flush([a]);
    return a.data!;
  }

  release(x: Act): void {
    const a = x as CpuAct;
    a.released = true;
    if (a.data && a.uses === 0) a.data = null;
  }

  endStep(): void {
    // Pending attention ops still have to write their K/V rows (a prefill chunk that wants no logits).
    // The whole pending step runs, as when logits are wanted: the same graph, no second copy of weights.
    if (this.pending.some((a) => a.op!.kind === 'attention')) this.flush([]);
    for (const a of this.pending) {
      for (const i of inputsOf(a.op!)) i.uses--;
      a.op = null;
    }
    this.pending = [];
  }

  dispose(): void {
    this.endStep();
    for (const s of this.segments.values()) s.graph.dispose();
    this.segments.clear();
  }

  /**
   * Computes every pending op as one graph and fetches `targets` and the activations the caller still
   * holds. Nothing is pruned, so a step's graph is the same whether or not its logits are read.
   */
  private flush(targets: CpuAct[]): void {
    for (const t of targets) if (!t.data && !t.op) throw new Error('an activation was used after release');
    if (this.pending.length === 0) return;
    const order = this.pending;
    this.pending = [];
    const wanted = new Set<CpuAct>([...targets.filter((t) => !t.data), ...order.filter((a) => !a.released)]);
    this.runSegment(order, wanted);
  }

  private runSegment(order: CpuAct[], wanted: Set<CpuAct>): void {
    const index = new Map<CpuAct, number>(order.map((a, i) => [a, i]));
    const inputs: CpuAct[] = [];
    const inputIndex = new Map<CpuAct, number>();
    const ropeGroups: { table: RopeTable; positions: Int32Array }[] = [];
    const ropeIndex = new Map<string, number>();
    const ref = (x: CpuAct): string => {
      const n = index.get(x);
      if (n !== undefined) return `n${n}`;
      let i = inputIndex.get(x);
      if (i === undefined) {
        i = inputs.length;
        inputs.push(x);
        inputIndex.set(x, i);
      }
      return `x${i}:${x.cols}`;
    };
    const parts: string[] = [];
    const ropeOf: number[] = [];
    const attIdx: number[] = [];
    for (const a of order) {
      const op = a.op!;
      switch (op.kind) {
        case 'rmsnorm':
          parts.push(`norm(${ref(op.x)},w${op.w.id},${op.eps},${op.group})`);
          break;
        case 'matmul':
          parts.push(`mm(${ref(op.x)},w${op.w.id}${op.bias ? `,b${op.bias.id}` : ''})`);
          break;
        case 'rope': {
          let table = this.ropeTables.get(op.cfg);
          if (!table) {
            table = new RopeTable(op.cfg);
            this.ropeTables.set(op.cfg, table);
          }
          const key = `${this.idOf(op.cfg)}/${this.idOf(op.positions)}`;
          let gi = ropeIndex.get(key);
          if (gi === undefined) {
            gi = ropeGroups.length;
            ropeGroups.push({ table, positions: op.positions });
            ropeIndex.set(key, gi);
          }
          ropeOf[index.get(a)!] = gi;
          parts.push(`rope(${ref(op.x)},r${gi}:${op.cfg.kind}:${op.cfg.dims},${op.nHeads},${op.headDim})`);
          break;
        }
        case 'silumul':
          parts.push(`silumul(${ref(op.g)},${ref(op.u)})`);
          break;
        case 'add':
          parts.push(`add(${ref(op.a)},${ref(op.b)})`);
          break;
        case 'attention':
          attIdx.push(index.get(a)!);
          parts.push(`att(${ref(op.q)},${ref(op.k)},${ref(op.v)},L${op.p.layer},${op.p.nHeads},${op.p.nKVHeads},${op.p.headDim},${op.p.scale})`);
          break;
      }
    }
    // Graph outputs: the segment's leaves (whatever the caller holds or not, so a step's graph is the
    // same with or without logits) and inner values the caller still holds. Everything else stays
    // inside onnxruntime, which reuses its memory (a 512-row prefill would otherwise keep ~65 MB of
    // temporaries per layer alive to the end of the run).
    const consumed = new Set<CpuAct>();
    for (const a of order) for (const i of inputsOf(a.op!)) consumed.add(i);
    const declared = order.map((a) => !consumed.has(a) || !a.released);
    for (const a of wanted) if (index.has(a) && !declared[index.get(a)!]) throw new Error('internal: a wanted activation is not a graph output');
    const sig = `${this.kvPrecision};` + parts.join(';') + '|' + declared.map((d) => (d ? 1 : 0)).join('');
    let seg = this.segments.get(sig);
    if (!seg) seg = this.compile(sig, order, inputs, inputIndex, ropeOf, ropeGroups.length, declared);

    const rows = order[0].rows;
    for (const a of order) if (a.rows !== rows) throw new Error('ops of different row counts in one segment');
    const outs = new Map<CpuAct, Float32Array>();
    for (const a of wanted) if (index.has(a)) outs.set(a, new Float32Array(a.rows * a.cols));
    const atts = attIdx.map((i) => order[i].op as Extract<OpRec, { kind: 'attention' }>);
    // Row slices: one sequence at a time when the graph attends (each has its own past), and within a
    // sequence as many rows as the score budget allows (heads × rows × (past + rows) floats).
    const slices: { r0: number; r1: number; seq?: SeqSlice }[] = [];
    if (atts.length) {
      const seqs = atts[0].seqs;
      for (const t of atts) {
        if (t.seqs.length !== seqs.length || t.seqs.some((x, i) => x.kv !== seqs[i].kv || x.row !== seqs[i].row || x.n !== seqs[i].n || x.pos !== seqs[i].pos)) {
          throw new Error('attention ops of one step must share its sequences');
        }
      }
      const H = Math.max(...atts.map((t) => t.p.nHeads));
      for (const sq of seqs) {
        for (let r0 = sq.row; r0 < sq.row + sq.n; ) {
          const past = sq.pos + (r0 - sq.row);
          const fit = Math.floor((-past + Math.sqrt(past * past + (4 * this.scoreFloats) / H)) / 2);
          const r1 = Math.min(sq.row + sq.n, r0 + Math.max(16, Math.min(this.maxRows, fit)));
          slices.push({ r0, r1, seq: sq });
          r0 = r1;
        }
      }
    } else {
      for (let r0 = 0; r0 < rows; r0 += this.maxRows) slices.push({ r0, r1: Math.min(rows, r0 + this.maxRows) });
    }
    for (const { r0, r1, seq } of slices) {
      const n = r1 - r0;
      const feeds: Record<string, ReturnType<typeof f32Tensor>> = {};
      inputs.forEach((x, i) => {
        feeds[`x${i}`] = f32Tensor(x.data!.subarray(r0 * x.cols, r1 * x.cols), [n, x.cols]);
      });
      ropeGroups.forEach((g, i) => {
        const [c, s] = g.table.gather(g.positions, r0, r1);
        const half = g.table.cfg.dims / 2;
        feeds[`cos${i}`] = f32Tensor(c, [n, half]);
        feeds[`sin${i}`] = f32Tensor(s, [n, half]);
      });
      if (ropeGroups.length) feeds.rpos = i64Tensor(this.arange(n), [1, n]);
      const fetches: Record<string, ReturnType<typeof f32Tensor>> = {};
      for (const [a, buf] of outs) fetches[seg.outputs[index.get(a)!]] = f32Tensor(buf.subarray(r0 * a.cols, r1 * a.cols), [n, a.cols]);
      if (seq) {
        const kv = seq.kv as CpuKVCache;
        const past = seq.pos + (r0 - seq.row);
        feeds.cmask = f32Tensor(causalMask(n), [n, n]);
        // No past yet: one placeholder key, masked out (reductions over an empty axis do not work).
        feeds.pmask = f32Tensor(past === 0 ? NO_PAST : HAS_PAST, [1]);
        for (const t of atts) {
          const l = t.p.layer;
          const d = t.p.headDim;
          const K = kv.keys(l);
          const V = kv.values(l);
          const zero = new Float32Array(d);
          for (let h = 0; h < t.p.nKVHeads; h++) {
            feeds[`kp${l}_${h}`] = past === 0 ? f32Tensor(zero, [1, d]) : f32Tensor(K[h].subarray(0, past * d), [past, d]);
            feeds[`vp${l}_${h}`] = past === 0 ? f32Tensor(zero, [1, d]) : f32Tensor(V[h].subarray(0, past * d), [past, d]);
            // The new rows land directly in the cache (disjoint from the past views above).
            fetches[`kn${l}_${h}`] = f32Tensor(K[h].subarray(past * d, (past + n) * d), [n, d]);
            fetches[`vn${l}_${h}`] = f32Tensor(V[h].subarray(past * d, (past + n) * d), [n, d]);
          }
        }
      }
      const tr = performance.now();
      seg.graph.run(feeds, fetches);
      this.stats.runMs += performance.now() - tr;
      this.stats.runs++;
    }
    for (const a of order) {
      for (const i of inputsOf(a.op!)) {
        i.uses--;
        if (i.released && i.uses === 0 && !index.has(i)) i.data = null;
      }
      a.op = null;
      a.data = outs.get(a) ?? null;
    }
  }

  private compile(sig: string, order: CpuAct[], inputs: CpuAct[], inputIndex: Map<CpuAct, number>, ropeOf: number[], nRope: number, declared: boolean[]): Segment {
    const t0 = performance.now();
    const g = new GraphBuilder('segment');
    inputs.forEach((x, i) => g.input(`x${i}`, DT.FLOAT, ['n', x.cols]));
    for (let i = 0; i < nRope; i++) {
      const rope = order.find((a, j) => a.op!.kind === 'rope' && ropeOf[j] === i)!.op as Extract<OpRec, { kind: 'rope' }>;
      g.input(`cos${i}`, DT.FLOAT, ['n', rope.cfg.dims / 2]);
      g.input(`sin${i}`, DT.FLOAT, ['n', rope.cfg.dims / 2]);
    }
    if (nRope) g.input('rpos', DT.INT64, [1, 'n']);
    const hasAtt = order.some((a) => a.op!.kind === 'attention');
    if (hasAtt) {
      g.input('cmask', DT.FLOAT, ['n', 'n']);
      g.input('pmask', DT.FLOAT, [1]);
    }
    const value = new Map<CpuAct, string>();
    const v = (x: CpuAct): string => value.get(x) ?? `x${inputIndex.get(x)}`;

    // Pack every matrix of the segment; matmuls that read the same activation with the same layout
    // (q/k/v, gate/up) become one product whose output is split: one MLAS call instead of 2–3.
    const owned: CpuWeight[] = [];
    const packed = new Map<CpuAct, PackedMatrix>();
    for (const a of order) {
      const op = a.op!;
      if (op.kind !== 'matmul') continue;
      const w = op.w;
      if (w.owner !== null && w.owner !== sig) {
        throw new Error(`CPU backend: weight ${w.name} is already compiled into another fused segment; a weight must be used by the same sequence of ops in every step (engine/backends/cpu/README.md)`);
      }
      if (!w.raw) throw new Error(`CPU backend: weight ${w.name} is no longer on the host`);
      const m = packMatrix(w.info, w.raw, this.precision);
      this.residentBytes += packedBytes(m);
      // The packed form replaces the GGUF bytes (peak memory: one form per matrix, plus onnxruntime's).
      if (w.name !== 'token_embd.weight') w.raw = null;
      packed.set(a, m);
      owned.push(w);
    }
    const layoutKey = (m: PackedMatrix) => (m.kind === 'f32' ? 'f32' : `${m.bits}/${m.block}`);
    const groupOf = new Map<CpuAct, CpuAct[]>();
    for (const a of order) {
      const op = a.op!;
      if (op.kind !== 'matmul' || groupOf.has(a)) continue;
      const key = layoutKey(packed.get(a)!);
      const grp = order.filter((b) => b.op!.kind === 'matmul' && (b.op as { x: CpuAct }).x === op.x && !groupOf.has(b) && layoutKey(packed.get(b)!) === key);
      for (const b of grp) groupOf.set(b, grp);
    }

    order.forEach((a, j) => {
      if (value.has(a)) return; // an output of a merged matmul emitted earlier
      const op = a.op!;
      let out: string;
      switch (op.kind) {
        case 'rmsnorm':
          out = emitRmsNorm(g, v(op.x), a.cols, op.w.vec!, op.eps, op.group);
          break;
        case 'matmul': {
          const grp = groupOf.get(a)!;
          const mats = grp.map((b) => packed.get(b)!);
          const biases = grp.map((b) => (b.op as Extract<OpRec, { kind: 'matmul' }>).bias?.vec ?? undefined);
          if (grp.length === 1) {
            out = emitMatmul(g, v(op.x), mats[0], biases[0], ACCURACY_INT8);
            break;
          }
          let bias: Float32Array | undefined;
          if (biases.some((b) => b)) {
            bias = new Float32Array(mats.reduce((s2, m) => s2 + m.n, 0));
            let o = 0;
            mats.forEach((m, i) => {
              if (biases[i]) bias!.set(biases[i]!, o);
              o += m.n;
            });
          }
          const y = emitMatmul(g, v(op.x), concatMatrices(mats), bias, ACCURACY_INT8);
          const parts = g.node('Split', [y, g.i64(mats.map((m) => m.n))], { axis: 1 }, { nOut: grp.length });
          grp.forEach((b, i) => value.set(b, parts[i]));
          return;
        }
        case 'rope':
          out = emitRope(g, v(op.x), `cos${ropeOf[j]}`, `sin${ropeOf[j]}`, 'rpos', op.nHeads, op.headDim, op.cfg.dims, op.cfg.kind);
          break;
        case 'silumul':
          out = emitSiluMul(g, v(op.g), v(op.u));
          break;
        case 'add':
          out = emitAdd(g, v(op.a), v(op.b));
          break;
        case 'attention': {
          const { layer: l, nKVHeads: G, headDim: d } = op.p;
          const heads = Array.from({ length: G }, (_, h) => h);
          const kPast = heads.map((h) => g.input(`kp${l}_${h}`, DT.FLOAT, ['lp', d]));
          const vPast = heads.map((h) => g.input(`vp${l}_${h}`, DT.FLOAT, ['lp', d]));
          const kNew = heads.map((h) => `kn${l}_${h}`);
          const vNew = heads.map((h) => `vn${l}_${h}`);
          out = emitAttention(g, { q: v(op.q), k: v(op.k), v: v(op.v), nHeads: op.p.nHeads, nKVHeads: G, headDim: d, scale: op.p.scale, kPast, vPast, mask: 'cmask', pastMask: 'pmask', f16: this.kvPrecision === 'f16', kNew, vNew });
          for (const nm of [...kNew, ...vNew]) g.output(nm, DT.FLOAT, ['n', d]);
          break;
        }
      }
      value.set(a, out);
    });
    const outputs = order.map((a, i) => {
      const name = value.get(a)!;
      if (declared[i]) g.output(name, DT.FLOAT, ['n', a.cols]);
      return name;
    });
    const model = g.build();
    packed.clear();
    const graph = new Graph(model, { ...this.session, externalData: g.externalData });
    for (const w of owned) {
      w.owner = sig;
      // onnxruntime holds the matrix now. An embedding table stays on the host for `embed`
      // (tied output: llama.cpp reads one copy for both; we keep its GGUF blocks, see README).
      if (w.raw) this.residentBytes += w.raw.byteLength;
    }
    const seg = { graph, outputs };
    this.segments.set(sig, seg);
    this.stats.segments++;
    this.stats.compileMs += performance.now() - t0;
    return seg;
  }
}

const NO_PAST = Float32Array.of(-Infinity);
const HAS_PAST = Float32Array.of(0);
const masks = new Map<number, Float32Array>();
/** [n, n]: 0 on and below the diagonal, −∞ above (row i sees new keys 0..i). */
function causalMask(n: number): Float32Array {
  let m = masks.get(n);
  if (!m) {
    m = new Float32Array(n * n);
    for (let i = 0; i < n; i++) m.fill(-Infinity, i * n + i + 1, (i + 1) * n);
    if (n <= 1024) masks.set(n, m);
  }
  return m;
}

export function createCpuBackend(opts: CpuBackendOptions = {}): CpuBackend {
  return new CpuBackend(opts);
}
