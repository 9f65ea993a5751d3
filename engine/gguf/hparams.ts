// Model hyper-parameters of the architectures RepoKV runs (llama, qwen2, qwen3), read from GGUF
// metadata with llama.cpp's keys and defaults (src/llama-model.cpp load_hparams, src/llama-arch.cpp
// key names), and checked against the tensors llama.cpp requires for each architecture
// (src/models/{llama,qwen2,qwen3}.cpp load_arch_tensors). A file that llama.cpp would refuse is
// refused here too, with one sentence naming the file and the problem.

import { GGUFError, type GGUFArray, type GGUFFile, type GGUFScalar, type GGUFTensorInfo } from './reader.js';

export const SUPPORTED_ARCHS = ['llama', 'qwen2', 'qwen3'] as const;
export type ModelArch = (typeof SUPPORTED_ARCHS)[number];

export interface RopeScaling {
  /** llama.cpp's rope.scaling.type; 'linear' with factor 1 is reported as 'none'. */
  type: 'none' | 'linear' | 'yarn';
  /** rope.scaling.factor (1 when absent): positions are divided by it (ggml freq_scale = 1/factor). */
  factor: number;
  /** rope.scaling.original_context_length (the training context when absent). */
  origCtx: number;
  /** rope.scaling.attn_factor (1 when absent). */
  attnFactor: number;
  /** YaRN parameters, only when the file gives them (llama.cpp's defaults apply otherwise). */
  yarnExtFactor?: number;
  yarnAttnFactor?: number;
  yarnBetaFast?: number;
  yarnBetaSlow?: number;
  yarnLogMul?: number;
}

export type KVDType = 'f32' | 'f16' | 'bf16' | 'q8_0';

export interface ModelHParams {
  arch: ModelArch;
  /** general.name, when given. */
  name?: string;
  nLayers: number;
  nHeads: number;
  nKVHeads: number;
  /** Per-head size of queries and keys (attention.key_length, else embedding / heads). */
  headDim: number;
  /** Per-head size of values (attention.value_length, else embedding / heads). */
  headDimV: number;
  nEmbd: number;
  nFF: number;
  nVocab: number;
  contextLength: number;
  ropeFreqBase: number;
  /** rope.dimension_count: how many dimensions of each head are rotated. */
  ropeDim: number;
  ropeScaling: RopeScaling;
  /** 'norm': llama's adjacent pairs (2i, 2i+1); 'neox': qwen's halves (i, i + ropeDim/2). */
  ropeType: 'norm' | 'neox';
  normEps: number;
  /** No output.weight: the output projection reuses token_embd.weight. */
  tiedEmbeddings: boolean;
  /** attn_q/k/v biases present (qwen2 has them). */
  hasQKVBias: boolean;
  /** Per-head RMS norms of q and k (qwen3). */
  hasQKNorm: boolean;
  /** rope_freqs.weight present (Llama 3.1+ frequency factors). */
  hasRopeFreqs: boolean;
  /** general.file_type (llama_ftype), when given. */
  fileType?: number;
  /** Tensors of the file that this architecture does not use (reported, not an error). */
  unusedTensors: string[];
  /** Bytes of K and V cache one token takes over all layers, in the given element type. */
  kvBytesPerToken(dtype: KVDType): number;
}

const KV_ELEMENT_BYTES: Record<KVDType, number> = { f32: 4, f16: 2, bf16: 2, q8_0: 34 / 32 };

/** Upper bounds that no real model reaches: a larger value is corruption, refused before any use. */
const LIMITS = { layers: 4096, embd: 1 << 17, heads: 4096, ff: 1 << 20, vocab: 1 << 24, ctx: 1 << 30, headDim: 4096 };

export interface ReadHParamsOptions {
  /** Check the tensor names and shapes against the architecture (default: when the file has tensors). */
  checkTensors?: boolean;
}

