// Plain TypeScript reference of every op in the backend interface, f32, written to be trusted at a
// glance (the llm.c habit). The WGSL kernels and the onnxruntime graphs are tested against these, and
// the reference backend (engine/backends/reference) runs a whole model with them.

import type { RopeConfig } from './backend.js';

export function rmsNormRef(x: Float32Array, rows: number, cols: number, w: Float32Array, eps: number, groupSize = cols): Float32Array {
  const y = new Float32Array(rows * cols);
  for (let r = 0; r < rows; r++) {
    for (let g = 0; g < cols; g += groupSize) {
      const o = r * cols + g;
      let ss = 0;
      for (let i = 0; i < groupSize; i++) ss += x[o + i] * x[o + i];
      const inv = 1 / Math.sqrt(ss / groupSize + eps);
      for (let i = 0; i < groupSize; i++) y[o + i] = x[o + i] * inv * w[i];
    }
  }
  return y;
}

/** y[r, j] = Σ_i x[r, i] · w[j, i] (+ bias[j]); w is [n, k] row-major (ggml dims [k, n]). */
export function matmulRef(x: Float32Array, rows: number, k: number, w: Float32Array, n: number, bias?: Float32Array): Float32Array {
  const y = new Float32Array(rows * n);
  for (let r = 0; r < rows; r++) {
    const xo = r * k;
    for (let j = 0; j < n; j++) {
      const wo = j * k;
      let s = 0;
      for (let i = 0; i < k; i++) s += x[xo + i] * w[wo + i];
      y[r * n + j] = s + (bias ? bias[j] : 0);
    }
  }
  return y;
}

export function ropeRef(x: Float32Array, rows: number, nHeads: number, headDim: number, positions: Int32Array, cfg: RopeConfig): Float32Array {
  const y = Float32Array.from(x);
  const half = cfg.dims / 2;
  for (let r = 0; r < rows; r++) {
    const p = positions[r];
    for (let h = 0; h < nHeads; h++) {
      const o = r * nHeads * headDim + h * headDim;
      for (let i = 0; i < half; i++) {
        const theta = p * cfg.invFreq[i];
        const c = Math.cos(theta) * cfg.mscale;
        const s = Math.sin(theta) * cfg.mscale;
        const [a, b] = cfg.kind === 'norm' ? [o + 2 * i, o + 2 * i + 1] : [o + i, o + i + half];
        const x0 = x[a];
        const x1 = x[b];
        y[a] = x0 * c - x1 * s;
        y[b] = x0 * s + x1 * c;
      }
    }
  }
  return y;
}

export function siluMulRef(gate: Float32Array, up: Float32Array): Float32Array {
  const y = new Float32Array(gate.length);
  for (let i = 0; i < y.length; i++) y[i] = (gate[i] / (1 + Math.exp(-gate[i]))) * up[i];
  return y;
}

export function addRef(a: Float32Array, b: Float32Array): Float32Array {
  const y = new Float32Array(a.length);
  for (let i = 0; i < y.length; i++) y[i] = a[i] + b[i];
  return y;
}

export interface AttentionRefInput {
  /** Queries [nQ, nHeads*headDim]. */
  q: Float32Array;
  /** Keys and values [nK, nKVHeads*headDim]. */
  k: Float32Array;
  v: Float32Array;
  nQ: number;
  nK: number;
  nHeads: number;
  nKVHeads: number;
  headDim: number;
  scale: number;
  /** Key index that query 0 sits at; causal: query i sees keys 0 ..= qPos0 + i. */
  qPos0: number;
  /** Optional extra mask: return false to drop key j for query i of head h (sparse patterns). */
  keep?: (h: number, i: number, j: number) => boolean;
  /** Optional rounding of each normalized probability before it weights V (llama.cpp's f16 path). */
  probRound?: (p: number) => number;
}

/**
 * Causal GQA attention. Returns out [nQ, nHeads*headDim] and lse [nHeads, nQ], the natural-log
 * sum of exp(scaled scores) over the attended keys (−Infinity where a row attends nothing).
 */
export function attentionRef(a: AttentionRefInput): { out: Float32Array; lse: Float32Array } {
  const { nQ, nK, nHeads, nKVHeads, headDim: d, scale } = a;
  const group = nHeads / nKVHeads;
  const out = new Float32Array(nQ * nHeads * d);
  const lse = new Float32Array(nHeads * nQ);
  const s = new Float64Array(nK);
  for (let h = 0; h < nHeads; h++) {
    const kh = Math.floor(h / group);
    for (let i = 0; i < nQ; i++) {
      const last = Math.min(nK - 1, a.qPos0 + i);
      let m = -Infinity;
      for (let j = 0; j <= last; j++) {
        if (a.keep && !a.keep(h, i, j)) {
          s[j] = -Infinity;
          continue;
        }
        let dot = 0;
        for (let t = 0; t < d; t++) dot += a.q[i * nHeads * d + h * d + t] * a.k[j * nKVHeads * d + kh * d + t];
        s[j] = dot * scale;
        if (s[j] > m) m = s[j];
      }
      if (m === -Infinity) {
        lse[h * nQ + i] = -Infinity;
        continue;
      }
      let sum = 0;
      for (let j = 0; j <= last; j++) {
        s[j] = s[j] === -Infinity ? 0 : Math.exp(s[j] - m);
        sum += s[j];
      }
      if (a.probRound) for (let j = 0; j <= last; j++) s[j] = a.probRound(s[j] / sum);
      const div = a.probRound ? 1 : sum;
      for (let t = 0; t < d; t++) {
        let acc = 0;
        for (let j = 0; j <= last; j++) acc += s[j] * a.v[j * nKVHeads * d + kh * d + t];
        out[i * nHeads * d + h * d + t] = acc / div;
      }
      lse[h * nQ + i] = m + Math.log(sum);
    }
  }
  return { out, lse };
}

/**
 * Merges two partial attention results over disjoint key sets, exactly: the output is the
 * lse-weighted mix, the lse is log(exp(l1) + exp(l2)). out: [nQ, nHeads*d], lse: [nHeads, nQ].
 */
export function mergeAttentionRef(
  o1: Float32Array,
  l1: Float32Array,
  o2: Float32Array,
  l2: Float32Array,
  nQ: number,
  nHeads: number,
  d: number,
): { out: Float32Array; lse: Float32Array } {
  const out = new Float32Array(o1.length);
  const lse = new Float32Array(l1.length);
  for (let h = 0; h < nHeads; h++) {
    for (let i = 0; i < nQ; i++) {
      const a = l1[h * nQ + i];
      const b = l2[h * nQ + i];
      const m = Math.max(a, b);
      const wa = a === -Infinity ? 0 : Math.exp(a - m);
      const wb = b === -Infinity ? 0 : Math.exp(b - m);
      const tot = wa + wb;
      lse[h * nQ + i] = m === -Infinity ? -Infinity : m + Math.log(tot);
      for (let t = 0; t < d; t++) {
        const idx = i * nHeads * d + h * d + t;
        out[idx] = tot === 0 ? 0 : (o1[idx] * wa + o2[idx] * wb) / tot;
      }
    }
  }
  return { out, lse };
}
