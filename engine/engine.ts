// The Engine API: the one surface used by the CLI, the JSON-RPC server, the extension (through the
// server) and the tests. Load a model on a backend, create sequences, prefill them in chunks, decode
// token by token (several sequences batched into one step when asked), stream text, stop on EOS or a
// stop string, cancel between steps.

import { availableParallelism, totalmem } from 'node:os';
import { join } from 'node:path';
import { GGUFFile } from './gguf/reader.js';
import { UserError } from './errors.js';
import { checkModelMemory } from './memory.js';
import { SPARSE_MIN_ROWS, type Act, type Backend, type KVCache } from './model/backend.js';
import { HostKVPool } from './kv/host-pool.js';
import { KVCacheManager, type KVCacheStats } from './kv/manager.js';
import { PagedSequenceKV } from './kv/paged-kv.js';
import { modelFingerprint, type ModelFingerprint } from './kv/fingerprint.js';
import { hashKey, PAGE_SIZE, type PageHash } from './kv/hash.js';
import type { StorageCodec } from './kv/codec.js';
import { loadTransformerConfig } from './model/config.js';
import { Rng, Sampler, type SamplingOptions } from './model/sampler.js';
import { Transformer, type Batch, type TransformerConfig } from './model/transformer.js';
import { Tokenizer } from './text/tokenizer.js';
import { ChatTemplate, type ChatMessage } from './text/chat-template.js';
import { ReferenceBackend } from './backends/reference/index.js';
import { DEFAULT_RETRIEVAL_CONFIG, RetrievalIndexManager, type RetrievalConfig } from './attention/retrieval/manager.js';
import { layerPatterns, loadSparseConfig, defaultSparseConfig, type SparseModelConfig } from './attention/sparse/config.js';

export type BackendChoice = 'auto' | 'cpu' | 'webgpu' | 'reference';

export interface EngineOptions {
  model: string;
  backend?: BackendChoice;
  /** Default KV capacity of a new sequence, in tokens (≤ the model's context length). */
  contextSize?: number;
  /** CPU threads (CPU backend); default: the machine's cores. */
  threads?: number;
  /** Prefill chunk, in tokens. Long prompts are prefilled in chunks of this size. */
  prefillChunk?: number;
  /** Let `webgpu` run on a software adapter (lavapipe) — for tests; `auto` never picks one. */
  allowSoftwareGpu?: boolean;
  onLoadProgress?: (doneBytes: number, totalBytes: number) => void;
  /** Memory the pre-load check assumes available, in bytes (default: what the OS reports; tests). */
  availableMemoryBytes?: number;
  /** Paged KV, prefix cache, tiers and persistence (engine/kv/README.md). */
  kv?: KVOptions;
  /** Sparse prefill (issue 8, engine/attention/sparse/README.md). */
  sparse?: SparseOptions;
  /** Retrieval attention at decode (issue 9, engine/attention/retrieval/README.md). */
  retrieval?: RetrievalOptions;
}

export interface RetrievalOptions {
  /**
   * 'off' (default): dense decode. 'on': sequences whose capacity reaches the index threshold
   * (config.minContext, default 16K) decode through a retrieval index once their context does (CPU
   * backend: host-side attention). Dense below the threshold either way.
   */
  mode?: 'on' | 'off';
  /** Index kind, budgets (sink 128, window 512, top-k 100), sampling, threshold. */
  config?: Partial<RetrievalConfig>;
}

export interface SparseOptions {
  /**
   * 'auto' (default): prefill sparse when the context after a prompt reaches the config's threshold and
   * the backend honours sparse patterns — enabled only when the context size can reach the threshold.
   * 'off': always dense.
   */
  mode?: 'auto' | 'off';
  /** Overrides the config's threshold (context tokens below which prefill stays dense). */
  threshold?: number;
  /** Use this config instead of the stored (`repokv calibrate`) or default one. */
  config?: SparseModelConfig;
  /** Prefill chunk while sparse (CPU default max(prefillChunk, 8192); WebGPU: prefillChunk): one estimate per chunk. */
  chunk?: number;
}

