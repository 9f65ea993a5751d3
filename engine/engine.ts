// The Engine API: the one surface used by the CLI, the JSON-RPC server, the extension (through the
// server) and the tests. Load a model on a backend, create sequences, prefill them in chunks, decode
// token by token (several sequences batched into one step when asked), stream text, stop on EOS or a
// stop string, cancel between steps.

import { availableParallelism, freemem, totalmem } from 'node:os';
import { GGUFFile } from './gguf/reader.js';
import { UserError } from './errors.js';
import type { Backend, KVCache } from './model/backend.js';
import { loadTransformerConfig } from './model/config.js';
import { Sampler, type SamplingOptions } from './model/sampler.js';
import { Transformer, type TransformerConfig } from './model/transformer.js';
import { Tokenizer } from './text/tokenizer.js';
import { ChatTemplate, type ChatMessage } from './text/chat-template.js';
import { ReferenceBackend } from './backends/reference/index.js';

export type BackendChoice = 'auto' | 'cpu' | 'webgpu' | 'reference';

export interface EngineOptions {
  model: string;
  backend?: BackendChoice;
  /** Default KV capacity of a new sequence, in tokens (≤ the model's context length). */
  contextSize?: number;
  /** CPU threads (CPU backend); default: the machine's cores. */
  threads?: number;
  /** Prefill chunk, in tokens. Long prompts are prefilled in chunks of this size. */
  prefillChunk?: number;
  /** Let `webgpu` run on a software adapter (lavapipe) — for tests; `auto` never picks one. */
  allowSoftwareGpu?: boolean;
  onLoadProgress?: (doneBytes: number, totalBytes: number) => void;
}

export interface GenerateOptions extends SamplingOptions {
  maxTokens?: number;
  stop?: string[];
  signal?: AbortSignal;
  /** Stop at end-of-generation tokens (default true). */
  stopAtEog?: boolean;
}

export interface GenerateChunk {
  token: number;
  /** Text that became final with this token (may be empty mid-character or while a stop string could still match). */
  text: string;
}

export type StopReason = 'eog' | 'stop' | 'length' | 'cancelled' | 'context';

export interface GenerateResult {
  tokens: number[];
  text: string;
  stopReason: StopReason;
}

export class Sequence {
  /** Every token whose K/V is in `kv`, in order. */
  readonly tokens: number[] = [];
  constructor(
    readonly id: number,
    readonly kv: KVCache,
  ) {}
  get length(): number {
    return this.tokens.length;
  }
  /** Drops everything after the first `n` tokens (retry or edit a turn). */
  truncate(n: number): void {
    this.kv.truncate(n);
    this.tokens.length = n;
  }
}

export class Engine {
  private nextSeqId = 1;
  private disposed = false;

  private constructor(
    readonly modelPath: string,
    readonly config: TransformerConfig,
    readonly tokenizer: Tokenizer,
    readonly chatTemplate: ChatTemplate | null,
    readonly backend: Backend,
    readonly model: Transformer,
    readonly contextSize: number,
    readonly prefillChunk: number,
  ) {}

  static async load(opts: EngineOptions): Promise<Engine> {
    const file = GGUFFile.open(opts.model);
    try {
      const config = loadTransformerConfig(file);
      const tokenizer = Tokenizer.fromGGUF(file);
      const chatTemplate = ChatTemplate.fromGGUF(file);
      checkMemory(file, opts.model);
      const backend = await createBackend(opts.backend ?? 'auto', opts);
      const model = new Transformer(config, backend);
      try {
        model.load(file, opts.onLoadProgress);
      } catch (e) {
        backend.dispose();
        throw e;
      }
      const ctx = Math.min(opts.contextSize ?? Math.min(config.contextLength, 8192), config.contextLength);
      const chunk = opts.prefillChunk ?? (backend.info.name === 'reference' ? 64 : 512);
      return new Engine(opts.model, config, tokenizer, chatTemplate, backend, model, ctx, chunk);
    } finally {
      file.close();
    }
  }

