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
import { isPagedKV, type Act, type AttentionParams, type Backend, type BackendInfo, type KVCache, type KVCacheOptions, type KVPool, type KVPoolOptions, type RopeConfig, type SeqSlice, type SparseStats, type Weight, SPARSE_MIN_ROWS } from '../../model/backend.js';
import { HostAttention } from './host-attention.js';
import { CpuKVCache, CpuKVPool, kvRuns, kvStoreOf, kvValueBytes, newKVArray, type KVArray, type KVPrecision, type KVRun, type KVStore } from './kv.js';
import { DT, GraphBuilder } from './onnx.js';
import { ACCURACY_INT8, emitAdd, emitAttention, emitMatmul, emitRmsNorm, emitRope, emitSiluMul } from './ops.js';
import { defaultThreads, f32Tensor, Graph, i64Tensor, kvTensor, ort, type SessionConfig } from './ort.js';
import { canPack, concatMatrices, estimatePackedBytes, packedBytes, packMatrix, supportedTypes, type PackedMatrix, type Precision } from './weights.js';
import { cpuDeviceName } from './doctor.js';
import { availableMemory } from '../../memory.js';

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
  /**
   * Batched steps: sequences whose cached keys are not one shared run are gathered (copied) for the
   * step; up to this many bytes per run are gathered rather than running the weights once more for
   * another group (default: ⅛ of the resident weights, at least 8 MiB).
   */
  gatherBytes?: number;
  /**
   * Largest weight bytes per graph: a step whose weights exceed it runs as several graphs (cut at
   * sublayer starts). Compiling a graph holds its weights about twice (ours packed, onnxruntime's
   * prepacked) for a moment, so this bounds the load-time peak at about the resident weights plus
   * one graph's share; each extra graph costs one more thread-pool wake-up per step (README).
   * Default: one graph per step when twice the weights fit in the memory available at the first
   * compile, else graphs of a fifth of that memory (env REPOKV_CPU_GRAPH_MB overrides).
   */
  graphBytes?: number;
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
  /** Bytes of the packed matrix once a graph holds it. */
  packedBytes?: number;
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

/** A sequence's rows in an attention run: `n` rows from batch row `row`, after `past` cached tokens. */
interface Member {
  kv: KVCache;
  row: number;
  n: number;
  past: number;
}

/** Where a run's cached keys come from (emitAttention's parts A and B). */
interface KVPlan {
  /** Part A: one run of rows of a block that every member attends to entirely (null: a placeholder). */
  a: { store: KVStore; block: number; row: number; n: number } | null;
  /** Per member: its store and other cached tokens, gathered into part B at columns [at, at + n). */
  b: { store: KVStore; runs: KVRun[]; at: number; n: number }[];
  nb: number;
}

/** One run of the step graph: rows [r0, r1) of the batch, and with attention its sequences. */
interface AttRun {
  r0: number;
  r1: number;
  members: Member[];
  plan: KVPlan | null;
}

/**
 * Parts A and B for a run. One sequence: A is its longest run of consecutive rows (all of its past,
 * usually), B the rest. Several: A is their common prefix when they share its pages (sessions on one
 * repository prefix), B everything else, each sequence seeing only its own columns of B.
 */
