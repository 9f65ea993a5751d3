// The small interface every compute backend implements (reference TypeScript, CPU through
// onnxruntime-node, WebGPU through Dawn). The transformer (engine/model/transformer.ts) is written once
// against it: llama, qwen2 and qwen3 differ only in which of these ops they call.
//
// Conventions
// - Activations are row-major 2-D: [rows, cols]; a batch's rows are the tokens of all its sequences,
//   concatenated. `Act` is an opaque handle owned by the backend (a GPU buffer, a Float32Array, ...).
// - Weights are uploaded once from the GGUF bytes; the backend picks its layout (repack, quantize for
//   MatMulNBits, keep ggml blocks for WGSL dequant-in-kernel). Matrices follow ggml: a weight with
//   dims [k, n] (ne0 = k contiguous) maps k inputs to n outputs, i.e. y = x · Wᵀ.
// - Ops are issued in order and may execute lazily (WebGPU records into one command encoder per step);
//   `read` is the only point where the host waits for results.
// - Attention appends the new K/V rows of each sequence into that sequence's KV cache, then attends
//   causally over everything the cache holds for it, returning the output rows (and internally the
//   log-sum-exp of each row: every attention kernel returns (out, lse) so partial results merge).

import type { GGUFTensorInfo } from '../gguf/reader.js';
import type { SparsePattern } from '../attention/sparse/patterns.js';
import type { RetrievalIndexManager } from '../attention/retrieval/manager.js';

export type Act = { readonly rows: number; readonly cols: number };
export type Weight = { readonly name: string; readonly dims: readonly number[] };

export interface RopeConfig {
  /** 'norm': llama's adjacent pairs (x[2i], x[2i+1]); 'neox': qwen's halves (x[i], x[i + d/2]). */
  kind: 'norm' | 'neox';
  /** Rotated dimensions per head (≤ headDim); the rest pass through. */
  dims: number;
  /** Per pair i (dims/2 of them): the angle per position, already including linear/YaRN scaling. */
  invFreq: Float32Array;
  /** YaRN magnitude scale applied to cos and sin (1 without YaRN). */
  mscale: number;
}

/** One sequence's slice of a batch. */
export interface SeqSlice {
  kv: KVCache;
  /** First row of this sequence in the batch's activations. */
  row: number;
  /** Number of new tokens (rows) for this sequence. */
  n: number;
  /** Position of its first new token (= tokens already in its KV cache). */
  pos: number;
  /**
   * Retrieval attention (issue 9, engine/attention/retrieval/): the sequence's index manager. Prefill
   * rows (≥ SPARSE_MIN_ROWS) feed it their queries; shorter slices (decode, short appends) attend
   * through it once the context reaches its threshold. Only given to backends with `sparse: true`.
   */
  retrieval?: RetrievalIndexManager;
}

export interface KVCache {
  /** Tokens whose K/V are stored. */
  readonly length: number;
  /** Capacity in tokens. */
  readonly capacity: number;
  /** Forget everything from token `n` on (retry/edit a turn). */
  truncate(n: number): void;
  /**
   * Marks tokens [0, n) as stored. The model runner calls it after a step whose attention ops wrote
   * rows up to n (backends write K/V rows in `attention` but never move `length` themselves).
   */
  commit(n: number): void;
  free(): void;
}

/**
 * The bookkeeping every contiguous KV cache shares (length, capacity, truncate, commit); backends
 * extend it with their storage and override free() to release it.
 */
export abstract class ContiguousKVCache implements KVCache {
  length = 0;
  constructor(readonly opts: KVCacheOptions) {}
  get capacity(): number {
    return this.opts.capacity;
  }
  truncate(n: number): void {
    if (n < 0 || n > this.length) throw new Error(`cannot truncate a KV cache of ${this.length} tokens to ${n}`);
    this.length = n;
  }
  commit(n: number): void {
    if (n < 0 || n > this.capacity) throw new Error(`cannot commit ${n} tokens to a KV cache of capacity ${this.capacity}`);
    this.length = n;
  }
  free(): void {
    this.length = 0;
  }
}

export interface KVCacheOptions {
  nLayers: number;
  nKVHeads: number;
  headDim: number;
  capacity: number;
}

