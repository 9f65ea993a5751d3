// The WebGPU backend: the Backend interface (engine/model/backend.ts) on Dawn, every op a WGSL kernel
// from kernels/.
//
// Launch batching: all ops of a step are recorded into one command encoder and one compute pass; their
// parameters go into a uniform arena (one buffer, one slot per dispatch, written with a single
// writeBuffer just before the submit). Nothing is submitted until `read`, `endStep`, or a full arena.
// Activations come from a size-bucketed buffer pool: `release` returns a buffer at once (later
// dispatches in the same pass are ordered after the ones that used it), `endStep` returns the rest.
// Host data of a step (token ids, RoPE tables, row indices) goes into upload buffers that are only
// recycled at endStep, because a writeBuffer lands before the not-yet-submitted pass that reads it.
//
// KV: contiguous per-sequence caches (createKV: a K and a V buffer per layer), or the page pool the
// engine uses by default (createKVPool, kv-pool.ts): attention then writes and reads rows through a
// per-sequence page table. Token picking: argmax and sample run where the logits are (sample.wgsl).
// Sparse prefill (issue 8): a slice with AttentionParams.sparse and ≥ SPARSE_MIN_ROWS rows goes to
// sparse.ts after its kv_write (estimation, index and sparse flash recorded in the same pass).

import type { GGUFTensorInfo } from '../../gguf/reader.js';
import { GGMLType, typeName } from '../../gguf/types.js';
import { canDequantize, dequantize } from '../../gguf/quant.js';
import { UserError } from '../../errors.js';
import { ContiguousKVCache, isPagedKV, SPARSE_MIN_ROWS, type Act, type AttentionParams, type Backend, type BackendInfo, type KVCache, type KVCacheOptions, type KVPool, type KVPoolOptions, type RopeConfig, type SeqSlice, type SparseStats, type Weight } from '../../model/backend.js';
import { createGpuContext, limitsObject, type DeviceOptions, type GpuContext } from './device.js';
import { PipelineCache, type Defines } from './kernels.js';
import { ATTENTION_OTHER_BINDINGS, GpuKVPool, MAX_ARENAS, type KVPoolHost } from './kv-pool.js';
import { KERNEL_TYPES, rowLayout, rowsPerChunk } from './weights.js';
import { SparseRunner, type SparseHost, type SparseKV } from './sparse.js';

export interface WebGPUBackendOptions extends DeviceOptions {
  /** Caps the bytes of one storage binding below the device limit (tests force the split path). */
  maxBindingBytes?: number;
  /** matmul uses the matvec kernel up to this many rows (default 8, at most 8). */
  matvecMaxRows?: number;
  /** attention uses split-K decode for a sequence with at most this many new rows (default 4). */
  decodeMaxRows?: number;
  /** Keys per decode split (default 256). */
  decodeChunk?: number;
  /**
   * KV cache element type (default 'f32'). 'f16' halves its memory and bandwidth (packed in u32 words,
   * so shader-f16 is not needed); attention then differs from f32 by f16 rounding of K and V
   * (test/webgpu/attention.test.ts bounds it).
   */
  kvType?: 'f32' | 'f16';
  /** Sparse prefill: most bytes of one batch's scratch buffer (default 256 MiB; sparse.ts). */
  sparseScratchBytes?: number;
}

export class GpuAct implements Act {
  alive = true;
  constructor(
    readonly rows: number,
    readonly cols: number,
    readonly buf: GPUBuffer,
    readonly bytes: number,
  ) {}
}

interface Chunk {
  buf: GPUBuffer;
  row0: number;
  rows: number;
}

export class GpuWeight implements Weight {
  constructor(
    readonly name: string,
    readonly dims: readonly number[],
    /** Type as stored on the GPU (F32 when dequantized at upload). */
    readonly type: GGMLType,
    readonly k: number,
    readonly n: number,
    readonly rowWords: number,
    readonly chunks: Chunk[],
  ) {}
}

export class GpuKVCache extends ContiguousKVCache {
  readonly rowSize: number;
  constructor(
    opts: KVCacheOptions,
    readonly k: GPUBuffer[],
    readonly v: GPUBuffer[],
    readonly f16: boolean,
  ) {
    super(opts);
    this.rowSize = opts.nKVHeads * opts.headDim;
  }
  override free(): void {
    super.free();
    for (const b of [...this.k, ...this.v]) b.destroy();
    this.k.length = 0;
    this.v.length = 0;
  }
}

type Binding = GPUBuffer | GPUBufferBinding;

const f32view = new Float32Array(1);
const u32view = new Uint32Array(f32view.buffer);
/** The bits of an f32, for a uniform field declared f32. */
export function f32(x: number): number {
  f32view[0] = x;
  return u32view[0];
}

