// llama.cpp as the oracle: runs test/helpers/llama-oracle-child.mjs in a child process.
import { execFile } from 'node:child_process';
import { fileURLToPath } from 'node:url';

export interface OracleRequest {
  model: string;
  prompt: number[];
  nGen: number;
  threads?: number;
  contextSize?: number;
  batchSize?: number;
  topLogprobs?: number;
  /** llama.cpp's flash attention (default off: its CPU kernel accumulates V in f16). */
  flashAttention?: boolean;
  /** KV cache type, e.g. 'F32' or 'F16' (llama.cpp's default is F16). */
  kvType?: string;
}

export interface OracleResult {
  generated: number[];
  /** The top tokens after the last prompt token, with natural-log probabilities, best first. */
  lastLogprobs: [number, number][];
  nProbs: number;
  timings: { prefillMs: number; decodeMs: number };
}

const child = fileURLToPath(new URL('./llama-oracle-child.mjs', import.meta.url));

export function runLlamaCpp(req: OracleRequest): Promise<OracleResult> {
  return new Promise((resolve, reject) => {
    execFile(process.execPath, [child, JSON.stringify(req)], { maxBuffer: 64 << 20, timeout: 300_000 }, (err, stdout, stderr) => {
      if (err) return reject(new Error(`llama.cpp oracle failed: ${err.message}\n${stderr}`));
      const line = stdout.trim().split('\n').pop() ?? '';
      try {
        resolve(JSON.parse(line) as OracleResult);
      } catch {
        reject(new Error(`llama.cpp oracle printed no JSON:\n${stdout}\n${stderr}`));
      }
    });
  });
}

/** Natural-log softmax of one row of logits. */
export function logSoftmax(logits: Float32Array): Float64Array {
  let m = -Infinity;
  for (const v of logits) if (v > m) m = v;
  let s = 0;
  for (const v of logits) s += Math.exp(v - m);
  const lse = m + Math.log(s);
  return Float64Array.from(logits, (v) => v - lse);
}
