// Token sampling on the host: greedy, temperature, top-k, top-p, with a seeded generator so a given
// seed reproduces a run. Greedy picks the lowest id among equal maxima (as llama.cpp's greedy does).

import { Rng } from './rng.js';

export { Rng };

export interface SamplingOptions {
  /** 0 = greedy. */
  temperature?: number;
  /** 0 = off. */
  topK?: number;
  /** 1 = off. */
  topP?: number;
  seed?: number;
}

export function argmax(logits: Float32Array, offset = 0, n = logits.length - offset): number {
  let best = 0;
  let bv = -Infinity;
  for (let i = 0; i < n; i++) {
    const v = logits[offset + i];
    if (v > bv) {
      bv = v;
      best = i;
    }
  }
  return best;
}

export class Sampler {
  private rng: Rng;
  constructor(readonly opts: SamplingOptions = {}) {
    this.rng = new Rng(opts.seed ?? 0x5eed);
  }

  sample(logits: Float32Array, offset = 0, n = logits.length - offset): number {
    const temp = this.opts.temperature ?? 0;
    if (temp <= 0) return argmax(logits, offset, n);
    const topK = this.opts.topK && this.opts.topK > 0 ? Math.min(this.opts.topK, n) : n;
    const topP = this.opts.topP ?? 1;
    // Candidates sorted by logit, cut to top-k.
    let ids: number[];
    if (topK < n) {
      ids = topKIndices(logits, offset, n, topK);
    } else {
      ids = Array.from({ length: n }, (_, i) => i);
      ids.sort((a, b) => logits[offset + b] - logits[offset + a] || a - b);
    }
    const m = logits[offset + ids[0]];
    const p = ids.map((i) => Math.exp((logits[offset + i] - m) / temp));
    let sum = p.reduce((a, b) => a + b, 0);
    if (topP < 1) {
      let acc = 0;
      let cut = ids.length;
      for (let i = 0; i < ids.length; i++) {
        acc += p[i] / sum;
        if (acc >= topP) {
          cut = i + 1;
          break;
        }
      }
      ids = ids.slice(0, cut);
      p.length = cut;
      sum = p.reduce((a, b) => a + b, 0);
    }
    let r = this.rng.uniform() * sum;
    for (let i = 0; i < ids.length; i++) {
      r -= p[i];
      if (r <= 0) return ids[i];
    }
    return ids[ids.length - 1];
  }
}

/** Indices of the k largest values, largest first (ties: lower index first). */
export function topKIndices(x: Float32Array, offset: number, n: number, k: number): number[] {
  // Small binary min-heap of (value, index).
  const hv = new Float64Array(k);
  const hi = new Int32Array(k);
  let size = 0;
  const less = (a: number, b: number) => hv[a] < hv[b] || (hv[a] === hv[b] && hi[a] > hi[b]);
  const swap = (a: number, b: number) => {
    const tv = hv[a];
    hv[a] = hv[b];
    hv[b] = tv;
    const ti = hi[a];
    hi[a] = hi[b];
    hi[b] = ti;
  };
  const down = (i: number) => {
    for (;;) {
      const l = 2 * i + 1;
      const r = l + 1;
      let m = i;
      if (l < size && less(l, m)) m = l;
      if (r < size && less(r, m)) m = r;
      if (m === i) return;
      swap(i, m);
      i = m;
    }
  };
  for (let i = 0; i < n; i++) {
    const v = x[offset + i];
    if (size < k) {
      hv[size] = v;
      hi[size] = i;
      let c = size++;
      while (c > 0) {
        const p = (c - 1) >> 1;
        if (!less(c, p)) break;
        swap(c, p);
        c = p;
      }
    } else if (v > hv[0]) {
      hv[0] = v;
      hi[0] = i;
      down(0);
    }
  }
  const out = Array.from({ length: size }, (_, j) => j).sort((a, b) => hv[b] - hv[a] || hi[a] - hi[b]);
  return out.map((j) => hi[j]);
}