export function readHParams(file: GGUFFile, opts: ReadHParamsOptions = {}): ModelHParams {
  const fail = (problem: string): never => {
    throw new GGUFError(file.path, problem);
  };
  const archName = file.getString('general.architecture');
  if (archName === undefined) fail('required metadata "general.architecture" is missing; this is not a model file');
  const arch = archName as ModelArch;
  if (!SUPPORTED_ARCHS.includes(arch)) {
    fail(`architecture "${archName}" is not supported (RepoKV runs ${SUPPORTED_ARCHS.join(', ')})`);
  }

  /** A positive integer (or a per-layer array of one repeated value) no larger than `max`. */
  const int = (key: string, max: number, dflt?: number): number => {
    const full = `${arch}.${key}`;
    let v: GGUFScalar | GGUFArray | undefined = file.get(full);
    if (v === undefined) {
      if (dflt !== undefined) return dflt;
      return fail(`required metadata "${full}" is missing`);
    }
    if (typeof v === 'object') {
      const items = v.items;
      if (items.length === 0 || items.some((x) => x !== items[0])) fail(`metadata "${full}" differs between layers, which RepoKV does not support`);
      v = items[0];
    }
    if (typeof v === 'bigint') v = Number(v);
    if (typeof v !== 'number' || !Number.isInteger(v) || v <= 0 || v > max) {
      return fail(`metadata "${full}" is ${typeof v === 'object' ? 'a nested array' : String(v)}, expected a whole number from 1 to ${max}`);
    }
    return v;
  };
  const num = (key: string, dflt: number | undefined, ok: (x: number) => boolean, expect: string): number | undefined => {
    const full = `${arch}.${key}`;
    const v = file.getNumber(full);
    if (v === undefined) return dflt;
    if (!Number.isFinite(v) || !ok(v)) fail(`metadata "${full}" is ${v}, expected ${expect}`);
    return v;
  };

  const contextLength = int('context_length', LIMITS.ctx);
  const nEmbd = int('embedding_length', LIMITS.embd);
  const nLayers = int('block_count', LIMITS.layers);
  const nHeads = int('attention.head_count', LIMITS.heads);
  const nKVHeads = int('attention.head_count_kv', LIMITS.heads, nHeads);
  if (nHeads % nKVHeads !== 0) fail(`${nHeads} attention heads cannot be shared evenly by ${nKVHeads} KV heads`);
  const defaultHead = nEmbd % nHeads === 0 ? nEmbd / nHeads : undefined;
  if (defaultHead === undefined && (!file.has(`${arch}.attention.key_length`) || !file.has(`${arch}.attention.value_length`))) {
    fail(`embedding ${nEmbd} is not a multiple of ${nHeads} heads and attention.key_length / value_length are not given`);
  }
  const headDim = int('attention.key_length', LIMITS.headDim, defaultHead);
  const headDimV = int('attention.value_length', LIMITS.headDim, defaultHead);
  if (headDimV !== headDim) fail(`key length ${headDim} differs from value length ${headDimV}, which RepoKV does not support`);
  const ropeDim = int('rope.dimension_count', LIMITS.headDim, headDim);
  if (ropeDim > headDim || ropeDim % 2 !== 0) fail(`rope.dimension_count ${ropeDim} must be even and at most the head size ${headDim}`);
  if (arch === 'llama' && ropeDim !== headDim) fail(`rope.dimension_count ${ropeDim} differs from the head size ${headDim} (llama.cpp refuses this for llama)`);
  const normEps = num('attention.layer_norm_rms_epsilon', undefined, (x) => x > 0 && x < 1, 'a small positive number') ?? fail(`required metadata "${arch}.attention.layer_norm_rms_epsilon" is missing`);
  const ropeFreqBase = num('rope.freq_base', 10000, (x) => x > 1, 'a number above 1') as number;

  // rope scaling (llama.cpp: type defaults to "linear", factor 0 means none, old key rope.scale_linear)
  const scalingKey = `${arch}.rope.scaling.type`;
  const scalingName = file.getString(scalingKey) ?? 'linear';
  let factor = num('rope.scaling.factor', undefined, (x) => x >= 0, 'a non-negative number') ?? num('rope.scale_linear', 0, (x) => x >= 0, 'a non-negative number')!;
  if (factor === 0) factor = 1;
  let scalingType: RopeScaling['type'];
  if (scalingName === 'none') scalingType = 'none';
  else if (scalingName === 'linear') scalingType = factor === 1 ? 'none' : 'linear';
  else if (scalingName === 'yarn') scalingType = 'yarn';
  else return fail(`rope scaling type "${scalingName}" is not supported (none, linear and yarn are)`);
  const opt = (key: string): number | undefined => num(key, undefined, () => true, 'a number');
  const ropeScaling: RopeScaling = {
    type: scalingType,
    factor: scalingType === 'none' ? 1 : factor,
    origCtx: int('rope.scaling.original_context_length', LIMITS.ctx, contextLength),
    attnFactor: num('rope.scaling.attn_factor', 1, (x) => x > 0, 'a positive number') as number,
  };
  if (scalingType === 'yarn') {
    const y: [keyof RopeScaling, string][] = [
      ['yarnExtFactor', 'rope.scaling.yarn_ext_factor'],
      ['yarnAttnFactor', 'rope.scaling.yarn_attn_factor'],
      ['yarnBetaFast', 'rope.scaling.yarn_beta_fast'],
      ['yarnBetaSlow', 'rope.scaling.yarn_beta_slow'],
      ['yarnLogMul', 'rope.scaling.yarn_log_multiplier'],
    ];
    for (const [field, key] of y) {
      const v = opt(key);
      if (v !== undefined) (ropeScaling as unknown as Record<string, number>)[field] = v;
    }
  }

  // Vocabulary: the embedding's rows are what counts; metadata is the fallback for header-only reads.
  const embd = file.tensor('token_embd.weight');
  let nVocab: number;
  if (embd && embd.dims.length === 2) nVocab = embd.dims[1];
  else {
    const tokens = file.getArray('tokenizer.ggml.tokens');
    nVocab = file.getNumber(`${arch}.vocab_size`) ?? tokens?.items.length ?? 0;
  }
  if (!Number.isInteger(nVocab) || nVocab <= 0 || nVocab > LIMITS.vocab) fail(`cannot tell the vocabulary size (token_embd.weight, ${arch}.vocab_size and tokenizer.ggml.tokens are all missing or invalid)`);

  // feed_forward_length is optional in llama.cpp's generic loader; ffn_gate's shape decides then.
  const gate = file.tensor('blk.0.ffn_gate.weight');
  const nFF = int('feed_forward_length', LIMITS.ff, gate && gate.dims.length === 2 ? gate.dims[1] : undefined);

  const fileType = file.getNumber('general.file_type');
  const name = file.getString('general.name');
  const hasTensors = file.tensors.length > 0;
  const hp: ModelHParams = {
    arch,
    ...(name !== undefined ? { name } : {}),
    nLayers,
    nHeads,
    nKVHeads,
    headDim,
    headDimV,
    nEmbd,
    nFF,
    nVocab,
    contextLength,
    ropeFreqBase,
    ropeDim,
    ropeScaling,
    ropeType: arch === 'llama' ? 'norm' : 'neox',
    normEps,
    tiedEmbeddings: hasTensors ? !file.tensor('output.weight') : false,
    hasQKVBias: hasTensors ? !!file.tensor('blk.0.attn_q.bias') : arch === 'qwen2',
    hasQKNorm: arch === 'qwen3',
    hasRopeFreqs: !!file.tensor('rope_freqs.weight'),
    ...(fileType !== undefined ? { fileType } : {}),
    unusedTensors: [],
    kvBytesPerToken(dtype: KVDType): number {
      return nLayers * nKVHeads * (headDim + headDimV) * KV_ELEMENT_BYTES[dtype];
    },
  };
  if (opts.checkTensors ?? hasTensors) hp.unusedTensors = checkTensors(file, hp);
  return hp;
}

