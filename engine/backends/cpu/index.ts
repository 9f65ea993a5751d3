// The CPU backend: onnxruntime-node's CPU execution provider (MLAS) running graphs built here from the
// GGUF weights. Design, from the measurements in README.md:
//
// - Ops are recorded lazily. Everything between two points where the host needs values (attention,
//   selectRows, read) runs as ONE onnxruntime graph — a "segment": for a decode step that is one run
//   per layer (o-proj, residual, norm, FFN, residual, next layer's norm, q/k/v, q/k norms, RoPE) plus
//   one attention run, instead of ~14 small runs (each run costs ~8.5 µs here).
// - A segment's graph is cached by its structure (ops, wiring, weights); rows are a symbolic dim, so
//   every step of every length reuses it. Weights are the initializers of the one segment that uses
//   them, and the backend drops its own copy once onnxruntime holds them (MatMulNBits prepacks them).
// - Liveness comes from `release`: a segment outputs only the activations the caller still holds.

import type { GGUFTensorInfo } from '../../gguf/reader.js';
import { dequantize, dequantizeInto } from '../../gguf/quant.js';
import { TYPE_TRAITS, typeName } from '../../gguf/types.js';
import type { Act, AttentionParams, Backend, BackendInfo, KVCache, KVCacheOptions, RopeConfig, SeqSlice, Weight } from '../../model/backend.js';
import { CpuAttention } from '../../attention/cpu-attention.js';
import { CpuKVCache, type KVPrecision } from './kv.js';
import { DT, GraphBuilder } from './onnx.js';
import { ACCURACY_INT8, emitAdd, emitMatmul, emitRmsNorm, emitRope, emitSiluMul } from './ops.js';
import { defaultThreads, f32Tensor, Graph, ort, type SessionConfig } from './ort.js';
import { canPack, packedBytes, packMatrix, supportedTypes, type Precision } from './weights.js';
import { cpuDeviceName } from './doctor.js';

export interface CpuBackendOptions {
  /** Intra-op threads (default: the machine's cores; env REPOKV_CPU_THREADS overrides the default). */
  threads?: number;
  /** 'int8' (default): quantized weights through MatMulNBits, int8 activations. 'f32': exact f32 products. */
  precision?: Precision;
  /** KV cache values: 'f16' (default, as llama.cpp) or 'f32'. */
  kv?: KVPrecision;
  /** Largest row count per segment run; longer batches run in slices (bounds temporaries). */
  maxRows?: number;
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
  | { kind: 'add'; a: CpuAct; b: CpuAct };

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
  private readonly session: SessionConfig;
  private readonly attn: CpuAttention;
  private pending: CpuAct[] = [];
  private segments = new Map<string, Segment>();
  private ropeTables = new WeakMap<RopeConfig, RopeTable>();
  private ids = new WeakMap<object, number>();
  private nextId = 1;
  private weights: CpuWeight[] = [];
  /** Bytes of weights handed to onnxruntime (packed), and of embedding tables kept on the host. */
  residentBytes = 0;
  /** Segment graphs compiled and runs made (for benchmarks and tests). */
  stats = { segments: 0, runs: 0, attentionRuns: 0, compileMs: 0 };

  constructor(opts: CpuBackendOptions = {}) {
    this.threads = opts.threads ?? defaultThreads();
    this.precision = opts.precision ?? 'int8';
    this.kvPrecision = opts.kv ?? 'f16';
    this.maxRows = opts.maxRows ?? 1024;
    this.session = { threads: this.threads };
    this.attn = new CpuAttention(this.session);
    const o = ort();
    this.info = {
      name: 'cpu',
      device: `${cpuDeviceName()} (${this.threads} thread${this.threads === 1 ? '' : 's'})`,
      details: { onnxruntime: o.version, threads: this.threads, precision: this.precision, kv: this.kvPrecision },
    };
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
    this.flush([Q, K, V]);
    const out = new Float32Array(Q.rows * Q.cols);
    for (const s of seqs) {
      const kv = s.kv as CpuKVCache;
      kv.write(p.layer, K.data!, V.data!, s.row, s.n, s.pos);
      const r = this.attn.run({
        q: Q.data!.subarray(s.row * Q.cols, (s.row + s.n) * Q.cols),
        nQ: s.n,
        qPos0: s.pos,
        k: kv.keys(p.layer),
        v: kv.values(p.layer),
        nK: s.pos + s.n,
        nHeads: p.nHeads,
        nKVHeads: p.nKVHeads,
        headDim: p.headDim,
        scale: p.scale,
      });
      this.stats.attentionRuns++;
      out.set(r.out, s.row * Q.cols);
    }
    return new CpuAct(Q.rows, Q.cols, out, null);
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
    // Ops nobody read are dead (e.g. the last layer's FFN in a prefill chunk that wants no logits).
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
    this.attn.dispose();
  }