// ---- Paged KV (optional; engine/kv/README.md is the full contract) ----------------------------------
// A backend that offers `createKVPool` owns a fixed set of KV pages (pageSize tokens each, all layers);
// the engine decides which page holds what (engine/kv/manager.ts: reference counts, prefix cache,
// copy-on-write, tiers). A sequence's KV is then a `PagedKV`: token t lives in page
// pageTable[floor(t / pageSize)] at row t % pageSize. Before a step the engine guarantees that the
// pages covering every row the step writes exist and are private to that sequence; `attention` writes
// the new rows through the page table and attends over rows [0, pos + n) read through it.

export interface KVPoolOptions {
  nLayers: number;
  nKVHeads: number;
  headDim: number;
  /** Tokens per page (64). */
  pageSize: number;
  /** Pages wanted. The pool may offer fewer (`KVPool.nPages`) so as to stay within `maxBytes`. */
  nPages: number;
  /** Element type of the stored K/V: 'f16' rounds each value on write, as llama.cpp's default cache. */
  dtype: 'f32' | 'f16';
  /** Memory budget: the pool never holds more than this many bytes of device (or host) memory. */
  maxBytes?: number;
}

export interface KVPool {
  readonly opts: KVPoolOptions;
  /** Pages offered (ids 0 … nPages−1). */
  readonly nPages: number;
  /** Size of a serialized page: 2 (K,V) × nLayers × pageSize × nKVHeads × headDim × 2 bytes. */
  readonly pageBytes: number;
  /** Memory the pool holds now, in bytes (never above opts.maxBytes). */
  readonly bytes: number;
  /**
   * A page's contents in the fixed serialization: f16 little-endian; for each layer, its pageSize K
   * rows (each nKVHeads × headDim, head-major within the row) then its pageSize V rows. Rows past what
   * was written hold whatever the page held (the engine only trusts rows it wrote or restored).
   * The returned bytes are the caller's (a copy).
   */
  readPage(id: number): Promise<Uint8Array>;
  /** Replaces a page's contents with serialized bytes (as readPage returns them). */
  writePage(id: number, bytes: Uint8Array): void;
  /** dst := src (copy-on-write of a shared page). */
  copyPage(src: number, dst: number): void;
  dispose(): void;
}

/** A sequence's KV held in pool pages (the engine's object; backends only read these fields). */
export interface PagedKV extends KVCache {
  readonly pool: KVPool;
  readonly pageSize: number;
  /** Page of each pageSize-token slice of the sequence; covers at least every row being written. */
  readonly pageTable: Int32Array;
  /** Changes whenever pageTable's contents change (a GPU backend re-uploads its copy then). */
  readonly pageTableVersion: number;
}

export function isPagedKV(kv: KVCache): kv is PagedKV {
  return (kv as Partial<PagedKV>).pool !== undefined && (kv as Partial<PagedKV>).pageTable !== undefined;
}

export interface AttentionParams {
  layer: number;
  nHeads: number;
  nKVHeads: number;
  headDim: number;
  /** Softmax scale, usually 1/sqrt(headDim). */
  scale: number;
  /**
   * Sparse prefill (issue 8, engine/attention/sparse/): one pattern per query head, budgets already
   * scaled for the context. Applies to each sequence slice of at least SPARSE_MIN_ROWS new rows (a
   * prefill chunk); shorter slices (decode) stay dense. Only passed to backends with `sparse: true`.
   */
  sparse?: SparsePattern[];
}

/** A sequence slice with fewer new rows attends densely even when `AttentionParams.sparse` is set. */
export const SPARSE_MIN_ROWS = 64;

/** What sparse attention computed, accumulated by a backend across calls (benchmarks, status lines). */
export interface SparseStats {
  /** Sparse attention calls (layer × sequence slice). */
  calls: number;
  /** (query row, key) pairs attended, and what dense causal attention would have attended. */
  keptEntries: number;
  causalEntries: number;
  /** Time spent estimating indices (last-64-query softmax, top-k, merge), and in sparse attention in all. */
  estimateMs: number;
  attentionMs: number;
  /** Retrieval decode: rows attended through an index, keys they could see, keys scanned by searches, keys attended (static + retrieved), time. */
  retrievalRows?: number;
  retrievalKeys?: number;
  retrievalScanned?: number;
  retrievalAttended?: number;
  retrievalMs?: number;
}