export interface ExpectedTensor {
  name: string;
  /** ne[0] first, as ggml stores them. */
  dims: number[];
  required: boolean;
}

/** The tensors llama.cpp loads for this architecture, with their shapes. */
export function expectedTensors(hp: ModelHParams): ExpectedTensor[] {
  const { nEmbd, nVocab, nHeads, nKVHeads, headDim, headDimV, nFF } = hp;
  const t: ExpectedTensor[] = [
    { name: 'token_embd.weight', dims: [nEmbd, nVocab], required: true },
    { name: 'output_norm.weight', dims: [nEmbd], required: true },
    { name: 'output.weight', dims: [nEmbd, nVocab], required: false },
  ];
  if (hp.arch === 'llama') t.push({ name: 'rope_freqs.weight', dims: [hp.ropeDim / 2], required: false });
  for (let i = 0; i < hp.nLayers; i++) {
    const b = `blk.${i}.`;
    const bias = hp.hasQKVBias;
    t.push(
      { name: `${b}attn_norm.weight`, dims: [nEmbd], required: true },
      { name: `${b}attn_q.weight`, dims: [nEmbd, nHeads * headDim], required: true },
      { name: `${b}attn_k.weight`, dims: [nEmbd, nKVHeads * headDim], required: true },
      { name: `${b}attn_v.weight`, dims: [nEmbd, nKVHeads * headDimV], required: true },
      { name: `${b}attn_output.weight`, dims: [nHeads * headDimV, nEmbd], required: true },
      // Biases are optional to llama.cpp for all three, but all or none: a file with q bias only is broken.
      { name: `${b}attn_q.bias`, dims: [nHeads * headDim], required: bias },
      { name: `${b}attn_k.bias`, dims: [nKVHeads * headDim], required: bias },
      { name: `${b}attn_v.bias`, dims: [nKVHeads * headDimV], required: bias },
      { name: `${b}ffn_norm.weight`, dims: [nEmbd], required: true },
      { name: `${b}ffn_gate.weight`, dims: [nEmbd, nFF], required: true },
      { name: `${b}ffn_up.weight`, dims: [nEmbd, nFF], required: true },
      { name: `${b}ffn_down.weight`, dims: [nFF, nEmbd], required: true },
    );
    if (hp.arch === 'qwen3') {
      t.push({ name: `${b}attn_q_norm.weight`, dims: [headDim], required: true }, { name: `${b}attn_k_norm.weight`, dims: [headDim], required: true });
    }
  }
  return t;
}