export interface KVOptions {
  /**
   * 'auto' (default): paged when the backend offers a KV pool (createKVPool), contiguous otherwise.
   * 'host': paged in host memory through engine/kv's HostKVPool, for backends whose attention reads a
   * host cache through write/keys/values (the CPU backend until it offers its own pool).
   * 'off': contiguous caches, no prefix cache.
   */
  paging?: 'auto' | 'host' | 'off';
  /** Memory budget of the page pool, in bytes (default: 4 × the context size of KV, ≤ ¼ of RAM). */
  memoryBytes?: number;
  /** Host-memory tier for pages evicted from the pool, in bytes (default: ⅛ of RAM, ≤ 2 GiB; 0: none). */
  hostBytes?: number;
  /** Persistence root (pages go to <cacheDir>/<model fingerprint>/); absent: memory only. */
  cacheDir?: string;
  /** Size cap of the disk cache, in bytes (default 16 GiB). */
  maxDiskBytes?: number;
  /** How pages are stored on disk: 'f16' (exact, default) or 'int8' (per-page scales, about half the bytes). */
  storage?: StorageCodec;
  /** Element type of the KV in the pool (default 'f16', which makes every tier exact). */
  dtype?: 'f16' | 'f32';
  /** Look up and publish cached prefixes (default true). */
  prefixCaching?: boolean;
  /** Makes the disk store fail writes past this size, as a full disk would (tests). */
  diskHardLimitBytes?: number;
  /** Where warnings go (full disk, damaged cache …); default: stderr, each once. */
  onWarning?: (message: string) => void;
}

/** Where a prefill's prompt tokens came from. */
export interface PrefillReport {
  promptTokens: number;
  /** Prompt tokens whose KV was restored from the cache instead of computed. */
  cachedTokens: number;
  computedTokens: number;
  /** cachedTokens by tier. */
  fromDevice: number;
  fromHost: number;
  fromDisk: number;
  ms: number;
  /** Whether the computed tokens were prefilled with sparse attention. */
  sparse?: boolean;
}

export interface GenerateOptions extends SamplingOptions {
  maxTokens?: number;
  stop?: string[];
  signal?: AbortSignal;
  /** Stop at end-of-generation tokens (default true). */
  stopAtEog?: boolean;
}

export interface GenerateChunk {
  token: number;
  /** Text that became final with this token (may be empty mid-character or while a stop string could still match). */
  text: string;
}

export type StopReason = 'eog' | 'stop' | 'length' | 'cancelled' | 'context';

export interface GenerateResult {
  tokens: number[];
  text: string;
  stopReason: StopReason;
}

export class Sequence {
  /** Every token whose K/V is in `kv`, in order. */
  readonly tokens: number[] = [];
  /** What the last prefill of this sequence took from the cache and computed. */
  lastPrefill: PrefillReport | null = null;
  constructor(
    readonly id: number,
    readonly kv: KVCache,
    /** Retrieval-attention indexes of this sequence (null: dense decode). */
    public retrieval: RetrievalIndexManager | null = null,
  ) {}
  get length(): number {
    return this.tokens.length;
  }
  /** Drops everything after the first `n` tokens (retry or edit a turn). */
  truncate(n: number): void {
    this.kv.truncate(n);
    this.tokens.length = n;
    this.retrieval?.truncate(n);
  }
}

export class Engine {
  private nextSeqId = 1;
  private disposed = false;

  private constructor(
    readonly modelPath: string,
    readonly config: TransformerConfig,
    readonly tokenizer: Tokenizer,
    readonly chatTemplate: ChatTemplate | null,
    readonly backend: Backend,
    readonly model: Transformer,
    readonly contextSize: number,
    readonly prefillChunk: number,
    /** The paged KV cache (null: contiguous caches). */
    readonly kvCache: KVCacheManager | null = null,
    /** Sparse prefill config (null: always dense). */
    readonly sparse: SparseModelConfig | null = null,
    private readonly sparseChunk = prefillChunk,
    /** Retrieval decode settings (null: dense decode). */
    readonly retrievalConfig: RetrievalConfig | null = null,
    /** Where retrieval indexes are persisted (beside the KV pages; null: memory only). */
    private readonly retrievalDir: string | null = null,
    private readonly warn: (m: string) => void = (m) => console.error(m),
  ) {}

  /** Gives a sequence's retrieval manager its on-disk store, addressed by the sequence's page hashes. */
  private attachRetrievalStore(seq: Sequence): void {
    const kv = seq.kv;
    if (!seq.retrieval || !this.retrievalDir || !(kv instanceof PagedSequenceKV)) return;
    seq.retrieval.setStore({
      dir: this.retrievalDir,
      addressAt: (end) => {
        const i = end / PAGE_SIZE - 1;
        return Number.isInteger(i) && i >= 0 && i < kv.hashes.length ? hashKey(kv.hashes[i]) : null;
      },
      onBad: (why) => this.warn(`repokv: a stored retrieval index was unusable and is rebuilt (${why})`),
    });
  }