function mib(bytes: number): string {
  return bytes >= 2 ** 20 ? `${(bytes / 2 ** 20).toFixed(0)} MiB` : `${(bytes / 1024).toFixed(0)} KiB`;
}

/** Size buckets: powers of two split in quarters (≤ 25% waste), at least 4 KiB. */
function bucket(bytes: number): number {
  if (bytes <= 4096) return 4096;
  const step = 2 ** (Math.floor(Math.log2(bytes)) - 2);
  return Math.ceil(bytes / step) * step;
}

const ARENA_BYTES = 256 * 1024;
const PARAM_BYTES = 64; // every kernel's Params struct is ≤ 16 words

export class WebGPUBackend implements Backend, KVPoolHost {
  readonly info: BackendInfo;
  readonly device: GPUDevice;
  readonly pipelines: PipelineCache;
  /** Effective byte limit of one storage binding. */
  readonly maxBinding: number;
  private readonly usage: number;
  private readonly slot: number;
  private arena: GPUBuffer;
  private arenaHost = new Uint8Array(ARENA_BYTES);
  private arenaUsed = 0;
  private encoder?: GPUCommandEncoder;
  private pass?: GPUComputePassEncoder;
  private pool = new Map<number, GPUBuffer[]>();
  private stepActs = new Set<GpuAct>();
  private uploads: GPUBuffer[] = [];
  private uploadPool = new Map<number, GPUBuffer[]>();
  private readPool = new Map<number, GPUBuffer[]>();
  private ropeTables = new WeakMap<Int32Array, Map<RopeConfig, GPUBuffer>>();
  private dummy: GPUBuffer;
  private readonly matvecMaxRows: number;
  private readonly decodeMaxRows: number;
  private readonly decodeChunk: number;
  readonly kvF16: boolean;
  /** Dispatches recorded since creation (for tests and doctor). */
  dispatches = 0;
  submits = 0;
  // ---- sparse prefill (issue 8, sparse.ts) ----
  /** Honours AttentionParams.sparse: slices of ≥ SPARSE_MIN_ROWS rows run kernels/sparse_*.wgsl. */
  readonly sparse = true;
  /** keptEntries is brought up to date by each read of results (sparse.ts, "Stats"). */
  sparseStats: SparseStats = { calls: 0, keptEntries: 0, causalEntries: 0, estimateMs: 0, attentionMs: 0 };
  private sparseRunnerInstance?: SparseRunner;
  private readonly sparseScratchBytes?: number;
  // ----

  static async create(opts: WebGPUBackendOptions = {}): Promise<WebGPUBackend> {
    return new WebGPUBackend(await createGpuContext(opts), opts);
  }

  constructor(
    readonly ctx: GpuContext,
    opts: WebGPUBackendOptions = {},
  ) {
    this.device = ctx.device;
    this.usage = GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC | GPUBufferUsage.COPY_DST;
    this.pipelines = new PipelineCache(this.device);
    const lim = this.device.limits;
    this.maxBinding = Math.min(lim.maxStorageBufferBindingSize, lim.maxBufferSize, opts.maxBindingBytes ?? Infinity);
    this.slot = Math.max(PARAM_BYTES, lim.minUniformBufferOffsetAlignment);
    this.arena = this.device.createBuffer({ size: ARENA_BYTES, usage: GPUBufferUsage.UNIFORM | GPUBufferUsage.COPY_DST, label: 'param arena' });
    this.dummy = this.device.createBuffer({ size: 16, usage: this.usage, label: 'dummy' });
    this.matvecMaxRows = Math.min(8, opts.matvecMaxRows ?? 8);
    this.decodeMaxRows = opts.decodeMaxRows ?? 4;
    this.decodeChunk = opts.decodeChunk ?? 256;
    this.kvF16 = opts.kvType === 'f16';
    this.sparseScratchBytes = opts.sparseScratchBytes;
    const a = ctx.adapter;
    this.info = {
      name: 'webgpu',
      device: `${a.device || a.description || a.vendor}${a.software ? ' (software)' : ''} via Dawn/WebGPU`,
      details: {
        vendor: a.vendor,
        architecture: a.architecture,
        description: a.description,
        software: a.software,
        features: { shaderF16: ctx.f16, subgroups: ctx.subgroups, subgroupSize: [a.subgroupMinSize, a.subgroupMaxSize] },
        adapterFeatures: ctx.adapterFeatures,
        limits: limitsObject(lim),
        maxBindingBytes: this.maxBinding,
        kvType: opts.kvType ?? 'f32',
      },
    };
  }

  // ---------------------------------------------------------------------------------------------
  // Buffers