  get info() {
    return { model: this.modelPath, arch: this.config.arch, backend: this.backend.info, contextSize: this.contextSize };
  }

  /** Token ids of a chat, rendered with the model's own template (ending with the assistant header). */
  chatTokens(messages: ChatMessage[], opts: { addGenerationPrompt?: boolean } = {}): number[] {
    if (!this.chatTemplate) throw new UserError(`${this.modelPath}: the model has no chat template (tokenizer.chat_template); use a plain prompt or an instruct model`);
    const text = this.chatTemplate.render(messages, { addGenerationPrompt: opts.addGenerationPrompt ?? true, addBos: this.tokenizer.addBos });
    return Array.from(this.tokenizer.encode(text, { addSpecial: true, parseSpecial: true }));
  }

  createSequence(capacity = this.contextSize): Sequence {
    this.assertAlive();
    return new Sequence(this.nextSeqId++, this.model.createKV(capacity));
  }

  freeSequence(seq: Sequence): void {
    seq.kv.free();
  }

  /**
   * Appends `tokens` to the sequence, in chunks, and returns the logits after its last token.
   * Checks `signal` between chunks.
   */
  async prefill(seq: Sequence, tokens: ArrayLike<number>, opts: { signal?: AbortSignal; onProgress?: (done: number, total: number) => void } = {}): Promise<Float32Array> {
    this.assertAlive();
    if (tokens.length === 0) throw new Error('prefill needs at least one token');
    if (seq.length + tokens.length > seq.kv.capacity) {
      throw new UserError(`the prompt needs ${seq.length + tokens.length} tokens of context but the sequence holds ${seq.kv.capacity}; raise the context size or shorten the input`);
    }
    let logits: Float32Array = new Float32Array(0);
    for (let start = 0; start < tokens.length; start += this.prefillChunk) {
      if (opts.signal?.aborted) throw abortError();
      const end = Math.min(tokens.length, start + this.prefillChunk);
      const n = end - start;
      const toks = Int32Array.from({ length: n }, (_, i) => tokens[start + i]);
      const pos0 = seq.length;
      logits = await this.model.forward({
        tokens: toks,
        positions: Int32Array.from({ length: n }, (_, i) => pos0 + i),
        seqs: [{ kv: seq.kv, row: 0, n, pos: pos0 }],
        logitRows: end === tokens.length ? [n - 1] : [],
      });
      for (let i = 0; i < n; i++) seq.tokens.push(toks[i]);
      opts.onProgress?.(end, tokens.length);
    }
    return logits;
  }

  /** One decode step for several sequences at once: appends one token to each, returns their logits. */
  async decodeStep(seqs: Sequence[], tokens: number[]): Promise<Float32Array[]> {
    this.assertAlive();
    const n = seqs.length;
    for (const s of seqs) {
      if (s.length + 1 > s.kv.capacity) throw new UserError(`sequence ${s.id} is full (${s.kv.capacity} tokens); start a new session or raise the context size`);
    }
    const logits = await this.model.forward({
      tokens: Int32Array.from(tokens),
      positions: Int32Array.from(seqs, (s) => s.length),
      seqs: seqs.map((s, i) => ({ kv: s.kv, row: i, n: 1, pos: s.length })),
      logitRows: seqs.map((_, i) => i),
    });
    seqs.forEach((s, i) => s.tokens.push(tokens[i]));
    const V = this.config.nVocab;
    return Array.from({ length: n }, (_, i) => logits.subarray(i * V, (i + 1) * V));
  }

