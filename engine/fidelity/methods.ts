// Methods of the fidelity harness: anything that answers a task instance in one of SCBench's two
// shared-context modes. Dense attention on our engine and llama.cpp (dense, same file, same ids) are
// here now; sparse prefill (issue 8) and retrieval decode plug in as an AttentionPlugin on the engine
// method, or as a FidelityMethod of their own.

import { execFile } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { Engine, type BackendChoice, type RetrievalOptions, type Sequence, type SparseOptions } from '../engine.js';
import type { CpuBackend } from '../backends/cpu/index.js';
import { checkAnswerPath, promptOf, type SharedContextMode, type TaskInstance } from './tasks.js';

export interface QuestionResult {
  depth: number;
  expected: number[];
  generated: number[];
  correct: boolean;
  /** Prompt tokens of this question (context and earlier turns included). */
  promptTokens: number;
  /** Tokens this question computed (prefill after the cache, plus decode steps). */
  computedTokens: number;
  ms: number;
  /** Smallest logit lead of the chosen token over the runner-up across the answer steps (null: unknown). */
  margin: number | null;
}

/**
 * Attention recall exp(lse_sparse − lse_full) per [layer][head] (research/seed_systems.md §1.7, the
 * Qwen2.5-1M metric), averaged over the measured query rows. Dense attention is 1 by definition and
 * reports null: nothing to measure until a sparse method plugs in.
 */
export interface RecallReport {
  perLayerHead: number[][];
  min: number;
  mean: number;
}

export interface InstanceResult {
  method: string;
  task: TaskInstance['task'];
  length: number;
  mode: SharedContextMode;
  questions: QuestionResult[];
  /** The shared context's own prefill (computed tokens and time). */
  contextComputedTokens: number;
  contextMs: number;
  /** Everything this instance computed: one context prefill + the questions. */
  totalComputedTokens: number;
  totalMs: number;
  /** True when later questions reused the context's KV instead of recomputing it. */
  prefixShared: boolean;
  recall: RecallReport | null;
}

export interface FidelityMethod {
  readonly name: string;
  readonly info: Record<string, unknown>;
  run(inst: TaskInstance, mode: SharedContextMode): Promise<InstanceResult>;
  close(): Promise<void>;
}

/**
 * Where sparse prefill and retrieval decode plug into the engine method: `install` gets the loaded
 * Engine once (e.g. to set a sparse-prefill policy with its patterns and budgets on the backend);
 * `recall` reports the attention recall of the last prefill against dense, when the method measures it.
 */
export interface AttentionPlugin {
  readonly name: string;
  readonly info?: Record<string, unknown>;
  install(engine: Engine): void | Promise<void>;
  recall?(): RecallReport | null;
}

export interface EngineMethodOptions {
  model: string;
  backend: BackendChoice;
  threads?: number;
  /** Longest prompt + answer the method must hold, in tokens. */
  maxTokens: number;
  /** Paged KV (prefix sharing across requests): 'auto' (when the backend offers a pool), 'host', 'off'. */
  paging?: 'auto' | 'host' | 'off';
  attention?: AttentionPlugin;
  name?: string;
  /** The engine's own sparse prefill (issue 8): config, threshold, chunk. */
  sparse?: SparseOptions;
  /** Retrieval decode (issue 9). */
  retrieval?: RetrievalOptions;
}

/**
 * Recall of the engine's own sparse prefill on the CPU backend: turns on the host path's sampling (the
 * last 64 rows of every sparse call against dense attention over the same keys), reports the mean per
 * layer/head, and the density of everything it computed.
 */
