// Continuous batching for the server (issue 11): every request that has finished its prefill decodes
// in the same step as the others — one `engine.decodeStep` over all of them, so the weights are read
// once per step for the whole batch — and leaves the batch when it stops; a new request joins at the
// next step. Prefills still run one at a time; each step and each prefill is one job of the engine's
// queue (`run`), so they interleave at step granularity and never overlap.
//
// Per request the token logic is Engine.generate's (TokenStream: sampling, end of generation, stop
// sequences, streamed text, length), sampled on the host from the step's logits.

import type { Engine, GenerateChunk, GenerateOptions, GenerateResult, Sequence } from '../engine.js';
import { TokenStream } from '../engine.js';

interface Member {
  seq: Sequence;
  ts: TokenStream;
  logits: Float32Array;
  signal?: AbortSignal;
  /** Chunks not yet taken by the consumer, and its wake-up. */
  out: GenerateChunk[];
  done: boolean;
  error: unknown;
  wake: (() => void) | null;
}

export interface BatcherStats {
  steps: number;
  /** Sequences decoded, summed over steps (mean batch = rows / steps). */
  rows: number;
  maxBatch: number;
}

export class DecodeBatcher {
  private members: Member[] = [];
  private running = false;
  readonly stats: BatcherStats = { steps: 0, rows: 0, maxBatch: 0 };

  constructor(
    private readonly engine: Engine,
    /** Runs one engine job in the engine's queue. */
    private readonly run: <T>(job: () => Promise<T>) => Promise<T>,
    /** Most sequences per step. */
    private readonly maxBatch = 16,
  ) {}

  /** Streams the generation of `seq` after its prefill (`logits`), decoded together with the others. */
  async *generate(seq: Sequence, logits: Float32Array, opts: GenerateOptions = {}): AsyncGenerator<GenerateChunk, GenerateResult> {
    const m: Member = { seq, ts: new TokenStream(this.engine.tokenizer, opts), logits, signal: opts.signal, out: [], done: false, error: null, wake: null };
    // The first token comes from the prefill's logits, at once.
    this.advance(m);
    if (!m.done) {
      this.members.push(m);
      this.loop();
    }
    for (;;) {
      while (m.out.length) yield m.out.shift()!;
      if (m.done) break;
      await new Promise<void>((r) => (m.wake = r));
      m.wake = null;
    }
    if (m.error) throw m.error;
    return m.ts.result();
  }

  /** Samples the member's next token from its current logits; marks it done when it stops. */
  private advance(m: Member): void {
    if (m.signal?.aborted) m.ts.cancel();
    else if (m.ts.full) {
      // length: nothing more
    } else {
      const r = m.ts.push(m.ts.sample(m.logits));
      if (r.chunk) m.out.push(r.chunk);
      if (!r.stop) {
        if (m.seq.length + 1 <= m.seq.kv.capacity) return;
        m.ts.outOfContext();
      }
    }
    this.finish(m);
  }

  private finish(m: Member, error: unknown = null): void {
    if (m.done) return;
    const tail = error ? null : m.ts.flush();
    if (tail) m.out.push(tail);
    m.done = true;
    m.error = error;
    m.wake?.();
  }

  private async loop(): Promise<void> {
    if (this.running) return;
    this.running = true;
    try {
      while (this.members.length) {
        const batch = this.members.slice(0, this.maxBatch);
        let logits: Float32Array[];
        try {
          logits = await this.run(() => this.engine.decodeStep(batch.map((m) => m.seq), batch.map((m) => m.ts.last)));
        } catch (e) {
          for (const m of batch) this.finish(m, e);
          this.members = this.members.filter((m) => !m.done);
          continue;
        }
        this.stats.steps++;
        this.stats.rows += batch.length;
        this.stats.maxBatch = Math.max(this.stats.maxBatch, batch.length);
        batch.forEach((m, i) => {
          m.logits = logits[i]; // a view of this step's own logits (every read returns a new array)
          this.advance(m);
          m.wake?.();
        });
        // Members whose turn did not come (batch full) rotate to the front next time.
        const rest = this.members.filter((m) => !m.done && !batch.includes(m));
        this.members = [...rest, ...batch.filter((m) => !m.done)];
        // Let sockets and new requests in between steps.
        await new Promise<void>((r) => setImmediate(r));
      }
    } finally {
      this.running = false;
    }
  }
}