  private acquire(bytes: number, label = 'act'): GPUBuffer {
    const size = bucket(bytes) <= this.maxBinding ? bucket(bytes) : Math.ceil(bytes / 4) * 4;
    const list = this.pool.get(size);
    const b = list?.pop();
    if (b) return b;
    return this.device.createBuffer({ size, usage: this.usage, label });
  }

  private recycle(b: GPUBuffer): void {
    const list = this.pool.get(b.size);
    if (list) list.push(b);
    else this.pool.set(b.size, [b]);
  }

  private newAct(rows: number, cols: number): GpuAct {
    const bytes = Math.max(4, rows * cols * 4);
    if (bytes > this.maxBinding) {
      throw new UserError(`an activation of ${rows}×${cols} floats exceeds this GPU's storage binding limit of ${mib(this.maxBinding)}; process fewer tokens per step`);
    }
    const a = new GpuAct(rows, cols, this.acquire(bytes), bytes);
    this.stepActs.add(a);
    return a;
  }

  private use(x: Act): GpuAct {
    const a = x as GpuAct;
    if (!(a instanceof GpuAct)) throw new Error('WebGPU backend: not an activation of this backend');
    if (!a.alive) throw new Error('WebGPU backend: activation used after release or after endStep');
    return a;
  }

  private bind(a: GpuAct): GPUBufferBinding {
    return { buffer: a.buf, offset: 0, size: Math.ceil(a.bytes / 4) * 4 };
  }

  /** A buffer holding `data` for this step's dispatches (recycled at endStep). */
  private upload(data: ArrayBufferView): GPUBuffer {
    const bytes = Math.max(16, Math.ceil(data.byteLength / 4) * 4);
    const size = bucket(bytes);
    const b = this.uploadPool.get(size)?.pop() ?? this.device.createBuffer({ size, usage: this.usage, label: 'upload' });
    this.uploads.push(b);
    if (data.byteLength % 4 === 0) {
      this.device.queue.writeBuffer(b, 0, data.buffer, data.byteOffset, data.byteLength);
    } else {
      const pad = new Uint8Array(bytes);
      pad.set(new Uint8Array(data.buffer, data.byteOffset, data.byteLength));
      this.device.queue.writeBuffer(b, 0, pad);
    }
    return b;
  }

  // ---------------------------------------------------------------------------------------------
  // Recording

  private dispatch(
    file: string,
    entry: string,
    defines: Defines,
    params: number[],
    bindings: Record<number, Binding>,
    grid: [number, number?, number?],
  ): void {
    if (params.length * 4 > PARAM_BYTES) throw new Error(`${entry}: ${params.length} parameter words exceed the slot`);
    if (this.arenaUsed + this.slot > ARENA_BYTES) this.flush();
    const pipeline = this.pipelines.get(file, entry, defines);
    const off = this.arenaUsed;
    new Uint32Array(this.arenaHost.buffer, off, params.length).set(params);
    this.arenaUsed += this.slot;
    const entries: GPUBindGroupEntry[] = [{ binding: 0, resource: { buffer: this.arena, offset: off, size: PARAM_BYTES } }];
    for (const [k, v] of Object.entries(bindings)) {
      entries.push({ binding: Number(k), resource: 'buffer' in v ? v : { buffer: v } });
    }
    const bg = this.device.createBindGroup({ layout: pipeline.getBindGroupLayout(0), entries });
    if (!this.pass) {
      this.encoder ??= this.device.createCommandEncoder();
      this.pass = this.encoder.beginComputePass();
    }
    this.pass.setPipeline(pipeline);
    this.pass.setBindGroup(0, bg);
    this.pass.dispatchWorkgroups(grid[0], grid[1] ?? 1, grid[2] ?? 1);
    this.dispatches++;
  }

  /** Submits everything recorded; `extra` adds copies after the pass (readbacks). */
  private flush(extra?: (enc: GPUCommandEncoder) => void): void {
    if (!this.encoder && !extra) return;
    this.pass?.end();
    this.pass = undefined;
    const enc = this.encoder ?? this.device.createCommandEncoder();
    this.encoder = undefined;
    extra?.(enc);
    if (this.arenaUsed > 0) this.device.queue.writeBuffer(this.arena, 0, this.arenaHost, 0, this.arenaUsed);
    this.arenaUsed = 0;
    this.device.queue.submit([enc.finish()]);
    this.submits++;
  }

  /** Workgroups for n items of `per` each, as a 2-D grid under the 65,535-per-dimension limit. */
  private grid2(n: number, per: number): { gx: number; gy: number } {
    const groups = Math.max(1, Math.ceil(n / per));
    const max = this.device.limits.maxComputeWorkgroupsPerDimension;
    const gx = Math.min(groups, max);
    return { gx, gy: Math.ceil(groups / gx) };
  }

  private sub(): Defines {
    return this.ctx.subgroups ? { SUBGROUPS: true } : {};
  }