  /**
   * Generates after a prefill: `logits` are those returned by the last prefill/decode of `seq`.
   * Yields tokens with the text they complete.
   */
  async *generate(seq: Sequence, logits: Float32Array, opts: GenerateOptions = {}): AsyncGenerator<GenerateChunk, GenerateResult> {
    const sampler = new Sampler(opts);
    const maxTokens = opts.maxTokens ?? 256;
    const stops = (opts.stop ?? []).filter((s) => s.length > 0);
    const holdBack = stops.reduce((m, s) => Math.max(m, s.length - 1), 0);
    const decoder = this.tokenizer.streamDecoder();
    const out: number[] = [];
    let text = '';
    let emitted = 0;
    let reason: StopReason = 'length';
    let cur: Float32Array = logits;
    for (let step = 0; step < maxTokens; step++) {
      if (opts.signal?.aborted) {
        reason = 'cancelled';
        break;
      }
      const tok = sampler.sample(cur);
      if ((opts.stopAtEog ?? true) && this.tokenizer.isEndOfGeneration(tok)) {
        reason = 'eog';
        break;
      }
      out.push(tok);
      text += decoder.push(tok);
      const hit = firstStop(text, stops, emitted - holdBack);
      if (hit >= 0) {
        text = text.slice(0, hit);
        const piece = text.slice(emitted);
        emitted = text.length;
        if (piece) yield { token: tok, text: piece };
        reason = 'stop';
        break;
      }
      const safe = Math.max(emitted, text.length - holdBack);
      const piece = text.slice(emitted, safe);
      emitted = safe;
      yield { token: tok, text: piece };
      if (step + 1 === maxTokens) break;
      if (seq.length + 1 > seq.kv.capacity) {
        reason = 'context';
        break;
      }
      [cur] = await this.decodeStep([seq], [tok]);
    }
    if (reason !== 'stop') {
      text += decoder.flush();
      if (text.length > emitted) yield { token: -1, text: text.slice(emitted) };
    }
    return { tokens: out, text, stopReason: reason };
  }

  dispose(): void {
    if (!this.disposed) {
      this.disposed = true;
      this.backend.dispose();
    }
  }

  private assertAlive(): void {
    if (this.disposed) throw new Error('engine was disposed');
  }
}

function firstStop(text: string, stops: string[], from: number): number {
  let best = -1;
  for (const s of stops) {
    const i = text.indexOf(s, Math.max(0, from));
    if (i >= 0 && (best < 0 || i < best)) best = i;
  }
  return best;
}

function abortError(): Error {
  const e = new Error('cancelled');
  e.name = 'AbortError';
  return e;
}

/** Refuses a model that cannot fit in memory, before loading it, instead of an out-of-memory kill. */
function checkMemory(file: GGUFFile, path: string): void {
  const weights = file.tensors.reduce((s, t) => s + t.nBytes, 0);
  const avail = Math.max(freemem(), totalmem() * 0.5);
  if (weights > avail) {
    const gb = (n: number) => (n / 2 ** 30).toFixed(1);
    throw new UserError(`${path}: the model's weights need ${gb(weights)} GiB but only ${gb(avail)} GiB of memory is available; use a smaller or more quantized model (e.g. Q4_K_M)`);
  }
}

export async function createBackend(choice: BackendChoice, opts: { threads?: number; allowSoftwareGpu?: boolean } = {}): Promise<Backend> {
  switch (choice) {
    case 'reference':
      return new ReferenceBackend();
    case 'cpu': {
      const { createCpuBackend } = await import('./backends/cpu/index.js');
      return createCpuBackend({ threads: opts.threads ?? availableParallelism() });
    }
    case 'webgpu': {
      const { createWebGPUBackend } = await import('./backends/webgpu/index.js');
      return createWebGPUBackend({ allowSoftware: opts.allowSoftwareGpu ?? true });
    }
    case 'auto': {
      try {
        const { createWebGPUBackend } = await import('./backends/webgpu/index.js');
        return await createWebGPUBackend({ allowSoftware: false });
      } catch {
        // No hardware adapter (or Dawn unavailable): the CPU backend is the right choice here.
      }
      return createBackend('cpu', opts);
    }
    default:
      throw new UserError(`unknown backend "${String(choice)}" (use auto, cpu, webgpu or reference)`);
  }
}
