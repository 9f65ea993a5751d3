// Sparse prefill as an AttentionPlugin of the fidelity harness, on the reference backend: every
// attention call of a prefill step (≥ minRows new rows for a sequence) is recomputed with the sparse
// reference (per-head patterns, online estimation from that chunk's last 64 queries against all its
// keys, the cached prefix included) and its rows replace the dense ones, so the model really runs
// sparse; the dense lse of the same call gives the attention recall per [layer][head].
//
// It wraps the backend's `attention` method from outside (the reference backend has no sparse hook,
// and the CPU/WebGPU backends are being edited elsewhere): the wrapped call still writes K/V and
// returns dense rows, then this reads the layer's keys back from the host cache. Reference backend in
// f32 only; the real integration is a sparse option on Backend.attention (see the issue 8 report).

import { isPagedKV, type Act, type AttentionParams, type SeqSlice } from '../../model/backend.js';
import { HostKVCache } from '../../backends/reference/index.js';
import { HostKVPool } from '../../kv/host-pool.js';
import type { Engine } from '../../engine.js';
import type { AttentionPlugin, RecallReport } from '../../fidelity/methods.js';
import { attentionRecall, buildGroupIndex, denseAttentionRef, sparseAttentionRef, type HeadGroupInput } from './attention.js';
import { indexDensity, type SparsePattern } from './patterns.js';

export interface SparsePluginOptions {
  /** Patterns of layer `layer`'s query heads for a context of nK keys (e.g. from a SparseModelConfig). */
  patterns: (layer: number, nHeads: number, nK: number) => SparsePattern[] | null;
  /** Sparse only for calls with at least this many new rows of one sequence (default 64: not decode). */
  minRows?: number;
  name?: string;
}

interface HostAct extends Act {
  data: Float32Array;
}

/** The reference-path sparse prefill plugin; `recall()` reports the last install's accumulated recall. */
export class SparsePrefillPlugin implements AttentionPlugin {
  readonly name: string;
  readonly info: Record<string, unknown>;
  private sum: number[][] = [];
  private count: number[][] = [];
  private kept = 0;
  private causal = 0;

  constructor(private readonly opts: SparsePluginOptions) {
    this.name = opts.name ?? 'sparse';
    this.info = { sparse: 'MInference patterns, reference path', minRows: opts.minRows ?? 64 };
  }

  install(engine: Engine): void {
    const be = engine.backend;
    if (be.info.name !== 'reference') throw new Error(`The sparse-prefill plugin runs on the reference backend only (got ${be.info.name}); pass --backend reference.`);
    this.sum = [];
    this.count = [];
    this.kept = 0;
    this.causal = 0;
    const dense = be.attention.bind(be);
    be.attention = (q: Act, k: Act, v: Act, seqs: SeqSlice[], p: AttentionParams): Act => {
      const out = dense(q, k, v, seqs, p) as HostAct;
      for (const s of seqs) if (s.n >= (this.opts.minRows ?? 64)) this.sparse((q as HostAct).data, out.data, s, p);
      return out;
    };
  }

  private sparse(qAll: Float32Array, out: Float32Array, s: SeqSlice, p: AttentionParams): void {
    const nK = s.pos + s.n;
    const patterns = this.opts.patterns(p.layer, p.nHeads, nK);
    if (!patterns) return;
    const { nHeads, nKVHeads: G, headDim: d } = p;
    const cols = nHeads * d;
    let tm: Float32Array[];
    if (isPagedKV(s.kv)) {
      if (!(s.kv.pool instanceof HostKVPool)) throw new Error('sparse plugin: paged KV of another backend');
      const r = s.kv.pool.tokenMajor(s.kv.pageTable, p.layer, nK);
      tm = [r.k, r.v];
    } else {
      const c = s.kv as HostKVCache;
      tm = [c.k[p.layer], c.v[p.layer]];
    }
    const grp = nHeads / G;
    for (let g = 0; g < G; g++) {
      const [k, v] = tm.map((x) => {
        const h = new Float32Array(nK * d);
        for (let j = 0; j < nK; j++) h.set(x.subarray(j * G * d + g * d, j * G * d + (g + 1) * d), j * d);
        return h;
      });
      const q = new Float32Array(s.n * grp * d);
      for (let i = 0; i < s.n; i++) q.set(qAll.subarray((s.row + i) * cols + g * grp * d, (s.row + i) * cols + (g + 1) * grp * d), i * grp * d);
      const a: HeadGroupInput = { q, k, v, nQ: s.n, nK, qPos0: s.pos, nHeads: grp, headDim: d, scale: p.scale };
      const idx = buildGroupIndex(a, patterns.slice(g * grp, (g + 1) * grp));
      const sp = sparseAttentionRef(a, idx);
      const rec = attentionRecall(sp.lse, denseAttentionRef(a).lse);
      for (let i = 0; i < s.n; i++) out.set(sp.out.subarray(i * grp * d, (i + 1) * grp * d), (s.row + i) * cols + g * grp * d);
      for (let h = 0; h < grp; h++) {
        const head = g * grp + h;
        (this.sum[p.layer] ??= new Array(nHeads).fill(0))[head] += rec.subarray(h * s.n, (h + 1) * s.n).reduce((x, y) => x + y, 0);
        (this.count[p.layer] ??= new Array(nHeads).fill(0))[head] += s.n;
        const causal = s.n * s.pos + (s.n * (s.n + 1)) / 2;
        this.kept += indexDensity(idx[h]) * causal;
        this.causal += causal;
      }
    }
  }

  /** Mean recall per [layer][head] over every sparse row since install; null before any. */
  recall(): RecallReport | null {
    if (!this.sum.length) return null;
    const perLayerHead = this.sum.map((l, i) => (l ?? []).map((x, h) => (this.count[i][h] ? x / this.count[i][h] : 1)));
    const flat = perLayerHead.flat();
    return { perLayerHead, min: Math.min(...flat), mean: flat.reduce((x, y) => x + y, 0) / flat.length };
  }

  /** Fraction of causal (query, key) entries the sparse rows computed. */
  density(): number {
    return this.causal ? this.kept / this.causal : 1;
  }
}