  static async load(opts: EngineOptions): Promise<Engine> {
    const file = GGUFFile.open(opts.model);
    try {
      const config = loadTransformerConfig(file);
      const tokenizer = Tokenizer.fromGGUF(file);
      const chatTemplate = ChatTemplate.fromGGUF(file);
      const ctx = Math.min(opts.contextSize ?? Math.min(config.contextLength, 8192), config.contextLength);
      const backend = await createBackend(opts.backend ?? 'auto', opts);
      const model = new Transformer(config, backend);
      try {
        // Before any weight is read: the weights as this backend keeps them and, where KV lives in
        // host memory, one context of it.
        const kvValue = opts.kv?.dtype === 'f32' ? 4 : 2;
        const hostKV = backend.info.name !== 'webgpu';
        checkModelMemory(opts.model, file.tensors, {
          backend: backend.info.name,
          precision: backend.info.details.precision as 'int8' | 'f32' | undefined,
          kvBytes: hostKV ? ctx * 2 * config.nLayers * config.nKVHeads * config.headDim * kvValue : 0,
          available: opts.availableMemoryBytes,
        });
        model.load(file, opts.onLoadProgress);
      } catch (e) {
        backend.dispose();
        throw e;
      }
      const chunk = opts.prefillChunk ?? (backend.info.name === 'reference' ? 64 : 512);
      let kvCache: KVCacheManager | null = null;
      try {
        kvCache = createKVCache(backend, config, file, opts, ctx);
      } catch (e) {
        backend.dispose();
        throw e;
      }
      let sparse: SparseModelConfig | null = null;
      try {
        sparse = sparseConfigFor(opts, file, config, backend, ctx);
      } catch (e) {
        kvCache?.dispose();
        backend.dispose();
        throw e;
      }
      // CPU: larger chunks amortise the host path's per-chunk work (K/V readout, one estimate). WebGPU
      // keeps its chunk: a step's activations must fit the adapter's storage-binding limit.
      const sparseChunk = opts.sparse?.chunk ?? (backend.info.name === 'cpu' ? Math.max(chunk, 8192) : chunk);
      // Retrieval decode (issue 9): on a backend with host-side attention, when the context can reach
      // the index's threshold.
      const ro = opts.retrieval ?? {};
      // The graph links every key by L2 as well (l2all): decode queries that no sampled prefill query
      // resembled (an induction head reading a needle) are otherwise unreachable — measured: kv
      // retrieval at 16K, 4/16 answers with the projection alone, 8/8 with l2all and with a flat scan.
      const rcfg: RetrievalConfig = { ...DEFAULT_RETRIEVAL_CONFIG, graph: { l2all: true }, ...(ro.config ?? {}) };
      const retrieval = ro.mode === 'on' && backend.sparse && backend.info.name === 'cpu' && ctx >= rcfg.minContext ? rcfg : null;
      if (retrieval) backend.enableSparse?.();
      const retrievalDir = retrieval && opts.kv?.cacheDir && kvCache ? join(opts.kv.cacheDir, 'retrieval') : null;
      return new Engine(opts.model, config, tokenizer, chatTemplate, backend, model, ctx, chunk, kvCache, sparse, sparseChunk, retrieval, retrievalDir, opts.kv?.onWarning);
    } finally {
      file.close();
    }
  }

  get info() {
    return { model: this.modelPath, arch: this.config.arch, backend: this.backend.info, contextSize: this.contextSize };
  }

  /** Token ids of a chat, rendered with the model's own template (ending with the assistant header). */
  chatTokens(messages: ChatMessage[], opts: { addGenerationPrompt?: boolean } = {}): number[] {
    if (!this.chatTemplate) throw new UserError(`${this.modelPath}: the model has no chat template (tokenizer.chat_template); use a plain prompt or an instruct model`);
    const text = this.chatTemplate.render(messages, { addGenerationPrompt: opts.addGenerationPrompt ?? true, addBos: this.tokenizer.addBos });
    return Array.from(this.tokenizer.encode(text, { addSpecial: true, parseSpecial: true }));
  }

