// Runs a model file on one of our backends without the tokenizer: prompt ids in, greedy ids and
// the log-probabilities after the prompt out. Shared by the parity tests of every backend.
import { GGUFFile } from '../../engine/gguf/reader.js';
import type { Backend } from '../../engine/model/backend.js';
import { loadTransformerConfig } from '../../engine/model/config.js';
import { argmax } from '../../engine/model/sampler.js';
import { Transformer } from '../../engine/model/transformer.js';
import { logSoftmax } from './llama-oracle.js';

export interface RunResult {
  generated: number[];
  lastLogprobs: Float64Array;
}

export async function runGreedy(modelPath: string, backend: Backend, prompt: number[], nGen: number, chunk = 128): Promise<RunResult> {
  const file = GGUFFile.open(modelPath);
  const cfg = loadTransformerConfig(file);
  const model = new Transformer(cfg, backend);
  model.load(file);
  file.close();
  const kv = model.createKV(prompt.length + nGen + 1);
  let logits: Float32Array = new Float32Array(0);
  for (let s = 0; s < prompt.length; s += chunk) {
    const e = Math.min(prompt.length, s + chunk);
    const n = e - s;
    logits = await model.forward({
      tokens: Int32Array.from(prompt.slice(s, e)),
      positions: Int32Array.from({ length: n }, (_, i) => s + i),
      seqs: [{ kv, row: 0, n, pos: s }],
      logitRows: e === prompt.length ? [n - 1] : [],
    });
  }
  const lastLogprobs = logSoftmax(logits);
  const generated: number[] = [];
  let pos = prompt.length;
  for (let i = 0; i < nGen; i++) {
    const t = argmax(logits);
    generated.push(t);
    if (i + 1 === nGen) break;
    logits = await model.forward({ tokens: Int32Array.of(t), positions: Int32Array.of(pos), seqs: [{ kv, row: 0, n: 1, pos }], logitRows: [0] });
    pos++;
  }
  kv.free();
  return { generated, lastLogprobs };
}
