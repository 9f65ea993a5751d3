// The constructed induction model (issue 7): a qwen2 GGUF whose weights are set by hand so that dense
// attention provably continues any earlier text whose last two tokens occurred before
// ("The pass key is 73912 … The pass key is" → " 73912"), at any distance up to its context length.
// It is the fidelity harness's ground truth: a sparse attention method that drops the needle's column
// or the previous-token diagonals loses the answer, and nothing else can.
//
// Residual stream (256 wide), four blocks of CODE = 32 dims and 128 zeros:
//   CUR   [0, 32)    code(t_i), written by the embedding (every token has a random unit code)
//   PREV1 [32, 64)   code(t_{i-1}), written by layer 0 head 0
//   PREV2 [64, 96)   code(t_{i-2}), written by layer 0 head 1
//   ANS   [96, 128)  code(t_{j}) for the earlier j whose two previous tokens are (t_{i-1}, t_i): layer 1
// MLPs are zero; the output matrix reads only ANS.
//
// Layer 0, previous-token heads (pure slash patterns). Q and K weights are zero and the biases
// constant, on the 24 highest-frequency RoPE pairs (neox pairs m and m + 64). After RoPE the score
// between positions i and j is λ0 · Σ_m w_m cos((i − j − o) θ_m): the key bias is real, the query bias
// of the head with offset o is rotated by −o·θ_m, so the score peaks at i − j = o (o = 1, 2; one KV head
// is shared, the offset lives in the query). The weights w_m (PAIR_WEIGHTS) were chosen offline
// (exponentiated-gradient max-min over n = i − j − o ∈ [−2, 2^20]) so that every other offset up to a
// million positions scores at least GAP0 ≈ 23% of the peak lower; λ0 turns that gap into the margin.
// V copies CUR, O writes PREV1 / PREV2.
//
// Layer 1, induction head (a vertical pattern on the needle). rope.freq_base = 1e15 makes pairs
// 32…63 rotate by at most 3.2e-8 rad per position (0.034 rad over 2^20 positions), so they carry
// position-free content: Q = [code(t_i), code(t_{i-1})] and K = [code(t_{j-1}), code(t_{j-2})] on those
// pairs, score λ1 · (c_i·c_{j-1} + c_{i-1}·c_{j-2}): 2λ1 where the last two tokens occurred before, at
// most λ1 (1 + ε) elsewhere (ε = the largest inner product of two different codes). V copies CUR into
// ANS. The output logit of token v is α · code(v)·ANS: the copied token wins by α (1 − ε).
//
// All weights are F32 (llama.cpp and our CPU backend then multiply in f32); the KV cache may be f16.
// The margins (MARGIN_TARGET logits at each of the three stages) are computed from the actual codes
// and frequencies at construction and written into the file as repokv.induction.* metadata.

import { GGUFValueType } from '../gguf/types.js';
import { GGMLType } from '../gguf/types.js';
import type { GGUFMetaValue } from '../gguf/reader.js';
import { quantize } from '../gguf/quant.js';
import { meta, writeGGUFStream } from '../gguf/writer.js';
import { syntheticTokenizerMetadata, syntheticVocabSize } from '../text/synthetic.js';
import { ropeConfig } from './rope.js';
import { Rng } from './synthetic.js';

export const INDUCTION = {
  nLayers: 2,
  nEmbd: 256,
  nHeads: 2,
  nKVHeads: 1,
  headDim: 128,
  nFF: 64,
  code: 32,
  /** ≥ 1e15 leaves pairs 32..63 position-free over a million positions (see above). */
  freqBase: 1e15,
  /** 2^20: the layer-0 gap was optimized over offsets up to here. */
  contextLength: 1 << 20,
  normEps: 1e-6,
  tokenizer: 'qwen2' as const,
} as const;

/** Logit margin each stage is scaled to (issue 7 asks for ≥ 20; the rest absorbs f16 KV and f32 angle rounding). */
export const MARGIN_TARGET = 30;

/** Residual blocks. */
const CUR = 0;
const PREV1 = 32;
const PREV2 = 64;
const ANS = 96;
/** The previous-token heads' offsets (head h attends to i − OFFSETS[h]). */
const OFFSETS = [1, 2];
/** First RoPE pair of the position-free (content) part. */
const LOW_PAIR = 32;

