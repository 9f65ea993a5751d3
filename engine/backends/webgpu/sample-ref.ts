// The plain TypeScript reference of kernels/sample.wgsl `sample`: the host Sampler's pick
// (engine/model/sampler.ts) with its random number passed in, plus how close that pick was to a tie
// (a boundary the f32 GPU sums could fall on the other side of). test/webgpu/sample.test.ts pins it to
// Sampler.sample for the same random stream and the kernel to it.

export interface GpuSampleOptions {
  /** > 0 (0 is greedy: argmax). */
  temperature: number;
  /** 0 = off. */
  topK: number;
  /** >= 1 = off. */
  topP: number;
}

export interface SamplePick {
  token: number;
  /**
   * Smallest distance, relative to the total weight, between a running weight the pick compared
   * and what it compared it with (u × total, or topP for the cut): below ~1e-6 another summation order
   * may pick the neighbour.
   */
  margin: number;
}

/** The token Sampler.sample picks from logits[offset, offset + n) when its generator returns u. */
export function sampleRef(logits: Float32Array, offset: number, n: number, o: GpuSampleOptions, u: number): SamplePick {
  const topK = o.topK > 0 ? Math.min(o.topK, n) : n;
  const ids = Array.from({ length: n }, (_, i) => i);
  ids.sort((a, b) => logits[offset + b] - logits[offset + a] || a - b);
  let cand = ids.slice(0, topK);
  const m = logits[offset + cand[0]];
  const p = cand.map((i) => Math.exp((logits[offset + i] - m) / o.temperature));
  let sum = p.reduce((a, b) => a + b, 0);
  let margin = Infinity;
  if (o.topP < 1) {
    let acc = 0;
    let cut = cand.length;
    for (let i = 0; i < cand.length; i++) {
      acc += p[i] / sum;
      margin = Math.min(margin, Math.abs(acc - o.topP));
      if (acc >= o.topP) {
        cut = i + 1;
        break;
      }
    }
    cand = cand.slice(0, cut);
    p.length = cut;
    sum = p.reduce((a, b) => a + b, 0);
  }
  let r = u * sum;
  let token = cand[cand.length - 1];
  for (let i = 0; i < cand.length; i++) {
    r -= p[i];
    margin = Math.min(margin, Math.abs(r) / sum);
    if (r <= 0) {
      token = cand[i];
      break;
    }
  }
  return { token, margin };
}
