// The reference backend: every op is the plain TypeScript function of engine/model/ref-ops.ts, f32
// throughout, weights dequantized at upload. Slow and obviously right: it is the oracle the CPU and
// WebGPU backends are compared with, and it runs the engine anywhere Node runs.

import type { GGUFTensorInfo } from '../../gguf/reader.js';
import { dequantize } from '../../gguf/quant.js';
import { ContiguousKVCache, isPagedKV, type Act, type AttentionParams, type Backend, type BackendInfo, type KVCache, type KVCacheOptions, type KVPool, type KVPoolOptions, type RopeConfig, type SeqSlice, type SparseStats, type Weight, SPARSE_MIN_ROWS } from '../../model/backend.js';
import { tokenMajorSparse } from '../../attention/sparse/attention.js';
import { HostKVPool } from '../../kv/host-pool.js';
import { addRef, attentionRef, matmulRef, rmsNormRef, ropeRef, siluMulRef } from '../../model/ref-ops.js';
import type { GGMLType } from '../../gguf/types.js';
import { roundF16, toVecDotType } from './ggml-numerics.js';

interface RefAct extends Act {
  data: Float32Array;
}
interface RefWeight extends Weight {
  data: Float32Array;
  type: GGMLType;
}

export interface ReferenceOptions {
  /**
   * 'f32': every op in f32 (the plain reference). 'ggml-cpu': additionally round as llama.cpp's CPU
   * build does (activations in the weight's vec_dot_type, f16 KV cache, f16 q and probabilities in
   * attention), so its tokens can be compared with llama.cpp's one for one.
   */
  numerics?: 'f32' | 'ggml-cpu';
  /** With 'ggml-cpu': the KV cache type llama.cpp was given ('f16' is its default). */
  kvType?: 'f16' | 'f32';
}

/** Host-memory KV cache: per layer, K and V as [capacity, nKVHeads*headDim]. */
export class HostKVCache extends ContiguousKVCache {
  readonly k: Float32Array[];
  readonly v: Float32Array[];
  readonly rowSize: number;
  constructor(opts: KVCacheOptions) {
    super(opts);
    this.rowSize = opts.nKVHeads * opts.headDim;
    this.k = Array.from({ length: opts.nLayers }, () => new Float32Array(opts.capacity * this.rowSize));
    this.v = Array.from({ length: opts.nLayers }, () => new Float32Array(opts.capacity * this.rowSize));
  }
}

export class ReferenceBackend implements Backend {
  readonly info: BackendInfo;
  /** Honours AttentionParams.sparse (engine/attention/sparse/ reference path). */
  readonly sparse = true;
  sparseStats: SparseStats = { calls: 0, keptEntries: 0, causalEntries: 0, estimateMs: 0, attentionMs: 0 };
  private readonly ggml: boolean;
  private readonly kvF16: boolean;

  constructor(opts: ReferenceOptions = {}) {
    this.ggml = opts.numerics === 'ggml-cpu';
    this.kvF16 = this.ggml && (opts.kvType ?? 'f16') === 'f16';
    this.info = { name: 'reference', device: 'TypeScript reference (single thread)', details: { numerics: opts.numerics ?? 'f32' } };
  }

  uploadWeight(t: GGUFTensorInfo, bytes: Uint8Array): Weight {
    const w: RefWeight = { name: t.name, dims: t.dims, type: t.type, data: dequantize(t.type, bytes, t.nElements) };
    return w;
  }

  createKV(opts: KVCacheOptions): KVCache {
    return new HostKVCache(opts);
  }

  /** Pages in host memory (engine/kv/host-pool.ts); its dtype decides the f16 rounding of stored K/V. */
  createKVPool(opts: KVPoolOptions): KVPool {
    return new HostKVPool(opts);
  }

  embed(table: Weight, tokens: Int32Array): Act {
    const w = table as RefWeight;
    const d = w.dims[0];
    const out = new Float32Array(tokens.length * d);
    for (let i = 0; i < tokens.length; i++) {
      const t = tokens[i];
      if (t < 0 || t >= w.dims[1]) throw new Error(`token id ${t} is outside the vocabulary of ${w.dims[1]}`);
      out.set(w.data.subarray(t * d, (t + 1) * d), i * d);
    }
    return act(tokens.length, d, out);
  }

  rmsNorm(x: Act, w: Weight, eps: number, groupSize?: number): Act {
    const a = x as RefAct;
    return act(a.rows, a.cols, rmsNormRef(a.data, a.rows, a.cols, (w as RefWeight).data, eps, groupSize ?? a.cols));
  }

  matmul(x: Act, w: Weight, bias?: Weight): Act {
    const a = x as RefAct;
    const W = w as RefWeight;
    const [k, n] = W.dims;
    if (a.cols !== k) throw new Error(`matmul: ${a.cols} input columns, weight ${W.name} takes ${k}`);
    let xs = a.data;
    if (this.ggml) {
      xs = Float32Array.from(xs);
      toVecDotType(xs, a.rows, k, W.type);
    }
    return act(a.rows, n, matmulRef(xs, a.rows, k, W.data, n, bias ? (bias as RefWeight).data : undefined));
  }

  rope(x: Act, positions: Int32Array, nHeads: number, headDim: number, cfg: RopeConfig): Act {
    const a = x as RefAct;
    return act(a.rows, a.cols, ropeRef(a.data, a.rows, nHeads, headDim, positions, cfg));
  }

