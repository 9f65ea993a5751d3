// Parity of one of our backends with llama.cpp on the same model file.
//
// Why two criteria. With f32 weights (and llama.cpp's KV cache in f32, flash attention off) both
// engines compute the same f32 arithmetic up to summation order: log-probabilities agree to ~1e-5
// and free-running greedy tokens are identical. With quantized weights, llama.cpp's CPU build
// quantizes every activation row to 8 bits before each product (Q8_0 / Q8_K): a last-bit difference
// upstream flips an occasional rounding, a flip moves a value by 1/127 of its block's range, and the
// difference cascades through the layers. Bit-identical long greedy runs would need bit-identical
// summation order, which no other backend (and no GPU) has. So for quantized weights the comparison
// is teacher-forced: our engine reads llama.cpp's own greedy continuation, and at every step our
// argmax must be llama.cpp's token unless the two are within `tieTolerance` of each other in our
// logits (a near-tie that the 8-bit activation noise can flip either way).
import type { Backend } from '../../engine/model/backend.js';
import { GGUFFile } from '../../engine/gguf/reader.js';
import { loadTransformerConfig } from '../../engine/model/config.js';
import { argmax } from '../../engine/model/sampler.js';
import { Transformer } from '../../engine/model/transformer.js';
import { logSoftmax, runLlamaCpp, type OracleResult } from './llama-oracle.js';

export interface ParityReport {
  /** Max |logprob ours − logprob llama.cpp| over llama.cpp's top-20 tokens after the prompt. */
  maxLogprobDiff: number;
  /** Steps (of nGen) where our argmax equals llama.cpp's greedy token, reading llama.cpp's tokens. */
  exactSteps: number;
  nGen: number;
  /** Largest logit margin by which we preferred another token over llama.cpp's (0 if none). */
  worstMargin: number;
  /** First step where free-running greedy would diverge (-1: never, within nGen). */
  firstDivergence: number;
  oracle: OracleResult;
}

/** Loads the model on `backend`, prefills prompt + llama.cpp's continuation, returns logits rows. */
async function teacherForced(modelPath: string, backend: Backend, tokens: number[], firstLogitRow: number, chunk: number): Promise<Float32Array[]> {
  const file = GGUFFile.open(modelPath);
  const cfg = loadTransformerConfig(file);
  const model = new Transformer(cfg, backend);
  model.load(file);
  file.close();
  const kv = model.createKV(tokens.length + 1);
  const rows: Float32Array[] = [];
  for (let s = 0; s < tokens.length; s += chunk) {
    const e = Math.min(tokens.length, s + chunk);
    const n = e - s;
    const want: number[] = [];
    for (let r = Math.max(s, firstLogitRow); r < e; r++) want.push(r - s);
    const logits = await model.forward({
      tokens: Int32Array.from(tokens.slice(s, e)),
      positions: Int32Array.from({ length: n }, (_, i) => s + i),
      seqs: [{ kv, row: 0, n, pos: s }],
      logitRows: want,
    });
    for (let i = 0; i < want.length; i++) rows.push(logits.slice(i * cfg.nVocab, (i + 1) * cfg.nVocab));
  }
  kv.free();
  return rows;
}

export async function compareWithLlamaCpp(
  modelPath: string,
  backend: Backend,
  prompt: number[],
  nGen: number,
  opts: { chunk?: number; oracle?: OracleResult } = {},
): Promise<ParityReport> {
  const oracle = opts.oracle ?? (await runLlamaCpp({ model: modelPath, prompt, nGen, kvType: 'F32', flashAttention: false, contextSize: prompt.length + nGen + 64 }));
  const seq = [...prompt, ...oracle.generated.slice(0, nGen - 1)];
  const rows = await teacherForced(modelPath, backend, seq, prompt.length - 1, opts.chunk ?? 128);
  const lp = logSoftmax(rows[0]);
  let maxLogprobDiff = 0;
  for (const [tok, l] of oracle.lastLogprobs) maxLogprobDiff = Math.max(maxLogprobDiff, Math.abs(lp[tok] - l));
  let exactSteps = 0;
  let worstMargin = 0;
  let firstDivergence = -1;
  for (let i = 0; i < nGen; i++) {
    const want = oracle.generated[i];
    const got = argmax(rows[i]);
    if (got === want) exactSteps++;
    else {
      worstMargin = Math.max(worstMargin, rows[i][got] - rows[i][want]);
      if (firstDivergence < 0) firstDivergence = i;
    }
  }
  return { maxLogprobDiff, exactSteps, nGen, worstMargin, firstDivergence, oracle };
}