/** Checks names and shapes; returns the names of tensors the architecture does not use. */
function checkTensors(file: GGUFFile, hp: ModelHParams): string[] {
  const expected = expectedTensors(hp);
  const known = new Set<string>();
  for (const e of expected) {
    known.add(e.name);
    const t: GGUFTensorInfo | undefined = file.tensor(e.name);
    if (!t) {
      if (!e.required) continue;
      if (/attn_q\.weight$/.test(e.name) && file.tensor(e.name.replace('attn_q.weight', 'attn_qkv.weight'))) {
        throw new GGUFError(file.path, `tensor "${e.name.replace('attn_q', 'attn_qkv')}" (fused QKV) is not supported; RepoKV needs separate attn_q, attn_k and attn_v tensors`);
      }
      throw new GGUFError(file.path, `required tensor "${e.name}" is missing for architecture ${hp.arch}`);
    }
    const same = t.dims.length === e.dims.length && t.dims.every((d, i) => d === e.dims[i]);
    if (!same) throw new GGUFError(file.path, `tensor "${e.name}" has shape [${t.dims.join(', ')}], expected [${e.dims.join(', ')}] for this ${hp.arch} model`);
  }
  return file.tensors.filter((t) => !known.has(t.name)).map((t) => t.name);
}

/** llama.cpp's llama_ftype names (general.file_type). */
export const FILE_TYPE_NAMES: Record<number, string> = {
  0: 'ALL_F32',
  1: 'MOSTLY_F16',
  2: 'MOSTLY_Q4_0',
  3: 'MOSTLY_Q4_1',
  7: 'MOSTLY_Q8_0',
  8: 'MOSTLY_Q5_0',
  9: 'MOSTLY_Q5_1',
  10: 'MOSTLY_Q2_K',
  11: 'MOSTLY_Q3_K_S',
  12: 'MOSTLY_Q3_K_M',
  13: 'MOSTLY_Q3_K_L',
  14: 'MOSTLY_Q4_K_S',
  15: 'MOSTLY_Q4_K_M',
  16: 'MOSTLY_Q5_K_S',
  17: 'MOSTLY_Q5_K_M',
  18: 'MOSTLY_Q6_K',
  32: 'MOSTLY_BF16',
};