/**
 * Layer-0 weights of RoPE pairs 0..23 (sum 1), found offline: maximize min over n ∈ [−2, 2^20] \ {0}
 * of Σ_m w_m (1 − cos n θ_m) for d = 128, base 1e15 (θ_m in ggml's f32 steps); result 0.2315 (the
 * worst offsets are n = 252182 and n = −1). Equal weights give 0.06 and geometric ones ≤ 0.13.
 */
const PAIR_WEIGHTS = [
  0.4756, 0.0637, 0.0346, 0.0447, 0.0356, 0.0355, 0.0176, 0.0269, 0.0239, 0.0198, 0.0215, 0.0296, 0.013, 0.0209, 0.0296, 0.0192, 0.0132, 0.0153, 0.0067, 0.0088,
  0.0081, 0.0121, 0.0103, 0.014,
];

export interface InductionOptions {
  seed?: number;
  /** Context length written to the file and covered by the margin check (default and maximum 2^20). */
  contextLength?: number;
  name?: string;
}

export interface InductionMargins {
  /** Layer 0: relative gap of the slash score (peak vs any other offset up to the context length). */
  gap0: number;
  /** The offset n = i − j − o where the layer-0 gap is smallest. */
  gap0At: number;
  /** Peak score λ0 and the logit margin λ0 · gap0. */
  lambda0: number;
  margin0: number;
  /** Largest inner product between the codes of two different tokens. */
  codeCoherence: number;
  /** Layer 1: λ1 and the logit margin λ1 · (1 − ε) of a repeated 2-gram over any other key. */
  lambda1: number;
  margin1: number;
  /** Output: α and the logit margin α · (1 − ε) of the copied token. */
  alpha: number;
  marginOut: number;
  /** Largest rotation of a content pair over the context (rad): the position-free approximation's error. */
  maxContentAngle: number;
}

export interface InductionPlan {
  metadata: Array<[string, GGUFMetaValue]>;
  tensors: { name: string; dims: number[]; values: Float32Array }[];
  margins: InductionMargins;
  nVocab: number;
  /** code(t) for every token, [nVocab, CODE] row-major. */
  codes: Float32Array;
}

/** Random unit codes, one per token (seeded). */
function makeCodes(nVocab: number, dim: number, seed: number): Float32Array {
  const rng = new Rng(seed);
  const c = new Float32Array(nVocab * dim);
  for (let v = 0; v < nVocab; v++) {
    let n = 0;
    for (let k = 0; k < dim; k++) {
      const g = rng.normal();
      c[v * dim + k] = g;
      n += g * g;
    }
    const s = 1 / Math.sqrt(n);
    for (let k = 0; k < dim; k++) c[v * dim + k] *= s;
  }
  return c;
}

/** Largest inner product between two different codes (all pairs). */
export function codeCoherence(codes: Float32Array, dim: number): number {
  const n = codes.length / dim;
  let best = -Infinity;
  for (let a = 0; a < n; a++) {
    const oa = a * dim;
    for (let b = a + 1; b < n; b++) {
      const ob = b * dim;
      let s = 0;
      for (let k = 0; k < dim; k++) s += codes[oa + k] * codes[ob + k];
      if (s > best) best = s;
    }
  }
  return best;
}

/** min over n ∈ [−2, maxOffset] \ {0} of Σ w_m (1 − cos n θ_m) and where it is reached. */
export function slashGap(invFreq: Float32Array, weights: number[], maxOffset: number): { gap: number; at: number } {
  let gap = Infinity;
  let at = 0;
  const M = weights.length;
  for (let n = -2; n <= maxOffset; n++) {
    if (n === 0) continue;
    let s = 0;
    for (let m = 0; m < M; m++) s += weights[m] * (1 - Math.cos(n * invFreq[m]));
    if (s < gap) {
      gap = s;
      at = n;
    }
  }
  return { gap, at };
}

