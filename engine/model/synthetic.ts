// Synthetic models: seeded random weights for llama / qwen2 / qwen3, written as GGUF files that
// llama.cpp loads. Nothing here can download real weights, so tests, demos and benchmarks use these.
// The same options and seed always give the same bytes.

import { UserError } from '../errors.js';
import { quantize } from '../gguf/quant.js';
import type { GGUFMetaValue } from '../gguf/reader.js';
import { GGMLType, TYPE_TRAITS } from '../gguf/types.js';
import { encodeGGUF, meta, writeGGUFStream } from '../gguf/writer.js';
import { syntheticTokenizerMetadata, type SyntheticTokenizerKind } from '../text/synthetic.js';
import { Rng } from './rng.js';

/** The seeded PRNG behind every synthetic weight (engine/model/rng.ts). */
export { Rng };

// ---- synthetic model files -----------------------------------------------------------------------

export type SyntheticArch = 'llama' | 'qwen2' | 'qwen3';
export type SyntheticTokenizer = SyntheticTokenizerKind | 'none';
export type WeightTypeName = 'f32' | 'f16' | 'bf16' | 'q8_0' | 'q4_0' | 'q4_k' | 'q6_k';

export const WEIGHT_TYPES: Record<WeightTypeName, GGMLType> = {
  f32: GGMLType.F32,
  f16: GGMLType.F16,
  bf16: GGMLType.BF16,
  q8_0: GGMLType.Q8_0,
  q4_0: GGMLType.Q4_0,
  q4_k: GGMLType.Q4_K,
  q6_k: GGMLType.Q6_K,
};

/** Shape of a model; nVocab is the tokenizer's when one is written. */
export interface SyntheticShape {
  nLayers: number;
  nEmbd: number;
  nHeads: number;
  nKVHeads: number;
  nFF: number;
  /** Per-head size; default nEmbd / nHeads. */
  headDim?: number;
  /** Only used without a tokenizer (tokenizer 'none'); with one, its vocabulary decides. */
  nVocab?: number;
  contextLength: number;
  /** No output.weight: logits use token_embd.weight (as Qwen2.5-0.5B, Qwen3-0.6B, Llama 3.2 1B). */
  tied: boolean;
}

export type SizePreset = 'tiny' | 'small' | 'qwen0.5b' | 'qwen1.5b';
export const SIZE_PRESETS: readonly SizePreset[] = ['tiny', 'small', 'qwen0.5b', 'qwen1.5b'];

/**
 * Size presets. `tiny` (3.5-4.7M parameters with a 4.5k vocabulary) is for tests; `small` (~28M) for
 * quick runs; `qwen0.5b` has Qwen2.5-0.5B's body (24 layers, 896 wide, 14 heads, 2 KV heads, 4864 FFN,
 * tied embeddings) with the synthetic vocabulary instead of 151936 tokens, for benchmarks; `qwen1.5b`
 * likewise has Qwen2.5-1.5B's (28 layers, 1536 wide, 12 heads, 2 KV heads, 8960 FFN, tied). qwen3 gets
 * Qwen3's wider heads (head size twice embd/heads), so key_length differs from embd/heads as in the
 * real models.
 */
export function presetShape(arch: SyntheticArch, size: SizePreset): SyntheticShape {
  // Small Qwen models tie their embeddings (Qwen2.5-0.5B, Qwen3-0.6B); Llama 3 8B does not: each
  // preset follows its family, so both output paths are exercised.
  const tied = arch !== 'llama';
  let s: SyntheticShape;
  if (size === 'tiny') s = { nLayers: 4, nEmbd: 256, nHeads: 4, nKVHeads: 2, nFF: 512, contextLength: 8192, tied };
  else if (size === 'small') s = { nLayers: 8, nEmbd: 512, nHeads: 8, nKVHeads: 4, nFF: 1536, contextLength: 8192, tied };
  else if (size === 'qwen0.5b') s = { nLayers: 24, nEmbd: 896, nHeads: 14, nKVHeads: 2, nFF: 4864, contextLength: 32768, tied: true };
  else s = { nLayers: 28, nEmbd: 1536, nHeads: 12, nKVHeads: 2, nFF: 8960, contextLength: 32768, tied: true };
  if (arch === 'qwen3') s.headDim = (2 * s.nEmbd) / s.nHeads;
  return s;
}