  // ---------------------------------------------------------------------------------------------
  // Backend

  uploadWeight(t: GGUFTensorInfo, bytes: Uint8Array): Weight {
    const k = t.dims[0];
    const n = t.dims.slice(1).reduce((a, b) => a * b, 1);
    let type = t.type;
    let src = bytes;
    if (t.dims.length === 1 || !KERNEL_TYPES.includes(type)) {
      // Vectors (norm weights, biases) are read as f32 by their kernels; so is any type without a WGSL decoder.
      if (!canDequantize(type)) {
        throw new UserError(`tensor "${t.name}" has type ${typeName(type)}, which RepoKV cannot compute with (supported: ${KERNEL_TYPES.map(typeName).join(', ')} and the other ggml types quant.ts dequantizes)`);
      }
      const f = dequantize(type, bytes, t.nElements);
      src = new Uint8Array(f.buffer, f.byteOffset, f.byteLength);
      type = GGMLType.F32;
    }
    const L = rowLayout(type, k);
    const per = rowsPerChunk(L.rowBytes, this.maxBinding, n);
    const chunks: Chunk[] = [];
    for (let row0 = 0; row0 < n; row0 += per) {
      const rows = Math.min(per, n - row0);
      const size = Math.max(16, rows * L.rowBytes);
      const buf = this.device.createBuffer({ size, usage: this.usage, mappedAtCreation: true, label: t.name });
      const dst = new Uint8Array(buf.getMappedRange());
      if (L.verbatim) {
        dst.set(src.subarray(row0 * L.srcRowBytes, (row0 + rows) * L.srcRowBytes));
      } else {
        for (let r = 0; r < rows; r++) L.copyRow(src, (row0 + r) * L.srcRowBytes, dst, r * L.rowBytes);
      }
      buf.unmap();
      chunks.push({ buf, row0, rows });
    }
    return new GpuWeight(t.name, t.dims, type, k, n, L.rowBytes / 4, chunks);
  }

  createKV(opts: KVCacheOptions): KVCache {
    if (opts.headDim % 4 !== 0) throw new Error(`KV cache: head dim ${opts.headDim} is not a multiple of 4`);
    const bytes = opts.capacity * opts.nKVHeads * opts.headDim * (this.kvF16 ? 2 : 4);
    if (bytes > this.maxBinding) {
      throw new UserError(
        `a KV cache of ${opts.capacity} tokens needs ${mib(bytes)} per layer, above this GPU's binding limit of ${mib(this.maxBinding)}; use a shorter context`,
      );
    }
    const mk = (what: string, l: number) => this.device.createBuffer({ size: Math.max(16, bytes), usage: this.usage, label: `kv ${what}${l}` });
    const k: GPUBuffer[] = [];
    const v: GPUBuffer[] = [];
    for (let l = 0; l < opts.nLayers; l++) {
      k.push(mk('k', l));
      v.push(mk('v', l));
    }
    return new GpuKVCache(opts, k, v, this.kvF16);
  }

  /** A pool of KV pages in GPU memory (kv-pool.ts): the engine then runs every sequence paged. */
  createKVPool(opts: KVPoolOptions): KVPool {
    return new GpuKVPool(this, opts, this.maxArenas());
  }

  /** Arena buffers one attention dispatch may bind beside its other storage buffers. */
  maxArenas(): number {
    return Math.max(1, Math.min(MAX_ARENAS, this.device.limits.maxStorageBuffersPerShaderStage - ATTENTION_OTHER_BINDINGS));
  }

  embed(table: Weight, tokens: Int32Array): Act {
    const w = table as GpuWeight;
    const cols = w.k;
    for (const t of tokens) if (t < 0 || t >= w.n) throw new Error(`token id ${t} is outside the vocabulary of ${w.n}`);
    const y = this.newAct(tokens.length, cols);
    const tok = this.upload(new Uint32Array(tokens.buffer, tokens.byteOffset, tokens.length));
    for (const c of w.chunks) {
      this.dispatch('embed.wgsl', 'embed', { WTYPE: w.type }, [tokens.length, cols, w.rowWords, c.row0, c.row0 + c.rows, 0, 0, 0], { 1: c.buf, 2: tok, 3: this.bind(y) }, [
        Math.ceil(Math.ceil(cols / 4) / 64),
        tokens.length,
      ]);
    }
    return y;
  }

  rmsNorm(x: Act, w: Weight, eps: number, groupSize?: number): Act {
    const a = this.use(x);
    const g = groupSize ?? a.cols;
    const W = w as GpuWeight;
    if (a.cols % g !== 0) throw new Error(`rmsNorm: ${a.cols} columns are not a whole number of groups of ${g}`);
    if (W.k !== g || W.n !== 1) throw new Error(`rmsNorm: weight ${W.name} has ${W.k} elements, groups have ${g}`);
    const y = this.newAct(a.rows, a.cols);
    const WG = 64;
    this.dispatch('norm.wgsl', 'rms_norm', { WG, ...this.sub() }, [a.cols, g, f32(eps), 0], { 1: this.bind(a), 2: W.chunks[0].buf, 3: this.bind(y) }, [a.cols / g, a.rows]);
    return y;
  }