  createSequence(capacity = this.contextSize): Sequence {
    this.assertAlive();
    const kv = this.kvCache ? this.kvCache.createSequence(capacity) : this.model.createKV(capacity);
    const c = this.config;
    const rm = this.retrievalConfig && capacity >= this.retrievalConfig.minContext ? new RetrievalIndexManager({ nLayers: c.nLayers, nKVHeads: c.nKVHeads, group: c.nHeads / c.nKVHeads, headDim: c.headDim }, this.retrievalConfig) : null;
    const seq = new Sequence(this.nextSeqId++, kv, rm);
    this.attachRetrievalStore(seq);
    return seq;
  }

  freeSequence(seq: Sequence): void {
    seq.kv.free();
  }

  /**
   * A new sequence with the same tokens and KV, sharing its pages until either writes (copy-on-write):
   * branch a conversation, or ask several questions about the same prefix.
   */
  forkSequence(seq: Sequence, capacity = seq.kv.capacity): Sequence {
    this.assertAlive();
    if (!this.kvCache || !(seq.kv instanceof PagedSequenceKV)) throw new UserError('forking a sequence needs paged KV (a backend with a KV pool, or kv.paging "host")');
    // The fork shares the parent's retrieval indexes read-only (manager.fork()).
    const f = new Sequence(this.nextSeqId++, this.kvCache.fork(seq.kv, capacity), seq.retrieval?.fork() ?? null);
    appendAll(f.tokens, seq.tokens);
    this.attachRetrievalStore(f);
    return f;
  }

  /** Statistics of the paged KV cache (pool, host tier, disk), or null with contiguous caches. */
  cacheStats(): KVCacheStats | null {
    return this.kvCache?.stats() ?? null;
  }

  /** Waits until every page computed so far is persisted (no-op without a disk cache). */
  async flushCache(): Promise<void> {
    await this.kvCache?.flush();
  }

  /**
   * Appends `tokens` to the sequence, in chunks, and returns the logits after its last token.
   * Checks `signal` between chunks.
   */
  async prefill(seq: Sequence, tokens: ArrayLike<number>, opts: { signal?: AbortSignal; onProgress?: (done: number, total: number) => void; /** false: dense even above the sparse threshold (benchmarks, calibration). */ sparse?: boolean } = {}): Promise<Float32Array> {
    this.assertAlive();
    if (tokens.length === 0) throw new Error('prefill needs at least one token');
    if (seq.length + tokens.length > seq.kv.capacity) {
      throw new UserError(`the prompt needs ${seq.length + tokens.length} tokens of context but the sequence holds ${seq.kv.capacity}; raise the context size or shorten the input`);
    }
    const t0 = performance.now();
    const cache = this.kvCache;
    const paged = cache && seq.kv instanceof PagedSequenceKV ? seq.kv : null;
    const report: PrefillReport = { promptTokens: tokens.length, cachedTokens: 0, computedTokens: 0, fromDevice: 0, fromHost: 0, fromDisk: 0, ms: 0 };
    let start = 0;
    if (cache && paged) {
      // The longest cached continuation (pool, host memory, disk); the last prompt token is always
      // computed, since its logits are wanted.
      const all = seq.tokens.concat(Array.from(tokens));
      const before = seq.length;
      const r = await cache.restore(paged, all);
      if (r.covered > before) {
        const covered = Math.min(r.covered, all.length - 1);
        if (covered < r.covered) cache.rewind(paged, covered);
        // A fresh sequence on a cached prefix takes that prefix's retrieval indexes (read-only).
        if (before === 0 && seq.retrieval) this.adoptRetrieval(seq, paged, covered);
        seq.tokens.length = 0;
        appendAll(seq.tokens, all, covered);
        start = covered - before;
        // Per tier, the restored tokens past what the sequence already held (a replaced partial page
        // and a rewound last token do not count).
        const ps = cache.pageSize;
        for (const pg of r.pages) {
          const n = Math.max(0, Math.min((pg.index + 1) * ps, covered) - Math.max(pg.index * ps, before));
          if (pg.tier === 'device') report.fromDevice += n;
          else if (pg.tier === 'host') report.fromHost += n;
          else report.fromDisk += n;
        }
      }
    }
    report.cachedTokens = start;
    report.computedTokens = tokens.length - start;
    let logits: Float32Array = new Float32Array(0);
    // Sparse when the whole context after this prompt reaches the threshold (MInference decides by the
    // prompt length S; its budgets are scaled for S). Every chunk of it, the first included, estimates
    // from its own last 64 queries against all keys before it.
    const S = seq.length - start + tokens.length;
    const sp = this.sparse && opts.sparse !== false && S >= this.sparse.threshold ? this.sparse : null;
    const sparse = sp ? (l: number) => layerPatterns(sp, l, S) : undefined;
    const step = sp ? this.sparseChunk : this.prefillChunk;
    report.sparse = !!sp && tokens.length - start >= SPARSE_MIN_ROWS; // shorter appends attend densely
    for (let s0 = start; s0 < tokens.length; s0 += step) {
      if (opts.signal?.aborted) throw abortError();
      const end = Math.min(tokens.length, s0 + step);
      const n = end - s0;
      const toks = Int32Array.from({ length: n }, (_, i) => tokens[s0 + i]);
      const pos0 = seq.length;
      if (cache && paged) await cache.prepareWrite(paged, pos0 + n);
      logits = await this.model.forward({
        tokens: toks,
        positions: Int32Array.from({ length: n }, (_, i) => pos0 + i),
        seqs: [{ kv: seq.kv, row: 0, n, pos: pos0, retrieval: seq.retrieval ?? undefined }],
        logitRows: end === tokens.length ? [n - 1] : [],
        sparse,
      });
      for (let i = 0; i < n; i++) seq.tokens.push(toks[i]);
      if (cache && paged) cache.publish(paged, seq.tokens);
      opts.onProgress?.(end, tokens.length);
    }
    report.ms = performance.now() - t0;
    seq.lastPrefill = report;
    if (seq.retrieval && paged && paged.hashes.length) this.registerRetrieval(paged.hashes[paged.hashes.length - 1], seq.retrieval);
    return logits;
  }