  /** Computes `targets` and every pending activation still held by the caller, as one graph. */
  private flush(targets: CpuAct[]): void {
    for (const t of targets) if (!t.data && !t.op) throw new Error('an activation was used after release');
    if (targets.every((t) => t.data)) return;
    // What must be computed: the targets, everything the caller still holds, and their inputs.
    const need = new Set<CpuAct>();
    const stack = [...targets, ...this.pending.filter((a) => !a.released)];
    while (stack.length) {
      const a = stack.pop()!;
      if (a.data || need.has(a)) continue;
      need.add(a);
      for (const i of inputsOf(a.op!)) stack.push(i);
    }
    const order = this.pending.filter((a) => need.has(a));
    for (const a of this.pending) {
      if (need.has(a)) continue;
      for (const i of inputsOf(a.op!)) i.uses--; // dead: never computed
      a.op = null;
    }
    this.pending = [];
    const wanted = new Set<CpuAct>([...targets, ...order.filter((a) => !a.released)]);
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
      }
    }
    const sig = parts.join(';');
    let seg = this.segments.get(sig);
    if (!seg) seg = this.compile(sig, order, inputs, inputIndex, ropeOf, ropeGroups.length);

    const rows = order[0].rows;
    for (const a of order) if (a.rows !== rows) throw new Error('ops of different row counts in one segment');
    const outs = new Map<CpuAct, Float32Array>();
    for (const a of wanted) if (index.has(a)) outs.set(a, new Float32Array(a.rows * a.cols));
    for (let r0 = 0; r0 < rows; r0 += this.maxRows) {
      const r1 = Math.min(rows, r0 + this.maxRows);
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
      const fetches: Record<string, ReturnType<typeof f32Tensor>> = {};
      for (const [a, buf] of outs) fetches[seg.outputs[index.get(a)!]] = f32Tensor(buf.subarray(r0 * a.cols, r1 * a.cols), [n, a.cols]);
      seg.graph.run(feeds, fetches);
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

  private compile(sig: string, order: CpuAct[], inputs: CpuAct[], inputIndex: Map<CpuAct, number>, ropeOf: number[], nRope: number): Segment {
    const t0 = performance.now();
    const g = new GraphBuilder('segment');
    inputs.forEach((x, i) => g.input(`x${i}`, DT.FLOAT, ['n', x.cols]));
    for (let i = 0; i < nRope; i++) {
      const half = order.find((a, j) => a.op!.kind === 'rope' && ropeOf[j] === i)!.op as Extract<OpRec, { kind: 'rope' }>;
      g.input(`cos${i}`, DT.FLOAT, ['n', half.cfg.dims / 2]);
      g.input(`sin${i}`, DT.FLOAT, ['n', half.cfg.dims / 2]);
    }
    const value = new Map<CpuAct, string>();
    const v = (x: CpuAct): string => value.get(x) ?? `x${inputIndex.get(x)}`;
    const owned: CpuWeight[] = [];
    order.forEach((a, j) => {
      const op = a.op!;
      let out: string;
      switch (op.kind) {
        case 'rmsnorm':
          out = emitRmsNorm(g, v(op.x), a.cols, op.w.vec!, op.eps, op.group);
          break;
        case 'matmul': {
          const w = op.w;
          if (w.owner !== null && w.owner !== sig) {
            throw new Error(
              `CPU backend: weight ${w.name} is already compiled into another fused segment; ` + 'a weight must be used by the same sequence of ops in every step (engine/backends/cpu/README.md)',
            );
          }
          if (!w.raw) throw new Error(`CPU backend: weight ${w.name} is no longer on the host`);
          const packed = packMatrix(w.info, w.raw, this.precision);
          this.residentBytes += packedBytes(packed);
          out = emitMatmul(g, v(op.x), packed, op.bias?.vec ?? undefined, ACCURACY_INT8);
          owned.push(w);
          break;
        }
        case 'rope':
          out = emitRope(g, v(op.x), `cos${ropeOf[j]}`, `sin${ropeOf[j]}`, op.nHeads, op.headDim, op.cfg.dims, op.cfg.kind);
          break;
        case 'silumul':
          out = emitSiluMul(g, v(op.g), v(op.u));
          break;
        case 'add':
          out = emitAdd(g, v(op.a), v(op.b));
          break;
      }
      value.set(a, out);
    });
    const outputs = order.map((a) => {
      const name = value.get(a)!;
      g.output(name, DT.FLOAT, ['n', a.cols]);
      return name;
    });
    const graph = new Graph(g.build(), this.session);
    for (const w of owned) {
      w.owner = sig;
      // onnxruntime holds the matrix now. An embedding table stays on the host for `embed`
      // (tied output: llama.cpp reads one copy for both; we keep its GGUF blocks, see README).
      if (w.name !== 'token_embd.weight') w.raw = null;
      else this.residentBytes += w.raw?.byteLength ?? 0;
    }
    const seg = { graph, outputs };
    this.segments.set(sig, seg);
    this.stats.segments++;
    this.stats.compileMs += performance.now() - t0;
    return seg;
  }
}

export function createCpuBackend(opts: CpuBackendOptions = {}): CpuBackend {
  return new CpuBackend(opts);
}