  matmul(x: Act, w: Weight, bias?: Weight): Act {
    const a = this.use(x);
    const W = w as GpuWeight;
    if (a.cols !== W.k) throw new Error(`matmul: ${a.cols} input columns, weight ${W.name} takes ${W.k}`);
    const B = bias as GpuWeight | undefined;
    if (B && B.k * B.n !== W.n) throw new Error(`matmul: bias ${B.name} has ${B.k * B.n} elements for ${W.n} outputs`);
    const y = this.newAct(a.rows, W.n);
    const matvec = a.rows <= this.matvecMaxRows;
    for (const c of W.chunks) {
      const common = { 1: c.buf, 2: this.bind(a), 3: B ? B.chunks[0].buf : this.dummy, 4: this.bind(y) };
      if (matvec) {
        const { gx, gy } = this.grid2(c.rows, 4);
        this.dispatch('matmul.wgsl', 'matvec', { MATVEC: true, WTYPE: W.type, WG: 64, R: a.rows === 1 ? 1 : 8, ...this.sub() }, [a.rows, W.k, c.rows, c.row0, W.n, W.rowWords, B ? 1 : 0, gx], common, [gx, gy]);
      } else {
        this.dispatch('matmul.wgsl', 'matmul_tiled', { WTYPE: W.type }, [a.rows, W.k, c.rows, c.row0, W.n, W.rowWords, B ? 1 : 0, 0], common, [Math.ceil(c.rows / 32), Math.ceil(a.rows / 32)]);
      }
    }
    return y;
  }

  rope(x: Act, positions: Int32Array, nHeads: number, headDim: number, cfg: RopeConfig): Act {
    const a = this.use(x);
    if (a.cols !== nHeads * headDim) throw new Error(`rope: ${a.cols} columns for ${nHeads} heads of ${headDim}`);
    if (positions.length !== a.rows) throw new Error(`rope: ${positions.length} positions for ${a.rows} rows`);
    if (cfg.dims % 2 !== 0 || cfg.dims > headDim) throw new Error(`rope: ${cfg.dims} rotated dimensions for a head of ${headDim}`);
    const cs = this.ropeTable(positions, cfg);
    const y = this.newAct(a.rows, a.cols);
    const n = a.rows * a.cols;
    const { gx, gy } = this.grid2(n, 256);
    this.dispatch('rope.wgsl', 'rope', {}, [n, gx, a.cols, headDim, cfg.dims, cfg.kind === 'norm' ? 0 : 1, 0, 0], { 1: this.bind(a), 2: cs, 3: this.bind(y) }, [gx, gy]);
    return y;
  }

  /** (cos θ·mscale, sin θ·mscale) per row and pair, in f64 on the host; shared by q and k within a step. */
  private ropeTable(positions: Int32Array, cfg: RopeConfig): GPUBuffer {
    let m = this.ropeTables.get(positions);
    if (!m) this.ropeTables.set(positions, (m = new Map()));
    let b = m.get(cfg);
    if (!b) {
      const half = cfg.dims / 2;
      const t = new Float32Array(Math.max(4, positions.length * half * 2));
      for (let r = 0; r < positions.length; r++) {
        for (let i = 0; i < half; i++) {
          const th = positions[r] * cfg.invFreq[i];
          t[(r * half + i) * 2] = Math.cos(th) * cfg.mscale;
          t[(r * half + i) * 2 + 1] = Math.sin(th) * cfg.mscale;
        }
      }
      b = this.upload(t);
      m.set(cfg, b);
    }
    return b;
  }

  attention(q: Act, k: Act, v: Act, seqs: SeqSlice[], p: AttentionParams): Act {
    const r = this.attentionWithLse(q, k, v, seqs, p);
    this.release(r.lse);
    return r.out;
  }