export interface SyntheticModelOptions {
  arch: SyntheticArch;
  shape: SyntheticShape;
  /** Type of the 2-D weights (1-D norms and biases stay F32, as llama.cpp's converters keep them). */
  type: WeightTypeName;
  /** llama.cpp's Q4_K_M mix: Q4_K, with Q6_K for output (and tied embeddings) and for attn_v / ffn_down of some layers. */
  q4km?: boolean;
  seed: number;
  /** Default: 'llama-bpe' for llama, 'qwen2' for qwen2 / qwen3. */
  tokenizer?: SyntheticTokenizer;
  /** The tokenizer.* keys (from engine/text/synthetic.ts); needed unless tokenizer is 'none'. */
  tokenizerMetadata?: Array<[string, GGUFMetaValue]>;
  ropeFreqBase?: number;
  normEps?: number;
  name?: string;
  /**
   * qwen2 only: a q/k bias of this size on the first component of every RoPE pair (see
   * SyntheticTensorPlan.ropeBias) — random weights then attend locally with a power-law tail, like
   * trained models, instead of diffusely (sparse-prefill benchmarks). 0/absent: plain random biases.
   */
  locality?: number;
}

export interface SyntheticTensorPlan {
  name: string;
  dims: number[];
  type: GGMLType;
  /** Standard deviation of the random values (and their mean: 1 for norms, 0 otherwise). */
  std: number;
  mean: number;
  /**
   * Added to the first half of each head's values (a q/k bias on every neox RoPE pair's first
   * component): with q and k both biased, scores gain Σ_m b² cos(θ_m (i − j)) — RoPE's long-term
   * decay, i.e. attention that falls off smoothly with distance, as trained models' does.
   */
  ropeBias?: { value: number; headDim: number };
}

export interface SyntheticModelPlan {
  metadata: Array<[string, GGUFMetaValue]>;
  tensors: SyntheticTensorPlan[];
  nParams: number;
  nVocab: number;
  headDim: number;
  seed: number;
}

export function defaultTokenizer(arch: SyntheticArch): SyntheticTokenizerKind {
  return arch === 'llama' ? 'llama-bpe' : 'qwen2';
}

/** llama.cpp's use_more_bits (llama-quant.cpp): which layers Q4_K_M gives more bits. */
function useMoreBits(layer: number, nLayers: number): boolean {
  return layer < Math.floor(nLayers / 8) || layer >= Math.floor((7 * nLayers) / 8) || (layer - Math.floor(nLayers / 8)) % 3 === 2;
}

/**
 * The type a 2-D weight gets when its rows are not whole blocks of the wanted type: the same fallbacks
 * llama.cpp's quantizer takes (Q4_K -> Q5_0, Q6_K -> Q8_0), then F16.
 */
function fitType(wanted: GGMLType, rowLength: number): GGMLType {
  const fits = (t: GGMLType): boolean => rowLength % TYPE_TRAITS[t].blockSize === 0;
  if (fits(wanted)) return wanted;
  const fallback = wanted === GGMLType.Q4_K ? GGMLType.Q5_0 : wanted === GGMLType.Q6_K ? GGMLType.Q8_0 : GGMLType.F16;
  return fits(fallback) ? fallback : GGMLType.F16;
}

function fileTypeOf(type: WeightTypeName, q4km: boolean): number {
  if (q4km) return 15; // LLAMA_FTYPE_MOSTLY_Q4_K_M
  const ftypes: Record<WeightTypeName, number> = { f32: 0, f16: 1, q4_0: 2, q8_0: 7, q4_k: 14, q6_k: 18, bf16: 32 };
  return ftypes[type];
}

function checkShape(arch: SyntheticArch, s: SyntheticShape, nVocab: number, headDim: number): void {
  const bad = (what: string): never => {
    throw new UserError(`invalid model shape: ${what}`);
  };
  if (!Number.isInteger(headDim)) bad(`embd ${s.nEmbd} is not a multiple of ${s.nHeads} heads (or give --head-dim)`);
  const positive: [string, number][] = [
    ['layers', s.nLayers],
    ['embd', s.nEmbd],
    ['heads', s.nHeads],
    ['kv-heads', s.nKVHeads],
    ['ff', s.nFF],
    ['vocab', nVocab],
    ['ctx', s.contextLength],
    ['head-dim', headDim],
  ];
  for (const [k, v] of positive) if (!Number.isInteger(v) || v <= 0 || v > 1 << 24) bad(`--${k} must be a whole number from 1 to ${1 << 24}, got ${v}`);
  if (s.nHeads % s.nKVHeads !== 0) bad(`${s.nHeads} heads cannot be shared evenly by ${s.nKVHeads} KV heads`);
  if (headDim % 2 !== 0) bad(`the head size ${headDim} must be even (RoPE rotates pairs)`);
  if (arch !== 'qwen3' && headDim * s.nHeads !== s.nEmbd) bad(`${arch} needs embd (${s.nEmbd}) = heads (${s.nHeads}) x head size (${headDim})`);
  if (s.nEmbd % 32 !== 0) bad(`embd ${s.nEmbd} must be a multiple of 32 (one quantization block)`);
}