export class EngineSparseRecall implements AttentionPlugin {
  readonly name: string;
  readonly info: Record<string, unknown>;
  private engine: Engine | null = null;
  private stats0 = { kept: 0, causal: 0 };
  constructor(name: string, info: Record<string, unknown> = {}) {
    this.name = name;
    this.info = { sparse: 'engine sparse prefill (CPU backend host path)', ...info };
  }
  install(engine: Engine): void {
    this.engine = engine;
    const b = engine.backend as CpuBackend;
    if (engine.backend.info.name === 'cpu') b.host.recall = [];
    const st = engine.backend.sparseStats;
    this.stats0 = { kept: st?.keptEntries ?? 0, causal: st?.causalEntries ?? 0 };
  }
  recall(): RecallReport | null {
    const e = this.engine;
    if (!e || e.backend.info.name !== 'cpu') return null;
    const rec = (e.backend as CpuBackend).host.recall;
    if (!rec || !rec.length) return null;
    const perLayerHead = rec.map((l) => (l ?? []).map((rows) => (rows.length ? rows.reduce((x, y) => x + y, 0) / rows.length : 1)));
    const flat = perLayerHead.flat();
    return { perLayerHead, min: Math.min(...flat), mean: flat.reduce((x, y) => x + y, 0) / flat.length };
  }
  /** Retrieval decode: share of the keys the searches scanned, and of the keys attended, per decode row. */
  retrievalShares(): { scanned: number; attended: number; rows: number } | null {
    const st = this.engine?.backend.sparseStats;
    if (!st || !st.retrievalRows) return null;
    return { scanned: (st.retrievalScanned ?? 0) / (st.retrievalKeys ?? 1), attended: (st.retrievalAttended ?? 0) / (st.retrievalKeys ?? 1), rows: st.retrievalRows };
  }

  density(): number {
    const st = this.engine?.backend.sparseStats;
    if (!st) return 1;
    const c = st.causalEntries - this.stats0.causal;
    return c ? (st.keptEntries - this.stats0.kept) / c : 1;
  }
}

function argmaxMargin(logits: Float32Array): { token: number; margin: number } {
  let t = 0;
  let b1 = -Infinity;
  let b2 = -Infinity;
  for (let i = 0; i < logits.length; i++) {
    const v = logits[i];
    if (v > b1) {
      b2 = b1;
      b1 = v;
      t = i;
    } else if (v > b2) b2 = v;
  }
  return { token: t, margin: b1 - b2 };
}

/** Our engine, dense attention unless a plugin says otherwise. */
export class EngineMethod implements FidelityMethod {
  readonly name: string;
  readonly info: Record<string, unknown>;
  private used = false;
  private constructor(
    private engine: Engine,
    private readonly opts: EngineMethodOptions,
  ) {
    this.name = opts.name ?? (opts.attention ? `${opts.attention.name}-${opts.backend}` : `dense-${opts.backend}`);
    this.info = { engine: 'repokv', backend: engine.backend.info.name, attention: opts.attention?.name ?? 'dense', paged: !!engine.kvCache, ...(opts.attention?.info ?? {}) };
  }

  static async create(opts: EngineMethodOptions): Promise<EngineMethod> {
    return new EngineMethod(await EngineMethod.load(opts), opts);
  }

  private static async load(opts: EngineMethodOptions): Promise<Engine> {
    const engine = await Engine.load({ model: opts.model, backend: opts.backend, threads: opts.threads, contextSize: opts.maxTokens, kv: { paging: opts.paging ?? 'auto' }, sparse: opts.sparse ?? { mode: 'off' }, retrieval: opts.retrieval });
    try {
      await opts.attention?.install(engine);
    } catch (e) {
      engine.dispose();
      throw e;
    }
    return engine;
  }

  /** Question k as a new sequence (its prompt from the prefix cache or computed), answered greedily. */
  private async askFresh(eng: Engine, inst: TaskInstance, k: number, mode: SharedContextMode, cap: number): Promise<QuestionResult> {
    const q = inst.questions[k];
    const prompt = promptOf(inst, k, mode);
    const a = performance.now();
    const seq = eng.createSequence(cap);
    try {
      const logits = await eng.prefill(seq, prompt);
      const { generated, margin } = await this.answerWith(eng, seq, logits, q.answer.length);
      const computed = seq.lastPrefill!.computedTokens + q.answer.length - 1;
      return this.result(q, generated, margin, prompt.length, computed, performance.now() - a);
    } finally {
      eng.freeSequence(seq);
    }
  }

  private answer(seq: Sequence, logits: Float32Array, n: number): Promise<{ generated: number[]; margin: number }> {
    return this.answerWith(this.engine, seq, logits, n);
  }