  /**
   * attention, also returning the log-sum-exp of every (head, row) as an Act of [nHeads, rows]
   * (natural log of Σ exp(scale·q·k) over the attended keys), the engine's (out, lse) convention.
   */
  attentionWithLse(q: Act, k: Act, v: Act, seqs: SeqSlice[], p: AttentionParams): { out: GpuAct; lse: GpuAct } {
    const Q = this.use(q);
    const K = this.use(k);
    const V = this.use(v);
    const HD = p.headDim;
    if (HD % 4 !== 0) throw new Error(`attention: head dim ${HD} is not a multiple of 4`);
    if (p.nHeads % p.nKVHeads !== 0) throw new Error(`attention: ${p.nHeads} heads do not group over ${p.nKVHeads} KV heads`);
    const qStride = p.nHeads * HD;
    const kvStride = p.nKVHeads * HD;
    if (Q.cols !== qStride || K.cols !== kvStride || V.cols !== kvStride) throw new Error('attention: q/k/v widths do not match the head counts');
    const out = this.newAct(Q.rows, qStride);
    const lse = this.newAct(p.nHeads, Q.rows);
    const group = p.nHeads / p.nKVHeads;
    const wgMem = this.device.limits.maxComputeWorkgroupStorageSize;
    let BK = 32;
    while (BK > 4 && (BK * HD + 16 * BK * 4) * 4 > wgMem) BK /= 2;
    const CHUNK = this.decodeChunk;
    for (const s of seqs) {
      if (s.n === 0) continue;
      const nKeys = s.pos + s.n;
      const total = s.n * kvStride;
      const base = [s.n, s.row, qStride, kvStride, group, s.pos, nKeys, f32(p.scale), Q.rows, p.nHeads];
      // Where this sequence's K/V live: the contiguous cache's two buffers, or the pool's arenas
      // addressed through the page table (three more parameter words: pages per arena, values per
      // page, this layer's offset in a page).
      let defs: Defines;
      let f16: boolean;
      let write: Record<number, Binding>;
      let read: Record<number, Binding>;
      let paging: number[];
      const kvAny = s.kv;
      if (isPagedKV(kvAny)) {
        const pool = kvAny.pool as GpuKVPool;
        if (!(pool instanceof GpuKVPool) || pool.host !== this) throw new Error('attention: paged KV of another backend');
        if (pool.rowSize !== kvStride || pool.opts.headDim !== HD) throw new Error('attention: KV pool shape does not match the model');
        if (p.layer >= pool.opts.nLayers) throw new Error(`attention: layer ${p.layer} of a KV pool of ${pool.opts.nLayers} layers`);
        const ps = pool.opts.pageSize;
        if (ps % BK !== 0) throw new Error(`attention: page size ${ps} is not a multiple of the key tile ${BK}`);
        if (nKeys > kvAny.pageTable.length * ps) throw new Error(`sequence needs ${nKeys} tokens of KV but its page table covers ${kvAny.pageTable.length * ps}`);
        const pt = pool.pageTable(kvAny);
        f16 = pool.f16;
        defs = { HD, BK, CHUNK, KVF16: f16, PAGED: true, PAGE: ps };
        const arenas: Record<number, Binding> = { 14: pt };
        pool.arenas.forEach((b, i) => {
          arenas[20 + i] = b;
          if (i > 0) defs[`AR${i + 1}`] = true;
        });
        write = arenas;
        read = arenas;
        paging = [pool.pagesPerArena, pool.pageVals, p.layer * 2 * ps * kvStride];
      } else {
        const kv = kvAny as GpuKVCache;
        if (!(kv instanceof GpuKVCache)) throw new Error('attention: KV cache of another backend');
        if (kv.rowSize !== kvStride) throw new Error('attention: KV cache shape does not match the model');
        if (nKeys > kv.capacity) throw new Error(`sequence needs ${nKeys} tokens of KV, capacity is ${kv.capacity}`);
        f16 = kv.f16;
        defs = { HD, BK, CHUNK, KVF16: f16 };
        write = { 3: kv.k[p.layer], 4: kv.v[p.layer] };
        read = { 6: kv.k[p.layer], 7: kv.v[p.layer] };
        paging = [0, 0, 0];
      }
      const g = this.grid2(f16 ? total / 2 : total, 256);
      this.dispatch('attention.wgsl', 'kv_write', defs, [...base, 0, g.gx, total, ...paging], { 1: this.bind(K), 2: this.bind(V), ...write }, [g.gx, g.gy]);
      // ---- sparse prefill (issue 8): estimation, index and sparse flash on the GPU (sparse.ts) ----
      if (p.sparse && s.n >= SPARSE_MIN_ROWS) {
        const paged = isPagedKV(kvAny);
        const kv: SparseKV = { paged, f16, read, paging: paging as [number, number, number], defines: {} };
        if (paged) for (const k of Object.keys(defs)) if (k === 'PAGE' || k.startsWith('AR')) kv.defines[k] = defs[k];
        if (this.sparseRunner.run({ q: this.bind(Q), out: this.bind(out), lse: this.bind(lse), rows: Q.rows, s, p, kv }, this.sparseStats)) continue;
      }
      // ----
      if (s.n <= this.decodeMaxRows) {
        const nSplits = Math.ceil(nKeys / CHUNK);
        const po = this.acquire(s.n * p.nHeads * nSplits * HD * 4, 'attn partial o');
        const pml = this.acquire(s.n * p.nHeads * nSplits * 2 * 4, 'attn partial m,l');
        const prm = [...base, nSplits, 0, 0, ...paging];
        this.dispatch('attention.wgsl', 'decode_split', defs, prm, { 5: this.bind(Q), ...read, 10: po, 11: pml }, [nSplits, p.nHeads, s.n]);
        this.dispatch('attention.wgsl', 'decode_merge', { HD, BK, CHUNK }, prm, { 12: po, 13: pml, 8: this.bind(out), 9: this.bind(lse) }, [p.nHeads, s.n]);
        this.recycle(po);
        this.recycle(pml);
      } else {
        this.dispatch('attention.wgsl', 'flash', defs, [...base, 0, 0, 0, ...paging], {
          5: this.bind(Q),
          ...read,
          8: this.bind(out),
          9: this.bind(lse),
        }, [Math.ceil(s.n / 16), p.nHeads]);
      }
    }
    return { out, lse };
  }

