// From a GGUF file's hyper-parameters to the transformer's configuration (incl. the RoPE table).

import type { GGUFFile } from '../gguf/reader.js';
import { readHParams } from '../gguf/hparams.js';
import { dequantizeTensor } from '../gguf/quant.js';
import { UserError } from '../errors.js';
import { ropeConfig } from './rope.js';
import type { TransformerConfig } from './transformer.js';

export function loadTransformerConfig(file: GGUFFile): TransformerConfig {
  const hp = readHParams(file, { checkTensors: true });
  if (hp.headDimV !== hp.headDim) throw new UserError(`${file.path}: different key and value head sizes (${hp.headDim} vs ${hp.headDimV}) are not supported`);
  const ropeFreqs = hp.hasRopeFreqs ? file.tensor('rope_freqs.weight') : undefined;
  const rope = ropeConfig({
    kind: hp.ropeType,
    dims: hp.ropeDim,
    freqBase: hp.ropeFreqBase,
    scaling: hp.ropeScaling.type,
    factor: hp.ropeScaling.factor,
    origCtx: hp.ropeScaling.origCtx,
    yarnBetaFast: hp.ropeScaling.yarnBetaFast,
    yarnBetaSlow: hp.ropeScaling.yarnBetaSlow,
    yarnExtFactor: hp.ropeScaling.yarnExtFactor,
    yarnAttnFactor: hp.ropeScaling.yarnAttnFactor ?? hp.ropeScaling.attnFactor,
    freqFactors: ropeFreqs ? dequantizeTensor(file, ropeFreqs) : undefined,
  });
  return {
    arch: hp.arch,
    nLayers: hp.nLayers,
    nEmbd: hp.nEmbd,
    nHeads: hp.nHeads,
    nKVHeads: hp.nKVHeads,
    headDim: hp.headDim,
    nFF: hp.nFF,
    nVocab: hp.nVocab,
    contextLength: hp.contextLength,
    normEps: hp.normEps,
    hasQKVBias: hp.hasQKVBias,
    hasQKNorm: hp.hasQKNorm,
    tiedEmbeddings: hp.tiedEmbeddings,
    rope,
  };
}