  /** Retrieval managers by the page hash of the prefix they saw (a few, most recent last). */
  private retrievalByPrefix = new Map<string, RetrievalIndexManager>();
  private registerRetrieval(h: PageHash, m: RetrievalIndexManager): void {
    const key = hashKey(h);
    this.retrievalByPrefix.delete(key);
    this.retrievalByPrefix.set(key, m);
    while (this.retrievalByPrefix.size > 8) this.retrievalByPrefix.delete(this.retrievalByPrefix.keys().next().value as string);
  }
  /** The longest registered prefix of a restored sequence: its manager, forked (indexes shared). */
  private adoptRetrieval(seq: Sequence, paged: PagedSequenceKV, covered: number): void {
    const pages = Math.min(paged.hashes.length, Math.floor(covered / PAGE_SIZE));
    for (let i = pages - 1; i >= 0; i--) {
      const m = this.retrievalByPrefix.get(hashKey(paged.hashes[i]));
      if (m) {
        seq.retrieval = m.fork();
        this.attachRetrievalStore(seq);
        return;
      }
    }
  }

  /** One decode step for several sequences at once: appends one token to each, returns their logits. */
  async decodeStep(seqs: Sequence[], tokens: number[]): Promise<Float32Array[]> {
    this.assertAlive();
    const n = seqs.length;
    for (const s of seqs) {
      if (s.length + 1 > s.kv.capacity) throw new UserError(`sequence ${s.id} is full (${s.kv.capacity} tokens); start a new session or raise the context size`);
    }
    const logits = await this.stepEach(seqs, tokens, (batch) => this.model.forward(batch));
    const V = this.config.nVocab;
    return Array.from({ length: n }, (_, i) => logits.subarray(i * V, (i + 1) * V));
  }

  /** A decode step of one token per sequence around `run` (page preparation before, publishing after). */
  private async stepEach<T>(seqs: Sequence[], tokens: number[], run: (batch: Batch) => Promise<T>): Promise<T> {
    this.assertAlive();
    const cache = this.kvCache;
    if (cache) for (const s of seqs) if (s.kv instanceof PagedSequenceKV) await cache.prepareWrite(s.kv, s.length + 1);
    const out = await run({
      tokens: Int32Array.from(tokens),
      positions: Int32Array.from(seqs, (s) => s.length),
      seqs: seqs.map((s, i) => ({ kv: s.kv, row: i, n: 1, pos: s.length, retrieval: s.retrieval ?? undefined })),
      logitRows: seqs.map((_, i) => i),
    });
    seqs.forEach((s, i) => s.tokens.push(tokens[i]));
    if (cache) for (const s of seqs) if (s.kv instanceof PagedSequenceKV) cache.publish(s.kv, s.tokens);
    return out;
  }