  siluMul(gate: Act, up: Act): Act {
    return this.binary('silu_mul', gate, up);
  }

  add(a: Act, b: Act): Act {
    return this.binary('add', a, b);
  }

  private binary(entry: string, a0: Act, b0: Act): Act {
    const a = this.use(a0);
    const b = this.use(b0);
    if (a.rows !== b.rows || a.cols !== b.cols) throw new Error(`${entry}: shapes ${a.rows}×${a.cols} and ${b.rows}×${b.cols} differ`);
    const y = this.newAct(a.rows, a.cols);
    const n = a.rows * a.cols;
    const { gx, gy } = this.grid2(n, 256);
    this.dispatch('elementwise.wgsl', entry, {}, [n, gx, a.cols, 0], { 1: this.bind(a), 2: this.bind(b), 3: this.bind(y) }, [gx, gy]);
    return y;
  }

  selectRows(x: Act, rows: number[]): Act {
    const a = this.use(x);
    for (const r of rows) if (r < 0 || r >= a.rows || !Number.isInteger(r)) throw new Error(`selectRows: row ${r} of ${a.rows}`);
    const y = this.newAct(rows.length, a.cols);
    const n = rows.length * a.cols;
    const idx = this.upload(Uint32Array.from(rows));
    const { gx, gy } = this.grid2(n, 256);
    this.dispatch('elementwise.wgsl', 'select_rows', {}, [n, gx, a.cols, 0], { 1: this.bind(a), 3: this.bind(y), 4: idx }, [gx, gy]);
    return y;
  }

  /** An activation holding host values (tests, and inputs that do not come from a kernel). */
  fromHost(data: Float32Array, rows: number, cols: number): GpuAct {
    if (data.length !== rows * cols) throw new Error(`fromHost: ${data.length} values for ${rows}×${cols}`);
    // A pooled buffer may still be read by recorded, unsubmitted dispatches; a writeBuffer would land
    // before them, so submit those first.
    this.flush();
    const a = this.newAct(rows, cols);
    if (data.length > 0) this.device.queue.writeBuffer(a.buf, 0, data.buffer, data.byteOffset, data.byteLength);
    return a;
  }

  /** Greedy sampling on the GPU: the index of each row's largest value (lowest index on ties). */
  async argmax(x: Act): Promise<Int32Array> {
    const a = this.use(x);
    const out = this.acquire(Math.max(16, a.rows * 4), 'argmax');
    this.dispatch('sample.wgsl', 'argmax', {}, [a.cols, 0, 0, 0, 0, 0, 0, 0], { 1: this.bind(a), 2: out }, [a.rows]);
    const bytes = await this.readBuffer(out, a.rows * 4);
    this.recycle(out);
    return new Int32Array(bytes);
  }

  /**
   * Temperature / top-k / top-p sampling on the GPU (kernels/sample.wgsl), one token per row, with the
   * host Sampler's semantics for the row's uniform number (sample-ref.ts is the reference).
   */
  async sample(x: Act, opts: { temperature: number; topK: number; topP: number }, uniforms: Float32Array): Promise<Int32Array> {
    if (!(opts.temperature > 0)) return this.argmax(x);
    const a = this.use(x);
    if (uniforms.length !== a.rows) throw new Error(`sample: ${uniforms.length} random numbers for ${a.rows} rows`);
    const topK = opts.topK > 0 ? Math.min(Math.floor(opts.topK), 0xffffffff) : 0;
    const u = this.upload(uniforms);
    const out = this.acquire(Math.max(16, a.rows * 4), 'sample');
    this.dispatch('sample.wgsl', 'sample', {}, [a.cols, topK, f32(opts.topP ?? 1), f32(opts.temperature), 3, 0, 0, 0], { 1: this.bind(a), 2: out, 3: u }, [a.rows]);
    const bytes = await this.readBuffer(out, a.rows * 4);
    this.recycle(out);
    return new Int32Array(bytes);
  }

