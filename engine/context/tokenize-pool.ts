// Tokenizes segment texts on worker threads (piscina), each worker holding the model's tokenizer,
// with progress (files, tokens, tokens/s, ETA). Texts go out in batches of about `batchChars`
// characters so that small files do not pay a message each, and come back in input order.
import { availableParallelism } from 'node:os';

import { Piscina } from 'piscina';
import { GGUFFile } from '../gguf/reader.js';
import { Tokenizer } from '../text/tokenizer.js';

export interface TokenizeProgress {
  files: number;
  totalFiles: number;
  tokens: number;
  chars: number;
  totalChars: number;
  seconds: number;
  tokensPerSecond: number;
  /** Seconds left, estimated from the characters left at the rate so far. */
  etaSeconds: number;
}

export interface TokenizerPoolOptions {
  /** Worker threads (default: the machine's parallelism). */
  threads?: number;
  /** Characters per task (default 256 Ki). */
  batchChars?: number;
}

/** How the worker module is loaded: the compiled .js next to this file, or the .ts through tsx. */
function workerSpec(): { filename: string; execArgv: string[] } {
  const here = import.meta.url;
  if (here.endsWith('.ts')) {
    return { filename: new URL('./tokenize-worker-tsx.mjs', here).href, execArgv: [] };
  }
  return { filename: new URL('./tokenize-worker.js', here).href, execArgv: [] };
}

export class TokenizerPool {
  readonly threads: number;
  private readonly pool: Piscina;
  private readonly batchChars: number;

  constructor(
    readonly model: string,
    opts: TokenizerPoolOptions = {},
  ) {
    // a bad model file fails here, in this thread, with the reader's one-sentence error (an error
    // thrown inside a worker would arrive without its class)
    tokenizeHere(model, []);
    this.threads = Math.max(1, opts.threads ?? availableParallelism());
    this.batchChars = opts.batchChars ?? 256 * 1024;
    const spec = workerSpec();
    this.pool = new Piscina({ filename: spec.filename, execArgv: spec.execArgv, minThreads: this.threads, maxThreads: this.threads, idleTimeout: 30_000 });
  }

  /** Token ids of each text (no BOS/EOS; control-token text stays text), in input order. */
  async tokenize(texts: string[], onProgress?: (p: TokenizeProgress) => void): Promise<Int32Array[]> {
    const out = new Array<Int32Array>(texts.length);
    for await (const { index, tokens } of this.stream(texts, onProgress)) out[index] = tokens;
    return out;
  }

  /**
   * The same, streamed in input order: each text's tokens are yielded as soon as it and every text
   * before it are done, so prefill can start on the first segments while later ones are tokenized.
   * Progress is reported as batches finish (in any order).
   */
  async *stream(texts: string[], onProgress?: (p: TokenizeProgress) => void): AsyncGenerator<{ index: number; tokens: Int32Array }> {
    const totalChars = texts.reduce((s, t) => s + t.length, 0);
    const t0 = performance.now();
    let files = 0;
    let tokens = 0;
    let chars = 0;
    const batches: { start: number; texts: string[]; chars: number }[] = [];
    let cur: { start: number; texts: string[]; chars: number } = { start: 0, texts: [], chars: 0 };
    for (let i = 0; i < texts.length; i++) {
      if (cur.texts.length && cur.chars + texts[i].length > this.batchChars) {
        batches.push(cur);
        cur = { start: i, texts: [], chars: 0 };
      }
      cur.texts.push(texts[i]);
      cur.chars += texts[i].length;
    }
    if (cur.texts.length) batches.push(cur);
    const results = batches.map(async (b) => {
      const r = (await this.pool.run({ model: this.model, texts: b.texts })) as Int32Array;
      const n = r[0];
      const parts: Int32Array[] = [];
      let o = 1 + n;
      for (let i = 0; i < n; i++) {
        const len = r[1 + i];
        parts.push(r.subarray(o, o + len));
        o += len;
        tokens += len;
      }
      files += n;
      chars += b.chars;
      if (onProgress) {
        const seconds = (performance.now() - t0) / 1000;
        const rate = chars / Math.max(seconds, 1e-9);
        onProgress({ files, totalFiles: texts.length, tokens, chars, totalChars, seconds, tokensPerSecond: tokens / Math.max(seconds, 1e-9), etaSeconds: (totalChars - chars) / Math.max(rate, 1e-9) });
      }
      return parts;
    });
    // a rejected batch must not go unhandled while an earlier one is awaited
    for (const r of results) r.catch(() => undefined);
    for (let b = 0; b < batches.length; b++) {
      const parts = await results[b];
      for (let i = 0; i < parts.length; i++) yield { index: batches[b].start + i, tokens: parts[i] };
    }
  }

  async close(): Promise<void> {
    await this.pool.destroy();
  }
}

/** The same tokenization on this thread (a reference for the pool, and for tiny inputs). */
export function tokenizeHere(model: string, texts: string[]): Int32Array[] {
  const f = GGUFFile.open(model, { metadataOnly: true });
  let tok: Tokenizer;
  try {
    tok = Tokenizer.fromGGUF(f);
  } finally {
    f.close();
  }
  return texts.map((t) => tok.encode(t, { addSpecial: false, parseSpecial: false }));
}

/**
 * A TokenCounter backed by token arrays already computed (by the pool) for some texts, falling back
 * to `fallback` (e.g. an in-process tokenizer, or the estimate) for the others.
 */
export function countingFrom(texts: string[], tokens: Int32Array[], fallback: (t: string) => number): (t: string) => number {
  const known = new Map<string, number>();
  for (let i = 0; i < texts.length; i++) known.set(texts[i], tokens[i].length);
  return (t) => known.get(t) ?? fallback(t);
}