  /**
   * How generate picks tokens where the logits live (null: read them back and use the host Sampler):
   * the backend's argmax when greedy, its sample otherwise, drawing each token's random number from
   * `uniforms` — a generator seeded as the Sampler's, so both paths see the same stream.
   */
  private devicePick(opts: SamplingOptions, uniforms: Rng): ((logits: Act) => Promise<Int32Array>) | null {
    const b = this.backend;
    const temperature = opts.temperature ?? 0;
    if (temperature <= 0) return b.argmax ? (x) => b.argmax!(x) : null;
    if (!b.sample) return null;
    const o = { temperature, topK: opts.topK ?? 0, topP: opts.topP ?? 1 };
    return (x) => b.sample!(x, o, Float32Array.of(uniforms.uniform()));
  }

  /**
   * Generates after a prefill: `logits` are those returned by the last prefill/decode of `seq`.
   * Yields tokens with the text they complete.
   */
  async *generate(seq: Sequence, logits: Float32Array, opts: GenerateOptions = {}): AsyncGenerator<GenerateChunk, GenerateResult> {
    const ts = new TokenStream(this.tokenizer, opts);
    // Tokens after the first are picked on the device when the backend can (only the token ids come
    // back); the generator stays in step with the Sampler's (one number per sampled token).
    const pick = this.devicePick(opts, ts.uniforms);
    let picked = -1;
    let cur: Float32Array = logits;
    while (!ts.full) {
      if (opts.signal?.aborted) {
        ts.cancel();
        break;
      }
      const r = ts.push(picked >= 0 ? picked : ts.sample(cur));
      if (r.chunk) yield r.chunk;
      if (r.stop) break;
      if (seq.length + 1 > seq.kv.capacity) {
        ts.outOfContext();
        break;
      }
      if (pick) picked = (await this.stepEach([seq], [ts.last], (batch) => this.model.forwardPick(batch, pick)))[0];
      else [cur] = await this.decodeStep([seq], [ts.last]);
    }
    const tail = ts.flush();
    if (tail) yield tail;
    return ts.result();
  }

  /** Finishes persisting the KV cache, then releases everything (prefer it to dispose at the end of a run). */
  async close(): Promise<void> {
    if (this.disposed) return;
    await this.kvCache?.close();
    this.dispose();
  }

  /** Releases the backend at once (pages still being persisted are dropped; the store stays consistent). */
  dispose(): void {
    if (!this.disposed) {
      this.disposed = true;
      this.kvCache?.dispose();
      this.backend.dispose();
    }
  }

  private assertAlive(): void {
    if (this.disposed) throw new Error('engine was disposed');
  }
}

const MiB = 2 ** 20;
const GiB = 2 ** 30;

/** The paged KV cache the options ask for, or null for contiguous caches. */
function createKVCache(backend: Backend, config: TransformerConfig, file: GGUFFile, opts: EngineOptions, ctx: number): KVCacheManager | null {
  const k = opts.kv ?? {};
  const paging = k.paging ?? 'auto';
  if (paging === 'off' || (paging === 'auto' && !backend.createKVPool)) return null;
  const { nLayers, nKVHeads, headDim } = config;
  const dtype = k.dtype ?? 'f16';
  const storage = k.storage ?? 'f16';
  const pageBytes = 2 * nLayers * PAGE_SIZE * nKVHeads * headDim * 2;
  // Default budget: four contexts' worth of KV at 4 bytes a value (room for the prefix cache), ≤ ¼ of RAM.
  const memoryBytes = k.memoryBytes ?? Math.floor(Math.min(totalmem() / 4, Math.max(256 * MiB, 4 * ctx * 2 * nLayers * nKVHeads * headDim * 4)));
  const poolOpts = { nLayers, nKVHeads, headDim, pageSize: PAGE_SIZE, nPages: Math.max(1, Math.floor(memoryBytes / pageBytes)), dtype, maxBytes: memoryBytes };
  const pool = paging === 'host' || !backend.createKVPool ? new HostKVPool(poolOpts) : backend.createKVPool(poolOpts);
  if (pool.nPages < 1) {
    pool.dispose();
    throw new UserError(`the KV memory budget of ${(memoryBytes / MiB).toFixed(1)} MiB is smaller than one page of ${PAGE_SIZE} tokens for this model; raise it (--kv-memory)`);
  }
  const fingerprint: ModelFingerprint = modelFingerprint({
    modelPath: opts.model,
    dataOffset: file.dataOffset,
    rope: config.rope,
    nLayers,
    nKVHeads,
    headDim,
    kvDtype: dtype,
    storage,
    pageSize: PAGE_SIZE,
  });
  const seen = new Set<string>();
  const onWarning =
    k.onWarning ??
    ((m: string) => {
      if (seen.has(m)) return;
      seen.add(m);
      console.error(m);
    });
  try {
    return new KVCacheManager(pool, {
      pool,
      fingerprint,
      hostBytes: k.hostBytes ?? Math.floor(Math.min(2 * GiB, totalmem() / 8)),
      disk: k.cacheDir
        ? {
            root: k.cacheDir,
            capBytes: k.maxDiskBytes ?? 16 * GiB,
            codec: storage,
            hardLimitBytes: k.diskHardLimitBytes,
            describe: { model: opts.model, arch: config.arch, backend: backend.info.name },
          }
        : undefined,
      prefixCaching: k.prefixCaching,
      onWarning,
    });
  } catch (e) {
    pool.dispose();
    throw e;
  }
}