/** Plans every tensor and metadata key of a synthetic model (no weights generated yet). */
export function planSyntheticModel(opts: SyntheticModelOptions): SyntheticModelPlan {
  const { arch, shape: s } = opts;
  const tokenizer = opts.tokenizer ?? defaultTokenizer(arch);
  if (tokenizer !== 'none' && !opts.tokenizerMetadata) throw new Error(`tokenizer "${tokenizer}" needs its metadata (syntheticTokenizerMetadata)`);
  const tokMeta = tokenizer === 'none' ? [] : opts.tokenizerMetadata!;
  const tokensMeta = tokMeta.find(([k]) => k === 'tokenizer.ggml.tokens')?.[1].value;
  const tokVocab = typeof tokensMeta === 'object' && tokensMeta !== null && 'items' in tokensMeta ? tokensMeta.items.length : undefined;
  if (tokenizer !== 'none' && s.nVocab !== undefined && s.nVocab !== tokVocab) {
    throw new UserError(`--vocab ${s.nVocab} differs from the ${tokenizer} tokenizer's ${tokVocab} tokens; llama.cpp needs them equal (use --tokenizer none for a free vocabulary size)`);
  }
  const nVocab = tokVocab ?? s.nVocab ?? 1024;
  const headDim = s.headDim ?? s.nEmbd / s.nHeads;
  checkShape(arch, s, nVocab, headDim);
  const E = s.nEmbd;
  const qDim = s.nHeads * headDim;
  const kvDim = s.nKVHeads * headDim;
  const base = WEIGHT_TYPES[opts.type];
  const q4km = !!opts.q4km;
  if (q4km && opts.type !== 'q4_k') throw new UserError('--q4km mixes Q4_K and Q6_K; use it with --type q4_k');

  // Scales: weights ~ N(0, 1/fan_in), so each projection keeps an RMS-normalised input at unit RMS;
  // each layer then adds O(1) to the residual stream and the logits have an RMS of about 3 (peaked
  // enough for greedy decoding to have clear winners, not so peaked that one token always wins).
  const tensors: SyntheticTensorPlan[] = [];
  const mat = (name: string, nIn: number, nOut: number, type: GGMLType, std = 1 / Math.sqrt(nIn)): void => {
    tensors.push({ name, dims: [nIn, nOut], type: fitType(type, nIn), std, mean: 0 });
  };
  const vec = (name: string, n: number, mean: number, std: number): void => {
    tensors.push({ name, dims: [n], type: GGMLType.F32, std, mean });
  };
  const outType = q4km ? GGMLType.Q6_K : base;
  // Tied: the embedding doubles as the output matrix, so it takes the output's scale and type.
  if (s.tied) mat('token_embd.weight', E, nVocab, outType, 3 / Math.sqrt(E));
  else mat('token_embd.weight', E, nVocab, base, 1);
  vec('output_norm.weight', E, 1, 0.05);
  if (!s.tied) mat('output.weight', E, nVocab, outType, 3 / Math.sqrt(E));
  for (let i = 0; i < s.nLayers; i++) {
    const b = `blk.${i}.`;
    const more = q4km && useMoreBits(i, s.nLayers) ? GGMLType.Q6_K : base;
    vec(`${b}attn_norm.weight`, E, 1, 0.05);
    mat(`${b}attn_q.weight`, E, qDim, base);
    mat(`${b}attn_k.weight`, E, kvDim, base);
    mat(`${b}attn_v.weight`, E, kvDim, more);
    if (arch === 'qwen2') {
      vec(`${b}attn_q.bias`, qDim, 0, 0.1);
      vec(`${b}attn_k.bias`, kvDim, 0, 0.1);
      if (opts.locality) for (const t of tensors.slice(-2)) t.ropeBias = { value: opts.locality, headDim };
      vec(`${b}attn_v.bias`, kvDim, 0, 0.1);
    }
    if (arch === 'qwen3') {
      vec(`${b}attn_q_norm.weight`, headDim, 1, 0.05);
      vec(`${b}attn_k_norm.weight`, headDim, 1, 0.05);
    }
    mat(`${b}attn_output.weight`, qDim, E, base);
    vec(`${b}ffn_norm.weight`, E, 1, 0.05);
    mat(`${b}ffn_gate.weight`, E, s.nFF, base);
    mat(`${b}ffn_up.weight`, E, s.nFF, base);
    mat(`${b}ffn_down.weight`, s.nFF, E, more);
  }

  const a = (k: string): string => `${arch}.${k}`;
  const md: Array<[string, GGUFMetaValue]> = [
    ['general.architecture', meta.str(arch)],
    ['general.name', meta.str(opts.name ?? `repokv-synthetic-${arch}`)],
    ['general.file_type', meta.u32(fileTypeOf(opts.type, q4km))],
    ['general.quantization_version', meta.u32(2)],
    [a('vocab_size'), meta.u32(nVocab)],
    [a('context_length'), meta.u32(s.contextLength)],
    [a('embedding_length'), meta.u32(E)],
    [a('block_count'), meta.u32(s.nLayers)],
    [a('feed_forward_length'), meta.u32(s.nFF)],
    [a('attention.head_count'), meta.u32(s.nHeads)],
    [a('attention.head_count_kv'), meta.u32(s.nKVHeads)],
    [a('attention.layer_norm_rms_epsilon'), meta.f32(opts.normEps ?? (arch === 'llama' ? 1e-5 : 1e-6))],
    [a('rope.freq_base'), meta.f32(opts.ropeFreqBase ?? (arch === 'llama' ? 500000 : 1000000))],
    [a('rope.dimension_count'), meta.u32(headDim)],
  ];
  if (headDim * s.nHeads !== E || arch === 'qwen3') md.push([a('attention.key_length'), meta.u32(headDim)], [a('attention.value_length'), meta.u32(headDim)]);
  md.push(['repokv.synthetic.seed', meta.u32(opts.seed >>> 0)]);
  md.push(...tokMeta);
  const nParams = tensors.reduce((n, t) => n + t.dims.reduce((x, y) => x * y, 1), 0);
  return { metadata: md, tensors, nParams, nVocab, headDim, seed: opts.seed >>> 0 };
}