function planKV(members: Member[]): KVPlan {
  if (members.length === 1) {
    const store = kvStoreOf(members[0].kv)!;
    const m = members[0];
    const runs = kvRuns(m.kv, 0, m.past);
    let best = -1;
    runs.forEach((r, i) => {
      if (best < 0 || r.n > runs[best].n) best = i;
    });
    const rest = runs.filter((_, i) => i !== best);
    const nb = rest.reduce((t, r) => t + r.n, 0);
    const a = best >= 0 ? { store, block: runs[best].block, row: runs[best].row, n: runs[best].n } : null;
    return { a, b: [{ store, runs: rest, at: 0, n: nb }], nb };
  }
  const stores = members.map((m) => kvStoreOf(m.kv)!);
  const firsts = members.map((m) => (m.past > 0 ? kvRuns(m.kv, 0, m.past)[0] : null));
  const f0 = firsts[0];
  const a =
    f0 && firsts.every((f, i) => f && stores[i] === stores[0] && f.block === f0.block && f.row === f0.row)
      ? { store: stores[0], block: f0.block, row: f0.row, n: Math.min(...firsts.map((f) => f!.n)) }
      : null;
  let at = 0;
  const b = members.map((m, i) => {
    const runs = kvRuns(m.kv, a?.n ?? 0, m.past);
    const n = runs.reduce((t, r) => t + r.n, 0);
    const part = { store: stores[i], runs, at, n };
    at += n;
    return part;
  });
  return { a, b, nb: at };
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
  private kvPrecision: KVPrecision;
  private readonly maxRows: number;
  private readonly scoreFloats: number;
  private readonly gatherBytesOpt: number | undefined;
  private graphBytesOpt: number | undefined;
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
  stats = { segments: 0, runs: 0, compileMs: 0, runMs: 0, attentionRunMs: 0 };
  /** Honours AttentionParams.sparse once `enableSparse()` has been called (host-attention.ts). */
  readonly sparse = true;
  sparseStats: SparseStats = { calls: 0, keptEntries: 0, causalEntries: 0, estimateMs: 0, attentionMs: 0 };
  /** Attention ops run outside the step graphs (sparse prefill enabled). */
  private splitAttention = false;
  private hostAttention: HostAttention | null = null;

  constructor(opts: CpuBackendOptions = {}) {
    this.threads = opts.threads ?? defaultThreads();
    this.precision = opts.precision ?? 'int8';
    this.kvPrecision = opts.kv ?? 'f16';
    this.maxRows = opts.maxRows ?? 1024;
    this.scoreFloats = opts.scoreFloats ?? 1 << 25;
    this.gatherBytesOpt = opts.gatherBytes;
    this.graphBytesOpt = opts.graphBytes ?? (process.env.REPOKV_CPU_GRAPH_MB ? Number(process.env.REPOKV_CPU_GRAPH_MB) * 2 ** 20 : undefined);
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

  /**
   * A page pool in host memory, read by attention through the page table (kv.ts). Its dtype becomes
   * the backend's KV type ('f16': halves, the engine's default) — one type for every graph, since a
   * weight lives in one graph only.
   */
  createKVPool(opts: KVPoolOptions): KVPool {
    if (opts.dtype !== this.kvPrecision) {
      if (this.segments.size > 0) throw new Error(`the CPU backend already runs with ${this.kvPrecision} KV; a ${opts.dtype} pool would need its graphs again`);
      this.kvPrecision = opts.dtype;
      this.info.details.kv = opts.dtype;
    }
    return new CpuKVPool(opts);
  }

  /**
   * Keeps every attention op out of the step graphs from now on: each step runs as the graphs between
   * its attention ops, and each attention op as its own small graph (dense; no weights) or on the host
   * (sparse, host-attention.ts). Must come before the first step: a weight lives in one graph, so the
   * cut points cannot change once graphs hold the weights. Costs a graph run per layer per step
   * (measured in README.md).
   */
  enableSparse(): void {
    if (this.splitAttention) return;
    if (this.segments.size > 0) throw new Error('enableSparse() must be called before the CPU backend runs its first step');
    this.splitAttention = true;
    this.info.details.sparse = 'attention outside the step graphs';
  }

  /** The host path of sparse attention (created on first use); `recall` there samples attention recall. */
  get host(): HostAttention {
    return (this.hostAttention ??= new HostAttention(this.session));
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
      const store = kvStoreOf(s.kv);
      if (!store) {
        throw new Error(
          isPagedKV(s.kv)
            ? 'the CPU backend pages KV through its own pool (createKVPool); use kv.paging "auto", not "host"'
            : 'the CPU backend attends over its own KV caches (createKV or createKVPool)',
        );
      }
      if (store.precision !== this.kvPrecision) throw new Error(`a ${store.precision} KV cache on a CPU backend running ${this.kvPrecision} KV`);
      if (store.nKVHeads !== G || store.headDim !== d) throw new Error(`attention: the KV cache has ${store.nKVHeads}×${store.headDim} per row, the layer ${G}×${d}`);
      if (s.pos + s.n > s.kv.capacity) throw new Error(`sequence needs ${s.pos + s.n} tokens of KV, capacity is ${s.kv.capacity}`);
      if (isPagedKV(s.kv) && s.kv.pageTable.length * s.kv.pageSize < s.pos + s.n) {
        throw new Error(`sequence needs ${s.pos + s.n} tokens of KV but its page table covers ${s.kv.pageTable.length * s.kv.pageSize}`);
      }
      if (s.row !== rows) throw new Error('attention: sequences must cover the batch rows in order');
      rows += s.n;
    }
    if (rows !== Q.rows) throw new Error(`attention: sequences cover ${rows} rows of ${Q.rows}`);
    if ((p.sparse || seqs.some((s) => s.retrieval)) && !this.splitAttention) throw new Error('sparse or retrieval attention on the CPU backend needs enableSparse() before the first step');
    if (p.sparse && p.sparse.length !== H) throw new Error(`attention: ${p.sparse.length} sparse patterns for ${H} heads`);
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
    this.hostAttention?.dispose();
    this.hostAttention = null;
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
    const parts = this.partition(order);
    parts.forEach((part, k) => {
      // A part's values that later parts read leave its graph too (then feed the next one).
      const inPart = new Set(part);
      const w = new Set([...wanted].filter((a) => inPart.has(a)));
      for (const later of parts.slice(k + 1)) for (const b of later) for (const i of inputsOf(b.op!)) if (inPart.has(i)) w.add(i);
      const op = part[0].op!;
      if (part.length === 1 && op.kind === 'attention' && ((op.p.sparse && op.seqs.some((s) => s.n >= SPARSE_MIN_ROWS)) || op.seqs.some((s) => s.retrieval))) this.runHostAttention(part[0]);
      else this.runSegment(part, w);
    });
  }

  /**
   * Splits a step's ops into graphs of at most `graphBytes` of weights each, cutting only before a
   * norm (the start of a sublayer, so q/k/v and gate/up stay merged). The cut points depend only on
   * the ops, so every step of the same shape gets the same graphs and a weight lives in one graph.
   */
  /** The weight budget per graph (decided at the first compile, from the memory then available). */
  private get graphBytes(): number {
    if (this.graphBytesOpt === undefined) {
      let pending = 0;
      for (const w of this.weights) if (w.raw && w.owner === null) pending += estimatePackedBytes(w.info, this.precision);
      const free = availableMemory();
      this.graphBytesOpt = 2 * pending <= free ? Infinity : Math.max(64 * 2 ** 20, Math.floor(free / 5));
      this.info.details.graphBytes = this.graphBytesOpt;
    }
    return this.graphBytesOpt;
  }

  private partition(order: CpuAct[]): CpuAct[][] {
    if (!this.splitAttention && !Number.isFinite(this.graphBytes)) return [order];
    const weightBytes = (a: CpuAct) => {
      const op = a.op!;
      return op.kind === 'matmul' ? (op.w.packedBytes ?? estimatePackedBytes(op.w.info, this.precision)) : 0;
    };
    const parts: CpuAct[][] = [[]];
    let bytes = 0;
    for (let i = 0; i < order.length; i++) {
      if (this.splitAttention && order[i].op!.kind === 'attention') {
        // Its own part (see enableSparse); the next op starts a new one.
        if (parts[parts.length - 1].length) parts.push([]);
        parts[parts.length - 1].push(order[i]);
        parts.push([]);
        bytes = 0;
        continue;
      }
      if (order[i].op!.kind === 'rmsnorm' && bytes > 0) {
        let ahead = 0; // this sublayer's weights (up to the next norm)
        for (let j = i + 1; j < order.length && order[j].op!.kind !== 'rmsnorm'; j++) ahead += weightBytes(order[j]);
        if (bytes + ahead > this.graphBytes) {
          parts.push([]);
          bytes = 0;
        }
      }
      bytes += weightBytes(order[i]);
      parts[parts.length - 1].push(order[i]);
    }
    return parts.filter((p) => p.length > 0);
  }

  /** A sparse attention op on the host (host-attention.ts): writes its K/V rows, sets its output. */
  private runHostAttention(a: CpuAct): void {
    const op = a.op as Extract<OpRec, { kind: 'attention' }>;
    a.data = this.host.run(op.q.data!, op.k.data!, op.v.data!, a.rows, op.seqs, op.p, this.sparseStats);
    for (const i of inputsOf(op)) {
      i.uses--;
      if (i.released && i.uses === 0) i.data = null;
    }
    a.op = null;
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
    const declared = order.map((a) => !consumed.has(a) || !a.released || wanted.has(a));
    for (const a of wanted) if (index.has(a) && !declared[index.get(a)!]) throw new Error('internal: a wanted activation is not a graph output');
    const sig = `${this.kvPrecision};` + parts.join(';') + '|' + declared.map((d) => (d ? 1 : 0)).join('');
    let seg = this.segments.get(sig);
    if (!seg) seg = this.compile(sig, order, inputs, inputIndex, ropeOf, ropeGroups.length, declared);

    const rows = order[0].rows;
    for (const a of order) if (a.rows !== rows) throw new Error('ops of different row counts in one segment');
    const outs = new Map<CpuAct, Float32Array>();
    for (const a of wanted) if (index.has(a)) outs.set(a, new Float32Array(a.rows * a.cols));
    const atts = attIdx.map((i) => order[i].op as Extract<OpRec, { kind: 'attention' }>);
    // Runs: without attention, slices of maxRows rows. With attention, groups of sequences whose rows
    // run together (one weight pass: a batch of decoding sequences) and, within a long sequence, as
    // many rows as the score budget allows (heads × rows × keys floats).
    let runs: AttRun[];
    if (atts.length) {
      const seqs = atts[0].seqs;
      for (const t of atts) {
        if (t.seqs.length !== seqs.length || t.seqs.some((x, i) => x.kv !== seqs[i].kv || x.row !== seqs[i].row || x.n !== seqs[i].n || x.pos !== seqs[i].pos)) {
          throw new Error('attention ops of one step must share its sequences');
        }
        if (t.p.nKVHeads !== atts[0].p.nKVHeads || t.p.headDim !== atts[0].p.headDim || t.p.nHeads !== atts[0].p.nHeads) throw new Error('attention ops of one step must share their head shapes');
      }
      runs = this.planRuns(seqs, atts[0].p, atts.length);
    } else {
      runs = [];
      for (let r0 = 0; r0 < rows; r0 += this.maxRows) runs.push({ r0, r1: Math.min(rows, r0 + this.maxRows), members: [], plan: null });
    }
    for (const run of runs) {
      const { r0, r1 } = run;
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
      const newRows = run.plan ? this.attentionFeeds(run, atts, feeds, fetches) : null;
      // Nothing leaves this graph (the tail of a prefill chunk whose logits are not wanted, in a step
      // split into several graphs): nothing to run.
      if (Object.keys(fetches).length === 0) continue;
      const tr = performance.now();
      seg.graph.run(feeds, fetches);
      this.stats.runMs += performance.now() - tr;
      // A lone attention op (split mode, see enableSparse): dense attention time, for `bench sparse`.
      if (order.length === 1 && atts.length === 1) this.stats.attentionRunMs += performance.now() - tr;
      this.stats.runs++;
      if (newRows) this.storeNewRows(run, atts, newRows);
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

  /** Groups a step's sequences into graph runs (see runSegment). */
  private planRuns(seqs: SeqSlice[], p: AttentionParams, nLayers: number): AttRun[] {
    const H = p.nHeads;
    const gatherTokens = (this.gatherBytesOpt ?? Math.max(8 * 2 ** 20, this.residentBytes / 8)) / (2 * p.nKVHeads * p.headDim * kvValueBytes(this.kvPrecision) * nLayers);
    const out: AttRun[] = [];
    let open: AttRun | null = null;
    for (const sq of seqs) {
      const pieces: Member[] = [];
      for (let r0 = sq.row; r0 < sq.row + sq.n; ) {
        const past = sq.pos + (r0 - sq.row);
        const fit = Math.floor((-past + Math.sqrt(past * past + (4 * this.scoreFloats) / H)) / 2);
        const r1 = Math.min(sq.row + sq.n, r0 + Math.max(16, Math.min(this.maxRows, fit)));
        pieces.push({ kv: sq.kv, row: r0, n: r1 - r0, past });
        r0 = r1;
      }
      if (pieces.length === 1 && open) {
        // Join the open group if the rows, the scores and the gathered keys stay within budget.
        const members = [...open.members, pieces[0]];
        const plan = planKV(members);
        const rows = open.r1 - open.r0 + pieces[0].n;
        if (rows <= this.maxRows && H * rows * ((plan.a?.n ?? 1) + Math.max(1, plan.nb) + rows) <= this.scoreFloats && plan.nb <= gatherTokens) {
          open.members = members;
          open.r1 += pieces[0].n;
          open.plan = plan;
          continue;
        }
      }
      for (const m of pieces) out.push({ r0: m.row, r1: m.row + m.n, members: [m], plan: planKV([m]) });
      open = pieces.length === 1 ? out[out.length - 1] : null;
    }
    return out;
  }

  private scratchBufs = new Map<string, KVArray>();
  /** A reusable buffer of at least n values of the KV type (contents undefined). */
  private scratch(name: string, n: number): KVArray {
    const key = `${name}/${this.kvPrecision}`;
    let b = this.scratchBufs.get(key);
    if (!b || b.length < n) {
      b = newKVArray(this.kvPrecision, Math.max(n, Math.ceil((b?.length ?? 0) * 1.5)));
      this.scratchBufs.set(key, b);
    }
    return b.subarray(0, n);
  }
  private zeroBufs = new Map<string, KVArray>();
  /** n zeros of the KV type (never written: placeholders). */
  private zeros(n: number): KVArray {
    const key = `${this.kvPrecision}/${n}`;
    let z = this.zeroBufs.get(key);
    if (!z) {
      z = newKVArray(this.kvPrecision, n);
      this.zeroBufs.set(key, z);
    }
    return z;
  }

  /**
   * Feeds of one run's attention: part A as per-head views of the cache (no copy), part B gathered
   * into one [2·layers·G, nb, d] tensor, the masks, and the buffer the new K/V rows come back in.
   */
  private attentionFeeds(run: AttRun, atts: Extract<OpRec, { kind: 'attention' }>[], feeds: Record<string, ReturnType<typeof f32Tensor>>, fetches: Record<string, ReturnType<typeof f32Tensor>>): KVArray {
    const plan = run.plan!;
    const { a } = plan;
    const n = run.r1 - run.r0;
    const { nKVHeads: G, headDim: d } = atts[0].p;
    for (const t of atts) {
      const l = t.p.layer;
      for (let h = 0; h < G; h++) {
        if (a) {
          const o = (h * a.store.blockRows(a.block) + a.row) * d;
          feeds[`kA${l}_${h}`] = kvTensor(a.store.array(a.block, l, 0).subarray(o, o + a.n * d), [a.n, d]);
          feeds[`vA${l}_${h}`] = kvTensor(a.store.array(a.block, l, 1).subarray(o, o + a.n * d), [a.n, d]);
        } else {
          feeds[`kA${l}_${h}`] = kvTensor(this.zeros(d), [1, d]);
          feeds[`vA${l}_${h}`] = kvTensor(this.zeros(d), [1, d]);
        }
      }
    }
    feeds.am = f32Tensor(a ? HAS_PAST : NO_PAST, [1]);
    const nB = 2 * atts.length * G;
    const nb = plan.nb;
    if (nb === 0) {
      for (const t of atts) {
        for (let h = 0; h < G; h++) {
          feeds[`kB${t.p.layer}_${h}`] = kvTensor(this.zeros(d), [1, d]);
          feeds[`vB${t.p.layer}_${h}`] = kvTensor(this.zeros(d), [1, d]);
        }
      }
      feeds.bm = f32Tensor(filled(-Infinity, n), [n, 1]);
    } else {
      const B = this.scratch('b', nB * nb * d) as Float32Array;
      atts.forEach((t, i) => {
        for (const which of [0, 1] as const) {
          for (let h = 0; h < G; h++) {
            const dst = ((i * 2 + which) * G + h) * nb * d;
            for (const m of plan.b) {
              let at = m.at;
              for (const r of m.runs) {
                const o = (h * m.store.blockRows(r.block) + r.row) * d;
                B.set(m.store.array(r.block, t.p.layer, which).subarray(o, o + r.n * d) as Float32Array, dst + at * d);
                at += r.n;
              }
            }
          }
        }
      });
      atts.forEach((t, i) => {
        for (let h = 0; h < G; h++) {
          const at = (which: number) => ((i * 2 + which) * G + h) * nb * d;
          feeds[`kB${t.p.layer}_${h}`] = kvTensor(B.subarray(at(0), at(0) + nb * d), [nb, d]);
          feeds[`vB${t.p.layer}_${h}`] = kvTensor(B.subarray(at(1), at(1) + nb * d), [nb, d]);
        }
      });
      if (run.members.length === 1) feeds.bm = f32Tensor(filled(0, n * nb), [n, nb]);
      else {
        const bm = new Float32Array(n * nb).fill(-Infinity);
        run.members.forEach((m, j) => {
          for (let r = m.row - run.r0; r < m.row - run.r0 + m.n; r++) bm.fill(0, r * nb + plan.b[j].at, r * nb + plan.b[j].at + plan.b[j].n);
        });
        feeds.bm = f32Tensor(bm, [n, nb]);
      }
    }
    feeds.cm = f32Tensor(run.members.length === 1 ? causalMask(n) : blockCausalMask(run), [n, n]);
    const out = this.scratch('n', nB * n * d);
    fetches.kvn = kvTensor(out, [nB, n, d]);
    return out;
  }

  /** Writes a run's new K/V rows ([2·layers·G, n, d]) through each sequence's runs into its cache. */
  private storeNewRows(run: AttRun, atts: Extract<OpRec, { kind: 'attention' }>[], out: KVArray): void {
    const n = run.r1 - run.r0;
    const { nKVHeads: G, headDim: d } = atts[0].p;
    for (const m of run.members) {
      const store = kvStoreOf(m.kv)!;
      const runs = kvRuns(m.kv, m.past, m.past + m.n);
      atts.forEach((t, i) => {
        for (const which of [0, 1] as const) {
          for (let h = 0; h < G; h++) {
            const src = ((i * 2 + which) * G + h) * n * d + (m.row - run.r0) * d;
            for (const r of runs) {
              const o = (h * store.blockRows(r.block) + r.row) * d;
              const s0 = src + (r.t0 - m.past) * d;
              (store.array(r.block, t.p.layer, which) as Float32Array).set(out.subarray(s0, s0 + r.n * d) as Float32Array, o);
            }
          }
        }
      });
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
    const attOps = order.filter((a) => a.op!.kind === 'attention').map((a) => a.op as Extract<OpRec, { kind: 'attention' }>);
    const half = this.kvPrecision === 'f16';
    const KT = half ? DT.FLOAT16 : DT.FLOAT;
    const newKV: string[] = [];
    if (attOps.length) {
      g.input('cm', DT.FLOAT, ['n', 'n']);
      g.input('am', DT.FLOAT, [1]);
      // [n, nb] exactly (not a broadcastable [1, 1]): with symbolic dims onnxruntime can infer every
      // score shape, and its planner then reuses the big score buffers from layer to layer (an
      // unknown mask shape measured 2.7× slower at a 512-row prefill: every score tensor freshly
      // allocated, page faults without the memory arena).
      g.input('bm', DT.FLOAT, ['n', 'lb']);
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
      w.packedBytes = packedBytes(m);
      this.residentBytes += w.packedBytes;
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
          const cast = (x: string) => (half ? g.op('Cast', [x], { to: DT.FLOAT }) : x);
          const kA = heads.map((h) => cast(g.input(`kA${l}_${h}`, KT, ['la', d])));
          const vA = heads.map((h) => cast(g.input(`vA${l}_${h}`, KT, ['la', d])));
          // Part B: the host gathers this layer's other cached keys/values per head, [nb, d].
          const kB = heads.map((h) => cast(g.input(`kB${l}_${h}`, KT, ['lb', d])));
          const vB = heads.map((h) => cast(g.input(`vB${l}_${h}`, KT, ['lb', d])));
          const r = emitAttention(g, {
            q: v(op.q),
            k: v(op.k),
            v: v(op.v),
            nHeads: op.p.nHeads,
            nKVHeads: G,
            headDim: d,
            scale: op.p.scale,
            kA,
            vA,
            kB,
            vB,
            aMask: 'am',
            bMask: 'bm',
            nMask: 'cm',
            f16: half,
          });
          newKV.push(r.kNew, r.vNew);
          out = r.out;
          break;
        }
      }
      value.set(a, out);
    });
    if (attOps.length) {
      const { nKVHeads: G, headDim: d } = attOps[0].p;
      g.node('Concat', newKV, { axis: 0 }, { outputs: ['kvn'] });
      g.output('kvn', KT, [2 * attOps.length * G, 'n', d]);
    }
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

const fills = new Map<number, Float32Array>();
/** n copies of v (0 or −∞), from a shared buffer that only grows (never written by a graph). */
function filled(v: number, n: number): Float32Array {
  let b = fills.get(v);
  if (!b || b.length < n) {
    b = new Float32Array(Math.max(n, 2 * (b?.length ?? 0), 1024)).fill(v);
    fills.set(v, b);
  }
  return b.subarray(0, n);
}

const NO_PAST = Float32Array.of(-Infinity);
const HAS_PAST = Float32Array.of(0);
/** [n, n] for a batch of sequences: causal within each, −∞ across them. */
function blockCausalMask(run: AttRun): Float32Array {
  const n = run.r1 - run.r0;
  const m = new Float32Array(n * n).fill(-Infinity);
  for (const s of run.members) {
    const o = s.row - run.r0;
    for (let i = 0; i < s.n; i++) m.fill(0, (o + i) * n + o, (o + i) * n + o + i + 1);
  }
  return m;
}

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