/**
 * One generation's token-by-token state: sampling (Sampler, and the uniform stream a device sampler
 * follows), end-of-generation, streamed UTF-8 text, stop sequences (text held back while it could
 * still become one), the length limit. `Engine.generate` drives one; a batch scheduler drives many,
 * one decode step for all of them (engine/serve/batcher.ts).
 */
export class TokenStream {
  readonly sampler: Sampler;
  readonly uniforms: Rng;
  private readonly decoder;
  private readonly stops: string[];
  private readonly holdBack: number;
  private readonly maxTokens: number;
  private readonly temperature: number;
  private readonly stopAtEog: boolean;
  readonly tokens: number[] = [];
  private text = '';
  private emitted = 0;
  reason: StopReason = 'length';
  /** The last token pushed (the next decode step's input). */
  last = -1;

  constructor(
    private readonly tokenizer: Tokenizer,
    opts: GenerateOptions,
  ) {
    this.sampler = new Sampler(opts);
    this.uniforms = new Rng(opts.seed ?? 0x5eed);
    this.decoder = tokenizer.streamDecoder();
    this.stops = (opts.stop ?? []).filter((x) => x.length > 0);
    this.holdBack = this.stops.reduce((m, x) => Math.max(m, x.length - 1), 0);
    this.maxTokens = opts.maxTokens ?? 256;
    this.temperature = opts.temperature ?? 0;
    this.stopAtEog = opts.stopAtEog ?? true;
  }

  /** Samples a token from logits on the host (keeping the uniform stream in step). */
  sample(logits: Float32Array): number {
    const tok = this.sampler.sample(logits);
    if (this.temperature > 0) this.uniforms.uniform();
    return tok;
  }

  /** Takes the next token: the text it completes (if any) and whether generation ends here. */
  push(tok: number): { chunk: GenerateChunk | null; stop: boolean } {
    if (this.stopAtEog && this.tokenizer.isEndOfGeneration(tok)) {
      this.reason = 'eog';
      return { chunk: null, stop: true };
    }
    this.tokens.push(tok);
    this.last = tok;
    this.text += this.decoder.push(tok);
    const hit = firstStop(this.text, this.stops, this.emitted - this.holdBack);
    if (hit >= 0) {
      this.text = this.text.slice(0, hit);
      const piece = this.text.slice(this.emitted);
      this.emitted = this.text.length;
      this.reason = 'stop';
      return { chunk: piece ? { token: tok, text: piece } : null, stop: true };
    }
    const safe = Math.max(this.emitted, this.text.length - this.holdBack);
    const piece = this.text.slice(this.emitted, safe);
    this.emitted = safe;
    return { chunk: { token: tok, text: piece }, stop: this.tokens.length >= this.maxTokens };
  }

  /** The length limit is reached (maxTokens 0: before any token). */
  get full(): boolean {
    return this.tokens.length >= this.maxTokens;
  }

  cancel(): void {
    this.reason = 'cancelled';
  }
  outOfContext(): void {
    this.reason = 'context';
  }

