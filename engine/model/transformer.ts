// The decoder-only transformer of llama, qwen2 and qwen3, written once against the Backend interface.
// The three architectures differ only in switches of TransformerConfig: Qwen2 adds q/k/v biases,
// Qwen3 adds per-head RMSNorm on q and k, Qwen pairs RoPE dimensions by halves (neox) where Llama pairs
// neighbours. Mirrors llama.cpp's graph (llm_build_llama / llm_build_qwen2 / llm_build_qwen3).

import type { GGUFFile } from '../gguf/reader.js';
import type { SparsePattern } from '../attention/sparse/patterns.js';
import { UserError } from '../errors.js';
import type { Act, Backend, KVCache, RopeConfig, SeqSlice, Weight } from './backend.js';

export interface TransformerConfig {
  arch: 'llama' | 'qwen2' | 'qwen3';
  nLayers: number;
  nEmbd: number;
  nHeads: number;
  nKVHeads: number;
  headDim: number;
  nFF: number;
  nVocab: number;
  contextLength: number;
  normEps: number;
  hasQKVBias: boolean;
  hasQKNorm: boolean;
  tiedEmbeddings: boolean;
  rope: RopeConfig;
}

interface LayerWeights {
  attnNorm: Weight;
  wq: Weight;
  wk: Weight;
  wv: Weight;
  wo: Weight;
  bq?: Weight;
  bk?: Weight;
  bv?: Weight;
  qNorm?: Weight;
  kNorm?: Weight;
  ffnNorm: Weight;
  gate: Weight;
  up: Weight;
  down: Weight;
}

/** One forward step: new tokens of one or more sequences, concatenated. */
export interface Batch {
  tokens: Int32Array;
  positions: Int32Array;
  seqs: SeqSlice[];
  /** Batch rows whose logits are wanted (e.g. the last row of each sequence). */
  logitRows: number[];
  /** Sparse prefill: the patterns of layer l's query heads, or null for a dense layer (issue 8). */
  sparse?: (layer: number) => SparsePattern[] | null;
}

export class Transformer {
  private layers: LayerWeights[] = [];
  private tokEmbd!: Weight;
  private outNorm!: Weight;
  private output!: Weight;

  constructor(
    readonly cfg: TransformerConfig,
    readonly backend: Backend,
  ) {}

  /** Uploads every weight the architecture uses, one tensor at a time (no whole-file buffer). */
  load(file: GGUFFile, onProgress?: (done: number, total: number) => void): void {
    const c = this.cfg;
    const total = file.tensors.reduce((s, t) => s + t.nBytes, 0);
    let done = 0;
    const up = (name: string, optional = false): Weight | undefined => {
      const t = file.tensor(name);
      if (!t) {
        if (optional) return undefined;
        throw new UserError(`${file.path}: tensor "${name}" is missing; the file is not a complete ${c.arch} model`);
      }
      const w = this.backend.uploadWeight(t, file.readTensorBytes(t));
      done += t.nBytes;
      onProgress?.(done, total);
      return w;
    };
    const must = (name: string): Weight => up(name)!;
    this.tokEmbd = must('token_embd.weight');
    for (let l = 0; l < c.nLayers; l++) {
      const p = `blk.${l}.`;
      this.layers.push({
        attnNorm: must(p + 'attn_norm.weight'),
        wq: must(p + 'attn_q.weight'),
        wk: must(p + 'attn_k.weight'),
        wv: must(p + 'attn_v.weight'),
        wo: must(p + 'attn_output.weight'),
        bq: c.hasQKVBias ? must(p + 'attn_q.bias') : undefined,
        bk: c.hasQKVBias ? must(p + 'attn_k.bias') : undefined,
        bv: c.hasQKVBias ? must(p + 'attn_v.bias') : undefined,
        qNorm: c.hasQKNorm ? must(p + 'attn_q_norm.weight') : undefined,
        kNorm: c.hasQKNorm ? must(p + 'attn_k_norm.weight') : undefined,
        ffnNorm: must(p + 'ffn_norm.weight'),
        gate: must(p + 'ffn_gate.weight'),
        up: must(p + 'ffn_up.weight'),
        down: must(p + 'ffn_down.weight'),
      });
    }
    this.outNorm = must('output_norm.weight');
    this.output = c.tiedEmbeddings ? this.tokEmbd : (up('output.weight', true) ?? this.tokEmbd);
  }