/** Plans every tensor (F32 values) and metadata key of the induction model. */
export function planInductionModel(opts: InductionOptions = {}): InductionPlan {
  const I = INDUCTION;
  const seed = (opts.seed ?? 1) >>> 0;
  const ctx = opts.contextLength ?? I.contextLength;
  if (!Number.isInteger(ctx) || ctx < 64 || ctx > I.contextLength) throw new Error(`induction model: context length must be 64..${I.contextLength}, got ${ctx}`);
  const E = I.nEmbd;
  const d = I.headDim;
  const half = d / 2;
  const C = I.code;
  const V = syntheticVocabSize(I.tokenizer);
  const codes = makeCodes(V, C, seed);
  const eps = codeCoherence(codes, C);
  const rope = ropeConfig({ kind: 'neox', dims: d, freqBase: I.freqBase, scaling: 'none', factor: 1, origCtx: ctx });
  const theta = rope.invFreq;
  const wsum = PAIR_WEIGHTS.reduce((a, b) => a + b, 0);
  const w = PAIR_WEIGHTS.map((x) => x / wsum);
  const { gap: gap0, at: gap0At } = slashGap(theta, w, ctx);
  const sqrtD = Math.sqrt(d);

  // Scales. Layer 0: peak score λ0 (Σw = 1), split evenly between the q and k biases.
  const lambda0 = MARGIN_TARGET / gap0;
  const a0 = Math.sqrt(lambda0 * sqrtD);
  // Layer 1: score per matched token λ1; q and k get √(λ1·√d) each, on unit codes.
  const lambda1 = MARGIN_TARGET / (1 - eps);
  const a1 = Math.sqrt(lambda1 * sqrtD);
  const alpha = MARGIN_TARGET / (1 - eps);
  // RMSNorm scales: x0 holds one unit code (rms 1/√E), x1 three, x2 four.
  const rms0 = Math.sqrt(1 / E);
  const rms1 = Math.sqrt(3 / E);
  const rms2 = Math.sqrt(4 / E);

  const tensors: InductionPlan['tensors'] = [];
  const mat = (name: string, nIn: number, nOut: number, fill?: (set: (out: number, inp: number, v: number) => void) => void): void => {
    const values = new Float32Array(nIn * nOut);
    fill?.((o, i, v) => {
      values[o * nIn + i] = v;
    });
    tensors.push({ name, dims: [nIn, nOut], values });
  };
  const vec = (name: string, n: number, fill?: (x: Float32Array) => void): void => {
    const values = new Float32Array(n);
    fill?.(values);
    tensors.push({ name, dims: [n], values });
  };
  const ones = (x: Float32Array) => x.fill(1);

  mat('token_embd.weight', E, V, (set) => {
    for (let v = 0; v < V; v++) for (let k = 0; k < C; k++) set(v, CUR + k, codes[v * C + k]);
  });
  vec('output_norm.weight', E, ones);
  mat('output.weight', E, V, (set) => {
    for (let v = 0; v < V; v++) for (let k = 0; k < C; k++) set(v, ANS + k, alpha * rms2 * codes[v * C + k]);
  });

  const qDim = I.nHeads * d;
  const kvDim = I.nKVHeads * d;
  const ff = (b: string) => {
    vec(`${b}ffn_norm.weight`, E, ones);
    mat(`${b}ffn_gate.weight`, E, I.nFF);
    mat(`${b}ffn_up.weight`, E, I.nFF);
    mat(`${b}ffn_down.weight`, I.nFF, E);
  };

  // Layer 0: previous-token heads.
  {
    const b = 'blk.0.';
    vec(`${b}attn_norm.weight`, E, ones);
    mat(`${b}attn_q.weight`, E, qDim);
    mat(`${b}attn_k.weight`, E, kvDim);
    mat(`${b}attn_v.weight`, E, kvDim, (set) => {
      for (let k = 0; k < C; k++) set(k, CUR + k, rms0);
    });
    vec(`${b}attn_q.bias`, qDim, (q) => {
      OFFSETS.forEach((o, h) => {
        for (let m = 0; m < w.length; m++) {
          const r = a0 * Math.sqrt(w[m]);
          // z_q = r·e^{−i o θ_m}: the score peaks where (i − j) θ_m − o θ_m = 0.
          q[h * d + m] = r * Math.cos(o * theta[m]);
          q[h * d + m + half] = -r * Math.sin(o * theta[m]);
        }
      });
    });
    vec(`${b}attn_k.bias`, kvDim, (k) => {
      for (let m = 0; m < w.length; m++) k[m] = a0 * Math.sqrt(w[m]);
    });
    vec(`${b}attn_v.bias`, kvDim);
    mat(`${b}attn_output.weight`, qDim, E, (set) => {
      for (let k = 0; k < C; k++) {
        set(PREV1 + k, 0 * d + k, 1);
        set(PREV2 + k, 1 * d + k, 1);
      }
    });
    ff(b);
  }

  // Layer 1: the induction head (head 0; head 1 stays zero).
  {
    const b = 'blk.1.';
    vec(`${b}attn_norm.weight`, E, ones);
    const s = a1 * rms1;
    mat(`${b}attn_q.weight`, E, qDim, (set) => {
      for (let k = 0; k < C; k++) {
        set(LOW_PAIR + k, CUR + k, s); // first halves of pairs 32..63
        set(LOW_PAIR + half + k, PREV1 + k, s); // their second halves
      }
    });
    mat(`${b}attn_k.weight`, E, kvDim, (set) => {
      for (let k = 0; k < C; k++) {
        set(LOW_PAIR + k, PREV1 + k, s);
        set(LOW_PAIR + half + k, PREV2 + k, s);
      }
    });
    mat(`${b}attn_v.weight`, E, kvDim, (set) => {
      for (let k = 0; k < C; k++) set(k, CUR + k, rms1);
    });
    vec(`${b}attn_q.bias`, qDim);
    vec(`${b}attn_k.bias`, kvDim);
    vec(`${b}attn_v.bias`, kvDim);
    mat(`${b}attn_output.weight`, qDim, E, (set) => {
      for (let k = 0; k < C; k++) set(ANS + k, k, 1);
    });
    ff(b);
  }

  const margins: InductionMargins = {
    gap0,
    gap0At,
    lambda0,
    margin0: lambda0 * gap0,
    codeCoherence: eps,
    lambda1,
    margin1: lambda1 * (1 - eps),
    alpha,
    marginOut: alpha * (1 - eps),
    maxContentAngle: ctx * theta[LOW_PAIR],
  };

  const a = (k: string) => `qwen2.${k}`;
  const md: Array<[string, GGUFMetaValue]> = [
    ['general.architecture', meta.str('qwen2')],
    ['general.name', meta.str(opts.name ?? 'repokv-induction')],
    ['general.file_type', meta.u32(0)], // ALL_F32
    ['general.quantization_version', meta.u32(2)],
    [a('vocab_size'), meta.u32(V)],
    [a('context_length'), meta.u32(ctx)],
    [a('embedding_length'), meta.u32(E)],
    [a('block_count'), meta.u32(I.nLayers)],
    [a('feed_forward_length'), meta.u32(I.nFF)],
    [a('attention.head_count'), meta.u32(I.nHeads)],
    [a('attention.head_count_kv'), meta.u32(I.nKVHeads)],
    [a('attention.layer_norm_rms_epsilon'), meta.f32(I.normEps)],
    [a('rope.freq_base'), meta.f32(I.freqBase)],
    [a('rope.dimension_count'), meta.u32(d)],
    ['repokv.induction.seed', meta.u32(seed)],
    ['repokv.induction.code_dim', meta.u32(C)],
    ['repokv.induction.margins', meta.arr(GGUFValueType.FLOAT32, [margins.margin0, margins.margin1, margins.marginOut])],
    ['repokv.induction.code_coherence', meta.f32(eps)],
    ...syntheticTokenizerMetadata(I.tokenizer),
  ];
  return { metadata: md, tensors, margins, nVocab: V, codes };
}

/** Writes the induction model (all tensors F32). */
export function writeInductionModel(path: string, plan: InductionPlan): void {
  writeGGUFStream(path, {
    metadata: plan.metadata,
    tensors: plan.tensors.map((t) => ({ name: t.name, dims: t.dims, type: GGMLType.F32, produce: () => quantize(GGMLType.F32, t.values) })),
  });
}
