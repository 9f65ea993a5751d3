// RoPE frequency table, computed once on the host for every backend. Angles are linear in the
// position (theta = pos · invFreq[i]) for plain, linear-scaled, YaRN and Llama-3 "freq factors"
// alike, so a single table describes all of them and the kernels stay simple.
//
// Follows ggml's rope (ggml-cpu ops.cpp: rope_yarn, ggml_rope_yarn_corr_dims) in float32 steps so
// that our angles round like llama.cpp's: theta_scale = base^(-2/n_dims) in f32, then repeated f32
// products.

import type { RopeConfig } from './backend.js';

export interface RopeParams {
  kind: 'norm' | 'neox';
  /** Rotated dimensions per head. */
  dims: number;
  freqBase: number;
  /** 'none' | 'linear' | 'yarn' (llama.cpp's rope.scaling.type). */
  scaling: 'none' | 'linear' | 'yarn';
  /** rope.scaling.factor (1 = none); ggml's freq_scale = 1 / factor. */
  factor: number;
  /** rope.scaling.original_context_length (YaRN). */
  origCtx: number;
  yarnBetaFast?: number;
  yarnBetaSlow?: number;
  yarnExtFactor?: number;
  yarnAttnFactor?: number;
  /** Llama 3.x `rope_freqs.weight`: per-pair divisors of the angle. */
  freqFactors?: Float32Array;
}

const f = Math.fround;

function yarnCorrDim(nDims: number, nCtxOrig: number, nRot: number, base: number): number {
  return (nDims * Math.log(nCtxOrig / (nRot * 2 * Math.PI))) / (2 * Math.log(base));
}

export function ropeConfig(p: RopeParams): RopeConfig {
  const half = p.dims / 2;
  const invFreq = new Float32Array(half);
  const freqScale = p.scaling === 'none' || p.factor <= 0 ? 1 : f(1 / p.factor);
  const extFactor = p.scaling === 'yarn' ? (p.yarnExtFactor ?? 1) : 0;
  const attnFactor = p.yarnAttnFactor ?? 1;
  let low = 0;
  let high = 0;
  if (extFactor !== 0) {
    const betaFast = p.yarnBetaFast ?? 32;
    const betaSlow = p.yarnBetaSlow ?? 1;
    low = Math.max(0, Math.floor(yarnCorrDim(p.dims, p.origCtx, betaFast, p.freqBase)));
    high = Math.min(p.dims - 1, Math.ceil(yarnCorrDim(p.dims, p.origCtx, betaSlow, p.freqBase)));
  }
  const thetaScale = f(Math.pow(p.freqBase, -2 / p.dims));
  let thetaExtrap = 1;
  for (let i = 0; i < half; i++) {
    const ff = p.freqFactors ? p.freqFactors[i] : 1;
    const extrap = f(thetaExtrap / ff);
    const interp = f(freqScale * extrap);
    let theta = interp;
    if (extFactor !== 0) {
      // ramp over pair index i (ggml uses i0/2 with i0 the even dimension index, i.e. i)
      const y = (i - low) / Math.max(0.001, high - low);
      const rampMix = (1 - Math.min(1, Math.max(0, y))) * extFactor;
      theta = f(interp * (1 - rampMix) + extrap * rampMix);
    }
    invFreq[i] = theta;
    thetaExtrap = f(thetaExtrap * thetaScale);
  }
  let mscale = attnFactor;
  if (extFactor !== 0) mscale = f(mscale * (1 + 0.1 * Math.log(1 / freqScale)));
  return { kind: p.kind, dims: p.dims, invFreq, mscale };
}