  /** The held-back text at the end (none after a stop sequence). */
  flush(): GenerateChunk | null {
    if (this.reason === 'stop') return null;
    this.text += this.decoder.flush();
    if (this.text.length <= this.emitted) return null;
    const piece = this.text.slice(this.emitted);
    this.emitted = this.text.length;
    return { token: -1, text: piece };
  }

  result(): GenerateResult {
    return { tokens: this.tokens, text: this.text, stopReason: this.reason };
  }
}

function firstStop(text: string, stops: string[], from: number): number {
  let best = -1;
  for (const s of stops) {
    const i = text.indexOf(s, Math.max(0, from));
    if (i >= 0 && (best < 0 || i < best)) best = i;
  }
  return best;
}

function abortError(): Error {
  const e = new Error('cancelled');
  e.name = 'AbortError';
  return e;
}

export async function createBackend(choice: BackendChoice, opts: { threads?: number; allowSoftwareGpu?: boolean } = {}): Promise<Backend> {
  switch (choice) {
    case 'reference':
      return new ReferenceBackend();
    case 'cpu': {
      const { createCpuBackend } = await import('./backends/cpu/index.js');
      return createCpuBackend({ threads: opts.threads ?? availableParallelism() });
    }
    case 'webgpu': {
      const { createWebGPUBackend } = await import('./backends/webgpu/index.js');
      return createWebGPUBackend({ allowSoftware: opts.allowSoftwareGpu ?? true });
    }
    case 'auto': {
      try {
        const { createWebGPUBackend } = await import('./backends/webgpu/index.js');
        return await createWebGPUBackend({ allowSoftware: false });
      } catch {
        // No hardware adapter (or Dawn unavailable): the CPU backend is the right choice here.
      }
      return createBackend('cpu', opts);
    }
    default:
      throw new UserError(`unknown backend "${String(choice)}" (use auto, cpu, webgpu or reference)`);
  }
}

/** The id a model's sparse config is stored under: the model file alone (not its KV layout). */
export function sparseFingerprint(modelPath: string, file: GGUFFile, config: TransformerConfig): string {
  return modelFingerprint({ modelPath, dataOffset: file.dataOffset, rope: config.rope, nLayers: config.nLayers, nKVHeads: config.nKVHeads, headDim: config.headDim, kvDtype: 'f16', storage: 'f16', pageSize: PAGE_SIZE }).id;
}

/** A model's sparse config: the one `repokv calibrate` stored under `cacheDir`, else the default. */
export function storedSparseConfig(modelPath: string, file: GGUFFile, config: TransformerConfig, cacheDir?: string): SparseModelConfig {
  const fp = sparseFingerprint(modelPath, file, config);
  return cacheDir ? loadSparseConfig(cacheDir, fp, config.nLayers, config.nHeads) : defaultSparseConfig(fp, config.nLayers, config.nHeads);
}

/**
 * The sparse-prefill config of an engine, or null when prefill always stays dense: sparse off, a
 * backend without sparse attention, or a context size below the threshold. Enables the backend's
 * sparse path (the CPU backend then keeps attention outside its step graphs).
 */
function sparseConfigFor(opts: EngineOptions, file: GGUFFile, config: TransformerConfig, backend: Backend, ctx: number): SparseModelConfig | null {
  const o = opts.sparse ?? {};
  if (o.mode === 'off' || !backend.sparse) return null;
  let cfg = o.config ?? storedSparseConfig(opts.model, file, config, opts.kv?.cacheDir);
  if (cfg.heads.length !== config.nLayers || cfg.heads.some((l) => l.length !== config.nHeads)) {
    throw new UserError(`the sparse-prefill config describes ${cfg.heads.length} layers of ${cfg.heads[0]?.length ?? 0} heads, the model has ${config.nLayers} of ${config.nHeads}; run \`repokv calibrate\` for this model`);
  }
  if (o.threshold !== undefined) cfg = { ...cfg, threshold: o.threshold };
  // Strictly above: a context that merely reaches the threshold gains little (published experience:
  // dense wins below ~32K), and on the CPU backend sparse mode keeps attention outside the step graphs
  // for every step (README: the decode cost of that), so a 32K-context model stays on the fast path.
  if (ctx <= cfg.threshold) return null;
  backend.enableSparse?.();
  return cfg;
}

/** dst.push(...src.slice(0, n)) without spreading (a 128K-token spread overflows the call stack). */
function appendAll(dst: number[], src: ArrayLike<number>, n = src.length): void {
  for (let i = 0; i < n; i++) dst.push(src[i]);
}