  async read(x: Act): Promise<Float32Array> {
    const a = this.use(x);
    return new Float32Array(await this.readBuffer(a.buf, a.rows * a.cols * 4));
  }

  private readBuffer(src: GPUBuffer, bytes: number): Promise<ArrayBuffer> {
    return this.readRange(src, 0, bytes);
  }

  /** Bytes [offset, offset + bytes) of a buffer, after all queued work (offset a multiple of 4). */
  async readRange(src: GPUBuffer, offset: number, bytes: number): Promise<ArrayBuffer> {
    const size = bucket(Math.max(16, Math.ceil(bytes / 4) * 4));
    const staging = this.readPool.get(size)?.pop() ?? this.device.createBuffer({ size, usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST, label: 'readback' });
    const n = Math.ceil(bytes / 4) * 4;
    this.flush((enc) => enc.copyBufferToBuffer(src, offset, staging, 0, n));
    await staging.mapAsync(GPUMapMode.READ, 0, n);
    const out = staging.getMappedRange(0, n).slice(0, bytes);
    staging.unmap();
    const list = this.readPool.get(size);
    if (list) list.push(staging);
    else this.readPool.set(size, [staging]);
    if (this.ctx.lost) throw new Error(`WebGPU device lost: ${this.ctx.lost}`);
    if (this.sparseRunnerInstance?.dirty) await this.sparseRunnerInstance.sync(this.sparseStats); // sparse prefill: kept entries
    return out;
  }

  // ---- sparse prefill (issue 8, sparse.ts) ----
  /** The sparse-prefill recorder (created on first use). */
  get sparseRunner(): SparseRunner {
    this.sparseRunnerInstance ??= new SparseRunner(this.sparseHost(), { scratchBytes: this.sparseScratchBytes, workgroupBytes: this.device.limits.maxComputeWorkgroupStorageSize });
    return this.sparseRunnerInstance;
  }

  /** Brings sparseStats.keptEntries up to date (after all queued work). */
  async syncSparseStats(): Promise<void> {
    await this.sparseRunnerInstance?.sync(this.sparseStats);
  }

  private sparseHost(): SparseHost {
    return {
      device: this.device,
      maxBinding: this.maxBinding,
      dispatch: (file, entry, defines, params, bindings, grid) => this.dispatch(file, entry, defines, params, bindings, grid),
      acquire: (bytes, label) => this.acquire(bytes, label),
      recycle: (b) => this.recycle(b),
      upload: (data) => this.upload(data),
      readRange: (buf, offset, bytes) => this.readRange(buf, offset, bytes),
      flushRecorded: () => this.flush(),
    };
  }
  // ----

  release(x: Act): void {
    const a = x as GpuAct;
    if (!a.alive) return;
    a.alive = false;
    this.stepActs.delete(a);
    this.recycle(a.buf);
  }

  endStep(): void {
    this.flush();
    for (const a of this.stepActs) {
      a.alive = false;
      this.recycle(a.buf);
    }
    this.stepActs.clear();
    for (const b of this.uploads) {
      const list = this.uploadPool.get(b.size);
      if (list) list.push(b);
      else this.uploadPool.set(b.size, [b]);
    }
    this.uploads = [];
    this.ropeTables = new WeakMap();
  }

  /** Submits the recorded work now (KV pool: a queue.writeBuffer after it lands after that work). */
  flushRecorded(): void {
    this.flush();
  }

  /** Records a copy of `words` u32 words into the step's pass (ordered with the dispatches around it). */
  recordCopyWords(src: GPUBuffer, srcWord: number, dst: GPUBuffer, dstWord: number, words: number): void {
    const { gx, gy } = this.grid2(words, 256);
    if (src === dst) this.dispatch('kvpage.wgsl', 'copy_within', {}, [words, srcWord, dstWord, gx], { 1: src }, [gx, gy]);
    else this.dispatch('kvpage.wgsl', 'copy_across', {}, [words, srcWord, dstWord, gx], { 2: src, 3: dst }, [gx, gy]);
  }

  /** Waits until the GPU has finished everything submitted. */
  async sync(): Promise<void> {
    this.flush();
    await this.device.queue.onSubmittedWorkDone();
  }

  /** Bytes held in pooled buffers (activations and uploads), for tests and doctor. */
  pooledBytes(): number {
    let s = 0;
    for (const m of [this.pool, this.uploadPool, this.readPool]) for (const l of m.values()) for (const b of l) s += b.size;
    return s;
  }

  dispose(): void {
    this.encoder = undefined;
    this.pass = undefined;
    this.device.destroy();
  }
}