export interface BackendInfo {
  name: 'reference' | 'cpu' | 'webgpu';
  /** Human-readable device ("Intel Xeon (2 threads)", "NVIDIA H200 (Vulkan)", "llvmpipe (software)"). */
  device: string;
  /** Extra facts for `repokv doctor` (features, limits, threads). */
  details: Record<string, unknown>;
}

export interface Backend {
  readonly info: BackendInfo;
  /**
   * Optional: true when `attention` honours `AttentionParams.sparse`; `sparseStats` then accumulates
   * what it computed (reset by the caller).
   */
  readonly sparse?: boolean;
  sparseStats?: SparseStats;
  /**
   * Optional: called once before the first step when the engine may pass sparse patterns (a backend
   * that compiles whole-step graphs must then keep attention outside them, see the CPU backend).
   */
  enableSparse?(): void;

  /** Uploads one tensor (raw GGUF blocks). The backend may repack; the bytes are not kept by the caller. */
  uploadWeight(t: GGUFTensorInfo, bytes: Uint8Array): Weight;

  createKV(opts: KVCacheOptions): KVCache;
  /**
   * Optional: a pool of KV pages in this backend's memory. When present the engine runs every
   * sequence paged (prefix sharing, copy-on-write, tiers, persistence) and `attention` receives
   * `PagedKV` caches; when absent it uses `createKV`'s contiguous caches.
   */
  createKVPool?(opts: KVPoolOptions): KVPool;

  /** Rows of the embedding table for `tokens` (dequantized), as [tokens.length, nEmbd]. */
  embed(table: Weight, tokens: Int32Array): Act;
  /** Row-wise RMSNorm: x / sqrt(mean(x²) + eps) * w, with w of length `groupSize` (= cols unless normalizing per head). */
  rmsNorm(x: Act, w: Weight, eps: number, groupSize?: number): Act;
  /** y = x · Wᵀ (+ bias). W dims [k, n] → y is [rows, n]. */
  matmul(x: Act, w: Weight, bias?: Weight): Act;
  /** Rotates each head of x ([rows, nHeads*headDim]) by its row's position. */
  rope(x: Act, positions: Int32Array, nHeads: number, headDim: number, cfg: RopeConfig): Act;
  /** Appends K/V of each sequence to its cache, then causal GQA attention → [rows, nHeads*headDim]. */
  attention(q: Act, k: Act, v: Act, seqs: SeqSlice[], p: AttentionParams): Act;
  /** silu(gate) * up, elementwise. */
  siluMul(gate: Act, up: Act): Act;
  /** a + b, elementwise. */
  add(a: Act, b: Act): Act;
  /** Keeps only the given rows (e.g. the last token of each sequence before the output head). */
  selectRows(x: Act, rows: number[]): Act;
  /** Waits for the queued work and returns the values. */
  read(x: Act): Promise<Float32Array>;
  /**
   * Optional: greedy sampling where the logits live — the index of each row's largest value (lowest
   * index on ties, as engine/model/sampler.ts argmax), without reading the logits back. The WebGPU
   * backend implements it (kernels/sample.wgsl); callers fall back to read + argmax when absent.
   */
  argmax?(x: Act): Promise<Int32Array>;
  /**
   * Optional: temperature / top-k / top-p sampling where the logits live, one token per row, with
   * engine/model/sampler.ts's semantics for given random numbers (uniforms[i] in [0, 1) for row i:
   * what Sampler would draw from its generator for that token) — candidates by logit, lowest index on
   * ties, cut to topK (0 = off); weights exp((logit − max) / temperature) cut to the shortest prefix
   * whose share reaches topP (≥ 1 = off); the first candidate whose running weight reaches u × their
   * total. temperature ≤ 0 is argmax. Results may differ from the host's only where u × total lies
   * within rounding of a boundary between two candidates. The WebGPU backend implements it
   * (kernels/sample.wgsl); callers fall back to read + Sampler when absent.
   */
  sample?(x: Act, opts: { temperature: number; topK: number; topP: number }, uniforms: Float32Array): Promise<Int32Array>;
  /** Releases an activation early (backends may also recycle at the end of a step). */
  release(x: Act): void;
  /** Ends a step: submits whatever is still queued; everything not read may be recycled. */
  endStep(): void;

  dispose(): void;
}