  createKV(capacity: number): KVCache {
    const c = this.cfg;
    return this.backend.createKV({ nLayers: c.nLayers, nKVHeads: c.nKVHeads, headDim: c.headDim, capacity });
  }

  /** Runs one step and returns the logits of `batch.logitRows`, [logitRows.length, nVocab] row-major. */
  async forward(batch: Batch): Promise<Float32Array> {
    const logits = this.run(batch);
    const out = logits ? await this.backend.read(logits) : new Float32Array(0);
    this.finish(batch);
    return out;
  }

  /**
   * Runs one step and returns one token per logit row, picked where the logits live by `pick` (e.g.
   * the backend's argmax or sample): the logits are never read back.
   */
  async forwardPick(batch: Batch, pick: (logits: Act) => Promise<Int32Array>): Promise<Int32Array> {
    if (batch.logitRows.length === 0) throw new Error('forwardPick needs logit rows');
    const ids = await pick(this.run(batch)!);
    this.finish(batch);
    return ids;
  }

  private finish(batch: Batch): void {
    this.backend.endStep();
    for (const s of batch.seqs) s.kv.commit(s.pos + s.n);
  }

  /** Records one step; returns the logits activation (null for an intermediate prefill chunk). */
  private run(batch: Batch): Act | null {
    const c = this.cfg;
    const b = this.backend;
    const qDim = c.nHeads * c.headDim;
    const attn = { nHeads: c.nHeads, nKVHeads: c.nKVHeads, headDim: c.headDim, scale: 1 / Math.sqrt(c.headDim), layer: 0 };
    let x: Act = b.embed(this.tokEmbd, batch.tokens);
    for (let l = 0; l < c.nLayers; l++) {
      const L = this.layers[l];
      const h = b.rmsNorm(x, L.attnNorm, c.normEps);
      let q = b.matmul(h, L.wq, L.bq);
      let k = b.matmul(h, L.wk, L.bk);
      const v = b.matmul(h, L.wv, L.bv);
      b.release(h);
      if (L.qNorm && L.kNorm) {
        q = swap(b, q, b.rmsNorm(q, L.qNorm, c.normEps, c.headDim));
        k = swap(b, k, b.rmsNorm(k, L.kNorm, c.normEps, c.headDim));
      }
      q = swap(b, q, b.rope(q, batch.positions, c.nHeads, c.headDim, c.rope));
      k = swap(b, k, b.rope(k, batch.positions, c.nKVHeads, c.headDim, c.rope));
      attn.layer = l;
      const sp = batch.sparse?.(l) ?? undefined;
      const a = b.attention(q, k, v, batch.seqs, sp ? { ...attn, sparse: sp } : attn);
      if (a.cols !== qDim) throw new Error(`attention returned ${a.cols} columns, expected ${qDim}`);
      b.release(q);
      b.release(k);
      b.release(v);
      const o = b.matmul(a, L.wo);
      b.release(a);
      x = swap(b, x, b.add(x, o));
      b.release(o);
      const h2 = b.rmsNorm(x, L.ffnNorm, c.normEps);
      const g = b.matmul(h2, L.gate);
      const u = b.matmul(h2, L.up);
      b.release(h2);
      const gu = b.siluMul(g, u);
      b.release(g);
      b.release(u);
      const f = b.matmul(gu, L.down);
      b.release(gu);
      x = swap(b, x, b.add(x, f));
      b.release(f);
    }
    if (batch.logitRows.length === 0) {
      // An intermediate prefill chunk: only the KV cache is wanted.
      b.release(x);
      return null;
    }
    const sel = b.selectRows(x, batch.logitRows);
    b.release(x);
    const n = b.rmsNorm(sel, this.outNorm, c.normEps);
    b.release(sel);
    const logits = b.matmul(n, this.output);
    b.release(n);
    return logits;
  }
}

function swap(b: Backend, old: Act, next: Act): Act {
  b.release(old);
  return next;
}