  private async answerWith(engine: Engine, seq: Sequence, logits: Float32Array, n: number): Promise<{ generated: number[]; margin: number }> {
    const generated: number[] = [];
    let margin = Infinity;
    let cur = logits;
    for (let i = 0; i < n; i++) {
      const r = argmaxMargin(cur);
      generated.push(r.token);
      margin = Math.min(margin, r.margin);
      if (i + 1 < n) [cur] = await engine.decodeStep([seq], [r.token]);
    }
    return { generated, margin };
  }

  async run(inst: TaskInstance, mode: SharedContextMode): Promise<InstanceResult> {
    // Every run starts from an empty KV cache (a fresh engine), so that tokens computed count only
    // what this run shares, not what an earlier run left in the prefix cache.
    if (this.used) {
      await this.engine.close();
      this.engine = await EngineMethod.load(this.opts);
    }
    this.used = true;
    const e = this.engine;
    const t0 = performance.now();
    const questions: QuestionResult[] = [];
    const cap = e.contextSize;
    let contextComputedTokens = 0;
    let contextMs = 0;
    let total = 0;
    const paged = !!e.kvCache;
    if (mode === 'single') {
      // Cold prompts: a fresh engine per question (nothing cached), context + question in one prefill.
      for (let k = 0; k < inst.questions.length; k++) {
        if (k > 0) {
          await this.engine.close();
          this.engine = await EngineMethod.load(this.opts);
        }
        const r = await this.askFresh(this.engine, inst, k, mode, cap);
        total += r.computedTokens;
        questions.push(r);
      }
    } else if (mode === 'multi-request') {
      // One context prefill (kept alive so its pages stay cached), then each question as a new
      // sequence whose prompt is context + question: the prefix cache supplies the context's KV.
      const ctxSeq = paged ? e.createSequence(cap) : null;
      if (ctxSeq) {
        await e.prefill(ctxSeq, inst.context);
        contextComputedTokens = ctxSeq.lastPrefill!.computedTokens;
        contextMs = ctxSeq.lastPrefill!.ms;
        total += contextComputedTokens;
      }
      for (let k = 0; k < inst.questions.length; k++) {
        const r = await this.askFresh(e, inst, k, mode, cap);
        total += r.computedTokens;
        questions.push(r);
      }
      if (ctxSeq) e.freeSequence(ctxSeq);
    } else {
      // One session: context, then each question after the previous turns with their golden answers.
      const seq = e.createSequence(cap);
      try {
        await e.prefill(seq, inst.context);
        contextComputedTokens = seq.lastPrefill!.computedTokens;
        contextMs = seq.lastPrefill!.ms;
        total += contextComputedTokens;
        let pending: number[] = [];
        for (let k = 0; k < inst.questions.length; k++) {
          const q = inst.questions[k];
          const a = performance.now();
          const logits = await e.prefill(seq, [...pending, ...q.tokens]);
          const before = seq.length;
          const { generated, margin } = await this.answer(seq, logits, q.answer.length);
          const computed = seq.lastPrefill!.computedTokens + q.answer.length - 1;
          total += computed;
          questions.push(this.result(q, generated, margin, seq.length - (q.answer.length - 1), computed, performance.now() - a));
          // The history keeps the golden answer: reuse the generated tokens' KV when they match it.
          const fed = generated.slice(0, -1);
          if (fed.every((t, i) => t === q.answer[i])) pending = [q.answer[q.answer.length - 1]];
          else {
            seq.truncate(before);
            pending = q.answer.slice();
          }
        }
      } finally {
        e.freeSequence(seq);
      }
    }
    return {
      method: this.name,
      task: inst.task,
      length: inst.length,
      mode,
      questions,
      contextComputedTokens,
      contextMs,
      totalComputedTokens: total,
      totalMs: performance.now() - t0,
      prefixShared: paged,
      recall: this.opts.attention?.recall?.() ?? null,
    };
  }

  private result(q: TaskInstance['questions'][number], generated: number[], margin: number, promptTokens: number, computedTokens: number, ms: number): QuestionResult {
    return { depth: q.depth, expected: q.answer, generated, correct: generated.every((t, i) => t === q.answer[i]), promptTokens, computedTokens, ms, margin };
  }