/** FNV-1a of a tensor name, mixed with the model seed: each tensor has its own stream. */
function tensorSeed(seed: number, name: string): number {
  let h = 0x811c9dc5 ^ seed;
  for (let i = 0; i < name.length; i++) h = Math.imul(h ^ name.charCodeAt(i), 0x01000193);
  return h >>> 0;
}

/** The f32 values of one planned tensor (deterministic in the seed and the tensor's name). */
export function tensorValues(plan: SyntheticModelPlan, t: SyntheticTensorPlan): Float32Array {
  const n = t.dims.reduce((a, b) => a * b, 1);
  const v = new Rng(tensorSeed(plan.seed, t.name)).fillNormal(new Float32Array(n), t.std, t.mean);
  if (t.ropeBias) {
    const { value, headDim } = t.ropeBias;
    for (let i = 0; i < n; i++) if (i % headDim < headDim / 2) v[i] += value;
  }
  return v;
}

/** Writes the planned model (one tensor in memory at a time). */
export function writeSyntheticModel(path: string, plan: SyntheticModelPlan): void {
  writeGGUFStream(path, {
    metadata: plan.metadata,
    tensors: plan.tensors.map((t) => ({ name: t.name, dims: t.dims, type: t.type, produce: () => quantize(t.type, tensorValues(plan, t)) })),
  });
}

/** The whole model as GGUF bytes in memory (small models: tests). */
export function encodeSyntheticModel(plan: SyntheticModelPlan): Buffer {
  return encodeGGUF({
    metadata: plan.metadata,
    tensors: plan.tensors.map((t) => ({ name: t.name, dims: t.dims, type: t.type, data: quantize(t.type, tensorValues(plan, t)) })),
  });
}

/** Plans a model with the synthetic tokenizer of the given kind (or the arch's default) included. */
export function syntheticModel(opts: Omit<SyntheticModelOptions, 'tokenizerMetadata'>): SyntheticModelPlan {
  const tokenizer = opts.tokenizer ?? defaultTokenizer(opts.arch);
  return planSyntheticModel({ ...opts, tokenizer, ...(tokenizer !== 'none' ? { tokenizerMetadata: syntheticTokenizerMetadata(tokenizer) } : {}) });
}