  attention(q: Act, k: Act, v: Act, seqs: SeqSlice[], p: AttentionParams): Act {
    const Q = q as RefAct;
    const K = k as RefAct;
    const V = v as RefAct;
    const out = new Float32Array(Q.rows * Q.cols);
    for (const s of seqs) {
      if (isPagedKV(s.kv)) {
        out.set(this.pagedAttention(Q, K, V, s, p), s.row * Q.cols);
        continue;
      }
      const kv = s.kv as HostKVCache;
      const rs = kv.rowSize;
      if (s.pos + s.n > kv.capacity) throw new Error(`sequence needs ${s.pos + s.n} tokens of KV, capacity is ${kv.capacity}`);
      kv.k[p.layer].set(K.data.subarray(s.row * rs, (s.row + s.n) * rs), s.pos * rs);
      kv.v[p.layer].set(V.data.subarray(s.row * rs, (s.row + s.n) * rs), s.pos * rs);
      if (this.kvF16) {
        for (const c of [kv.k[p.layer], kv.v[p.layer]]) for (let i = s.pos * rs; i < (s.pos + s.n) * rs; i++) c[i] = roundF16(c[i]);
      }
      let qs = Q.data.subarray(s.row * Q.cols, (s.row + s.n) * Q.cols);
      if (this.kvF16) qs = qs.map(roundF16);
      const nK = s.pos + s.n;
      const keep = this.sparseKeep(qs, kv.k[p.layer], nK, s, p);
      const r = attentionRef({
        keep,
        q: qs,
        k: kv.k[p.layer].subarray(0, nK * rs),
        v: kv.v[p.layer].subarray(0, nK * rs),
        nQ: s.n,
        nK,
        nHeads: p.nHeads,
        nKVHeads: p.nKVHeads,
        headDim: p.headDim,
        scale: p.scale,
        qPos0: s.pos,
        probRound: this.kvF16 ? roundF16 : undefined,
      });
      out.set(r.out, s.row * Q.cols);
    }
    return act(Q.rows, Q.cols, out);
  }

  /** Sparse prefill (issue 8): the kept entries of a slice of ≥ SPARSE_MIN_ROWS rows, else undefined (dense). */
  private sparseKeep(q: Float32Array, k: Float32Array, nK: number, s: SeqSlice, p: AttentionParams): ((h: number, i: number, j: number) => boolean) | undefined {
    if (!p.sparse || s.n < SPARSE_MIN_ROWS) return undefined;
    const t0 = performance.now();
    const r = tokenMajorSparse({ q, k, nQ: s.n, nK, qPos0: s.pos, nHeads: p.nHeads, nKVHeads: p.nKVHeads, headDim: p.headDim, scale: p.scale }, p.sparse);
    const st = this.sparseStats;
    st.calls++;
    st.keptEntries += r.kept;
    st.causalEntries += r.causal;
    st.estimateMs += performance.now() - t0;
    return r.keep;
  }

  /** Writes the new rows through the page table, then the same attention over the gathered rows. */
  private pagedAttention(Q: RefAct, K: RefAct, V: RefAct, s: SeqSlice, p: AttentionParams): Float32Array {
    if (!isPagedKV(s.kv)) throw new Error('unreachable');
    const kv = s.kv;
    const pool = kv.pool;
    if (!(pool instanceof HostKVPool)) throw new Error('attention: paged KV of another backend');
    const nK = s.pos + s.n;
    if (Math.ceil(nK / kv.pageSize) > kv.pageTable.length) throw new Error(`sequence needs ${nK} tokens of KV but has pages for ${kv.pageTable.length * kv.pageSize}`);
    pool.writeRows(kv.pageTable, p.layer, K.data, V.data, s.row, s.n, s.pos);
    const { k, v } = pool.tokenMajor(kv.pageTable, p.layer, nK);
    let qs = Q.data.subarray(s.row * Q.cols, (s.row + s.n) * Q.cols);
    if (this.kvF16) qs = qs.map(roundF16);
    const keep = this.sparseKeep(qs, k, nK, s, p);
    return attentionRef({
      keep,
      q: qs,
      k,
      v,
      nQ: s.n,
      nK,
      nHeads: p.nHeads,
      nKVHeads: p.nKVHeads,
      headDim: p.headDim,
      scale: p.scale,
      qPos0: s.pos,
      probRound: this.kvF16 ? roundF16 : undefined,
    }).out;
  }

  siluMul(gate: Act, up: Act): Act {
    const g = gate as RefAct;
    return act(g.rows, g.cols, siluMulRef(g.data, (up as RefAct).data));
  }

  add(a: Act, b: Act): Act {
    const x = a as RefAct;
    return act(x.rows, x.cols, addRef(x.data, (b as RefAct).data));
  }

  selectRows(x: Act, rows: number[]): Act {
    const a = x as RefAct;
    const out = new Float32Array(rows.length * a.cols);
    rows.forEach((r, i) => out.set(a.data.subarray(r * a.cols, (r + 1) * a.cols), i * a.cols));
    return act(rows.length, a.cols, out);
  }

  async read(x: Act): Promise<Float32Array> {
    return (x as RefAct).data;
  }

  release(): void {}
  endStep(): void {}
  dispose(): void {}
}

function act(rows: number, cols: number, data: Float32Array): RefAct {
  return { rows, cols, data };
}