  async close(): Promise<void> {
    await this.engine.close();
  }
}

const llamaChild = fileURLToPath(new URL('./llama-child.mjs', import.meta.url));

interface LlamaJobResult {
  contextMs: number;
  contextTokens: number;
  questions: { generated: number[]; margin: number | null; ms: number; computedTokens: number }[];
}

/** Runs llama.cpp's child on a list of jobs (one per instance and mode). */
export function runLlamaJobs(model: string, jobs: { mode: SharedContextMode; inst: TaskInstance }[], opts: { threads?: number; flashAttention?: boolean; timeoutMs?: number } = {}): Promise<{ jobs: LlamaJobResult[]; version: string }> {
  const req = {
    model,
    threads: opts.threads,
    flashAttention: opts.flashAttention ?? false,
    jobs: jobs.map(({ mode, inst }) => ({ mode, context: inst.context, questions: inst.questions.map((q) => ({ tokens: q.tokens, answer: q.answer })) })),
  };
  return new Promise((resolve, reject) => {
    const child = execFile(process.execPath, [llamaChild], { maxBuffer: 256 << 20, timeout: opts.timeoutMs ?? 3_600_000 }, (err, stdout, stderr) => {
      if (err) return reject(new Error(`llama.cpp (node-llama-cpp) failed: ${err.message}\n${stderr}`));
      const line = stdout.trim().split('\n').pop() ?? '';
      try {
        resolve(JSON.parse(line));
      } catch {
        reject(new Error(`llama.cpp printed no JSON:\n${stdout}\n${stderr}`));
      }
    });
    child.stdin!.end(JSON.stringify(req));
  });
}

/** llama.cpp, dense, on the same file and token ids (node-llama-cpp's CPU build, its own process). */
export class LlamaMethod implements FidelityMethod {
  readonly name = 'llama.cpp';
  readonly info: Record<string, unknown>;
  constructor(
    private readonly model: string,
    private readonly opts: { threads?: number; flashAttention?: boolean } = {},
  ) {
    this.info = { engine: 'llama.cpp (node-llama-cpp, CPU)', attention: 'dense', flashAttention: opts.flashAttention ?? false };
  }

  async run(inst: TaskInstance, mode: SharedContextMode): Promise<InstanceResult> {
    const t0 = performance.now();
    // llama.cpp's child knows SCBench's two modes; a single cold prompt answers as multi-request does
    // with dense attention (only the tokens computed differ, counted below as cold).
    const r = await runLlamaJobs(this.model, [{ mode: mode === 'single' ? 'multi-request' : mode, inst }], this.opts);
    const job = r.jobs[0];
    this.info.version = r.version;
    let promptTokens = inst.context.length;
    const questions: QuestionResult[] = job.questions.map((g, k) => {
      const q = inst.questions[k];
      promptTokens = mode === 'multi-turn' ? promptTokens + (k > 0 ? inst.questions[k - 1].answer.length : 0) + q.tokens.length : inst.context.length + q.tokens.length;
      return { depth: q.depth, expected: q.answer, generated: g.generated, correct: g.generated.every((t, i) => t === q.answer[i]), promptTokens, computedTokens: g.computedTokens, ms: g.ms, margin: g.margin };
    });
    return {
      method: this.name,
      task: inst.task,
      length: inst.length,
      mode,
      questions,
      contextComputedTokens: job.contextTokens,
      contextMs: job.contextMs,
      totalComputedTokens: job.contextTokens + questions.reduce((s, q) => s + q.computedTokens, 0),
      totalMs: performance.now() - t0,
      prefixShared: true,
      recall: null,
    };
  }

  async close(): Promise<void> {}
}

/** The answer-path check of every question of an instance in a mode (null: all unambiguous). */
export function instanceAmbiguity(inst: TaskInstance, mode: SharedContextMode): string | null {
  for (let k = 0; k < inst.questions.length; k++) {
    const why = checkAnswerPath(promptOf(inst, k, mode), inst.questions[k].answer);
    if (why) return why;
  }
  return null;
}
