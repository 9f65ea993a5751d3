// The CPU backend's KV cache: host memory, head-major. Per layer, K and V are one Float32Array
// [nKVHeads, capacity, headDim], so each KV head's keys are a contiguous [tokens, headDim] slab that
// attention passes to onnxruntime as a zero-copy view (a decode step copies no cache).
//
// The step's graph writes the new rows straight into these views (onnxruntime outputs) and reads the
// past through them (inputs). Values are rounded to f16 in the graph by default (kv: 'f16'), as
// llama.cpp's default f16 cache stores them, and kept in f32 arrays so MLAS reads them directly
// (2× llama.cpp's KV bytes; an f16 store would need a Cast of the whole past per step).

import type { KVCache, KVCacheOptions } from '../../model/backend.js';

export type KVPrecision = 'f16' | 'f32';

export class CpuKVCache implements KVCache {
  length = 0;
  private k: (Float32Array | null)[];
  private v: (Float32Array | null)[];
  private kViews: Float32Array[][] = [];
  private vViews: Float32Array[][] = [];

  constructor(
    readonly opts: KVCacheOptions,
    readonly precision: KVPrecision = 'f16',
  ) {
    this.k = new Array(opts.nLayers).fill(null);
    this.v = new Array(opts.nLayers).fill(null);
  }

  get capacity(): number {
    return this.opts.capacity;
  }

  /** Bytes allocated so far (layers are allocated on first write). */
  get bytes(): number {
    return this.k.reduce((s, a) => s + (a?.byteLength ?? 0), 0) * 2;
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
    this.k.fill(null);
    this.v.fill(null);
    this.kViews = [];
    this.vViews = [];
  }

  private layer(l: number): void {
    if (this.k[l]) return;
    const { nKVHeads: G, capacity: cap, headDim: d } = this.opts;
    const k = new Float32Array(G * cap * d);
    const v = new Float32Array(G * cap * d);
    this.k[l] = k;
    this.v[l] = v;
    this.kViews[l] = Array.from({ length: G }, (_, h) => k.subarray(h * cap * d, (h + 1) * cap * d));
    this.vViews[l] = Array.from({ length: G }, (_, h) => v.subarray(h * cap * d, (h + 1) * cap * d));
  }

  /** Per KV head, the layer's keys as [capacity, headDim] views. */
  keys(l: number): Float32Array[] {
    this.layer(l);
    return this.kViews[l];
  }

  values(l: number): Float32Array[] {
    this.layer(l);
    return this.vViews[l];
  }
}
