// The assistant as a service: one engine, repository contexts by set of roots, sessions on disk,
// answers streamed with cancellation and measured. The CLI (`repokv ask`), the JSON-RPC server
// (`repokv serve --stdio`, used by the VS Code extension) and the tests all go through it.
//
// One model job runs at a time (the engine is one process's memory and cores): asks, context opens
// and refreshes queue up in arrival order. Sessions keep their KV through the engine's prefix cache,
// not through a live sequence: the next turn's prompt starts with every token of the previous one,
// so its pages are found in memory, or on disk after a restart (engine/kv/README.md).
//
// With `remote` set, answers come from an OpenAI-compatible server instead of a local model
// (engine/assistant/remote.ts): the repository context is still built here from the local files, and
// sent first and byte-identical in every request, so the remote's prefix cache keeps it; no model is
// loaded locally. Sessions, contexts and attachments work the same way.

import { existsSync, statSync } from 'node:fs';
import { join, resolve, sep } from 'node:path';
import { Engine, type BackendChoice, type PrefillReport, type StopReason } from '../engine.js';
import { UserError } from '../errors.js';
import { BUILTIN_MODEL_NOTICE, resolveModel } from '../model/default-model.js';
import { cacheStats, purgeCache, type StoreSummary } from '../kv/maintenance.js';
import type { WalkOptions, Invalidation } from '../context/index.js';
import { RepoContext } from './repo-context.js';
import { repoPrefixTokens, repoPromptTokens, SessionStore, type SessionRecord, type Turn } from './conversation.js';
import { estimatingTokenizer, REMOTE_NOTICE, RemoteClient, remoteMessages, type RemoteModel, type RemoteOptions } from './remote.js';

export interface AssistantOptions {
  /** Base folder: kv/ (the KV cache), sessions/, contexts/ (document manifests). */
  cacheDir: string;
  /** GGUF model file; absent: $REPOKV_MODEL, else the built-in synthetic model (answers meaningless). */
  model?: string;
  backend?: BackendChoice;
  /** Context size in tokens (default: the model's, at most 32768). */
  contextSize?: number;
  /** Retrieval attention at decode for contexts from 16K tokens (issue 9; default off). */
  retrieval?: boolean;
  /** Tokens the repository may take (default: the context less a quarter, 1024–8192, for the conversation). */
  contextBudget?: number;
  /** Memory budget of the KV page pool, in bytes. */
  memoryBytes?: number;
  /** Size cap of the KV cache on disk, in bytes. */
  maxDiskBytes?: number;
  /** Walk options: extra ignore globs (gitignore syntax) and the like. */
  walk?: WalkOptions;
  onWarning?: (message: string) => void;
  /** Answer through this OpenAI-compatible server instead of a local model. */
  remote?: RemoteOptions;
}

export interface ModelInfo {
  path: string;
  builtin: boolean;
  /** Set when the built-in synthetic model is used: say so wherever answers are shown. */
  notice?: string;
  backend?: string;
  contextSize?: number;
  loaded: boolean;
  /** Set when answers come from a remote engine (the model is its id there, once known). */
  remote?: { endpoint: string; model?: string; notice: string };
}

export interface ContextStatus {
  roots: string[];
  files: number;
  excluded: number;
  tokens: number;
  walkMs: number;
  tokenizeMs: number;
  invalidation: Invalidation | null;
}

export interface Progress {
  stage: 'load' | 'index' | 'prefill';
  done: number;
  total: number;
}

export interface Attachment {
  label: string;
  text: string;
}

/** A session as stored: the conversation record plus what the service keeps beside it. */
export interface Session extends SessionRecord {
  updated?: string;
  /** Material added to the session ("Add to session"), sent with the next question. */
  pending?: Attachment[];
  /** Status of each answer, by assistant turn index (for the panel's status lines after a reload). */
  statuses?: Record<number, AnswerStatus>;
}

export interface SessionSummary {
  id: string;
  title: string;
  roots: string[];
  created: string;
  updated: string;
  turns: number;
}

export interface AskRequest {
  question: string;
  /** Continue (or start, with this id) a session; absent: a new session. */
  sessionId?: string;
  /** Roots of a new session (default: the service's last opened roots). */
  roots?: string[];
  /** Extra material for this question only (e.g. the selection for "Explain the selection"). */
  attachments?: Attachment[];
  /** Title of a new session (default: the question's start). */
  title?: string;
  maxTokens?: number;
  temperature?: number;
  signal?: AbortSignal;
  onToken?: (text: string) => void;
  onProgress?: (p: Progress) => void;
  /** Called once the repository context is ready (before prefill). */
  onContext?: (c: ContextStatus) => void;
  /** The prompt's token ids, before prefill (benchmarks: the same prompt for a peer engine). */
  onPrompt?: (tokens: readonly number[]) => void;
}

export interface AnswerStatus {
  session: string;
  backend: string;
  promptTokens: number;
  /** Prompt tokens restored from the KV cache, and by tier. */
  cachedTokens: number;
  computedTokens: number;
  fromMemory: number;
  fromDisk: number;
  /** Tokens of the repository block in the prompt (the shared prefix). */
  repoTokens: number;
  files: number;
  prefillMs: number;
  timeToFirstTokenMs: number;
  answerTokens: number;
  tokensPerSecond: number | null;
  stopReason: StopReason;
  /**
   * Set for answers from a remote engine: prompt, cached and computed tokens are then the remote's
   * own counts (cachedTokens 0 and cachedReported false when it does not report them), repoTokens an
   * estimate (the remote's tokenizer is not here), and prefillMs the wait for the first token.
   */
  remote?: { endpoint: string; model: string; cachedReported: boolean };
  /** The computed prompt tokens were prefilled with sparse attention (above the sparse threshold). */
  sparsePrefill?: boolean;
}

export interface AnswerResult {
  answer: string;
  status: AnswerStatus;
}

export interface CacheStatus {
  dir: string;
  fileBytes: number;
  stores: StoreSummary[];
  /** The live engine's page pool, when a model is loaded with paged KV. */
  engine: { poolPages: number; usedPages: number; cachedPages: number; hostPages: number; pageTokens: number } | null;
  contexts: { roots: string[]; files: number; tokens: number }[];
  sessions: number;
}

export class AssistantService {
  private engine: Engine | null = null;
  private loading: Promise<Engine> | null = null;
  private contexts = new Map<string, RepoContext>();
  /** Changed paths not yet applied, per context key. */
  private stale = new Map<string, Set<string>>();
  private queue: Promise<unknown> = Promise.resolve();
  private lastRoots: string[] | null = null;
  private closed = false;
  readonly sessions: SessionStore;
  private readonly resolved: { path: string; builtin: boolean };
  private readonly remote: RemoteClient | null;
  private remoteModel: RemoteModel | null = null;

  constructor(private opts: AssistantOptions) {
    this.sessions = new SessionStore(join(opts.cacheDir, 'sessions'));
    this.remote = opts.remote ? new RemoteClient(opts.remote) : null;
    this.resolved = this.remote ? { path: this.remote.base, builtin: false } : resolveModel(opts.model);
  }

  /** The remote engine's API base, when answers come from one. */
  get remoteEndpoint(): string | null {
    return this.remote?.base ?? null;
  }

  get kvDir(): string {
    return join(this.opts.cacheDir, 'kv');
  }

  model(): ModelInfo {
    if (this.remote) {
      const m = this.remoteModel;
      return { path: this.remote.base, builtin: false, backend: 'remote', contextSize: m?.contextTokens, loaded: !!m, remote: { endpoint: this.remote.base, model: m?.id ?? this.opts.remote?.model, notice: REMOTE_NOTICE } };
    }
    const e = this.engine;
    return {
      path: this.resolved.path,
      builtin: this.resolved.builtin,
      notice: this.resolved.builtin ? BUILTIN_MODEL_NOTICE : undefined,
      backend: e?.backend.info.name,
      contextSize: e?.contextSize,
      loaded: !!e,
    };
  }

  /** Loads the model (once); later calls return the same engine. */
  loadEngine(onProgress?: (p: Progress) => void): Promise<Engine> {
    if (this.closed) return Promise.reject(new Error('the assistant service is closed'));
    if (this.remote) return Promise.reject(new UserError(`answers come from the remote engine at ${this.remote.base}; there is no local model here`));
    if (this.engine) return Promise.resolve(this.engine);
    this.loading ??= Engine.load({
      model: this.resolved.path,
      backend: this.opts.backend ?? 'auto',
      contextSize: this.opts.contextSize ?? 32768,
      onLoadProgress: onProgress ? (done, total) => onProgress({ stage: 'load', done, total }) : undefined,
      kv: { cacheDir: this.kvDir, memoryBytes: this.opts.memoryBytes, maxDiskBytes: this.opts.maxDiskBytes, onWarning: this.opts.onWarning },
      retrieval: this.opts.retrieval ? { mode: 'on' } : undefined,
    }).then(
      (e) => {
        this.engine = e;
        this.loading = null;
        return e;
      },
      (err) => {
        this.loading = null;
        throw err;
      },
    );
    return this.loading;
  }

  /** Runs model work one job at a time, in order. */
  private serialize<T>(job: () => Promise<T>): Promise<T> {
    const run = this.queue.then(job, job);
    this.queue = run.catch(() => undefined);
    return run;
  }

  /**
   * Runs `job` with the loaded engine as one model job, queued behind the others (the OpenAI-compatible
   * HTTP server's requests go through here, so they never run beside an ask or a context refresh).
   */
  withEngine<T>(job: (engine: Engine, repo: (roots: string[]) => Promise<RepoContext>) => Promise<T>): Promise<T> {
    return this.serialize(async () => job(await this.loadEngine(), (roots) => this.contextFor(roots)));
  }

  /** Walks, documents and tokenizes the roots (remembered between runs); cheap when nothing changed. */
  openContext(roots: string[], opts: { onProgress?: (p: Progress) => void } = {}): Promise<ContextStatus> {
    return this.serialize(async () => statusOf(await this.contextFor(roots, opts.onProgress, true)));
  }

  /**
   * Builds the repository context and prefills its prefix (template start, instructions, document)
   * into the KV cache, so that the first question computes only itself. Returns where the prefix's
   * tokens came from (cached vs computed).
   */
  warm(roots: string[], opts: { onProgress?: (p: Progress) => void; signal?: AbortSignal } = {}): Promise<{ context: ContextStatus; prefill: PrefillReport | null; prefixTokens: number; ms: number }> {
    return this.serialize(async () => {
      const engine = await this.loadEngine(opts.onProgress);
      const template = engine.chatTemplate;
      if (!template) throw new UserError(`${engine.modelPath}: the model has no chat template; use an instruct/chat model`);
      const repo = await this.contextFor(roots, opts.onProgress, true);
      const prefix = repoPrefixTokens(template, engine.tokenizer, repo.segmentTokens);
      const seq = engine.createSequence(Math.min(engine.contextSize, prefix.length + 1));
      const t0 = performance.now();
      try {
        await engine.prefill(seq, prefix, { signal: opts.signal, onProgress: (done, total) => opts.onProgress?.({ stage: 'prefill', done, total }) });
        await engine.flushCache();
        return { context: statusOf(repo), prefill: seq.lastPrefill, prefixTokens: prefix.length, ms: performance.now() - t0 };
      } finally {
        engine.freeSequence(seq);
      }
    });
  }

  /**
   * Paths created, changed or deleted (absolute). They are applied before the next answer (or now,
   * with `now`), re-reading only those files; only the document from the first changed file on is
   * prefilled again.
   */
  refresh(paths: string[], now = false): Promise<ContextStatus[]> {
    const abs = paths.map((p) => resolve(p));
    const touched: string[] = [];
    for (const [key, ctx] of this.contexts) {
      const hit = abs.filter((p) => ctx.roots.some((r) => p === r || p.startsWith(r + sep)));
      if (hit.length === 0) continue;
      let s = this.stale.get(key);
      if (!s) this.stale.set(key, (s = new Set()));
      for (const p of hit) s.add(p);
      touched.push(key);
    }
    if (!now) return Promise.resolve([]);
    return this.serialize(async () => {
      const out: ContextStatus[] = [];
      for (const key of touched) {
        const ctx = this.contexts.get(key);
        if (ctx) out.push(statusOf(await this.contextFor(ctx.roots)));
      }
      return out;
    });
  }

  private async contextFor(rootsIn: string[], onProgress?: (p: Progress) => void, rewalk = false): Promise<RepoContext> {
    const roots = rootsIn.map((r) => resolve(r));
    for (const r of roots) {
      if (!existsSync(r)) throw new UserError(`folder "${r}" does not exist`);
      if (!statSync(r).isDirectory()) throw new UserError(`"${r}" is not a folder`);
    }
    this.lastRoots = roots;
    // Remote: tokens are estimated (the remote's tokenizer is not here), the budget from its context.
    let counter: { tokenizer: Pick<Engine['tokenizer'], 'encode'>; budget: number; modelKey: string };
    if (this.remote) {
      this.remoteModel = await this.remote.model();
      counter = { tokenizer: estimatingTokenizer, budget: this.budgetFor(await this.remote.contextTokens()), modelKey: 'remote:estimate' };
    } else {
      const engine = await this.loadEngine(onProgress);
      counter = { tokenizer: engine.tokenizer, budget: this.budgetFor(engine.contextSize), modelKey: engine.modelPath };
    }
    const key = JSON.stringify(roots);
    const prev = this.contexts.get(key);
    const changed = this.stale.get(key);
    if (prev && !rewalk && !changed?.size) return prev;
    onProgress?.({ stage: 'index', done: 0, total: 1 });
    this.stale.delete(key);
    const ctx = await RepoContext.open(roots, counter.tokenizer, {
      budgetTokens: counter.budget,
      stateDir: join(this.opts.cacheDir, 'contexts'),
      modelKey: counter.modelKey,
      walk: this.opts.walk,
      previous: prev && !rewalk ? prev : undefined,
      changed: prev && !rewalk ? changed : undefined,
      // Files tokenized of files walked (never "done" here: the stage ends below).
      onProgress: onProgress ? (done, total) => onProgress({ stage: 'index', done: Math.min(done, total - 1), total: Math.max(1, total) }) : undefined,
    });
    this.contexts.set(key, ctx);
    onProgress?.({ stage: 'index', done: 1, total: 1 });
    return ctx;
  }

  /**
   * The repository gets a fixed share of the context, the same on every turn (a budget that moved
   * with the conversation would change the document, and with it every cached page); the rest is
   * the conversation's: earlier turns, the question and the answer.
   */
  private budgetFor(contextSize: number): number {
    const conversationShare = Math.min(8192, Math.max(1024, Math.floor(contextSize / 4)));
    return Math.min(this.opts.contextBudget ?? Infinity, contextSize - conversationShare);
  }

  /** Answers a question in a session, streaming text through `onToken`. */
  ask(req: AskRequest): Promise<AnswerResult> {
    return this.serialize(() => this.answer(req));
  }

  /** The session a question goes to: the one named, else a new one over the request's roots. */
  private sessionFor(req: AskRequest): Session {
    let session = req.sessionId ? this.getSession(req.sessionId) : undefined;
    if (!session) {
      const roots = req.roots ?? this.lastRoots;
      if (!roots?.length) throw new UserError('no folder to answer about: open a repository context first');
      session = this.sessions.create(roots.map((r) => resolve(r)), req.sessionId, req.title ?? '') as Session;
    }
    return session;
  }

  /** Keeps a finished (or stopped) turn in its session, with its status. */
  private saveTurn(session: Session, req: AskRequest, question: string, answer: string, tokens: number[] | undefined, st: AnswerStatus): void {
    session.turns.push({ role: 'user', content: question }, tokens ? { role: 'assistant', content: answer, tokens } : { role: 'assistant', content: answer });
    session.pending = [];
    session.statuses = { ...(session.statuses ?? {}), [session.turns.length - 1]: st };
    if (!session.title) session.title = req.question.slice(0, 80);
    session.updated = new Date().toISOString();
    this.sessions.save(session);
  }

  private async answer(req: AskRequest): Promise<AnswerResult> {
    if (this.remote) return this.remoteAnswer(this.remote, req);
    const t0 = performance.now();
    const maxTokens = req.maxTokens ?? 256;
    const session = this.sessionFor(req);
    const engine = await this.loadEngine(req.onProgress);
    const template = engine.chatTemplate;
    if (!template) throw new UserError(`${engine.modelPath}: the model has no chat template; use an instruct/chat model`);
    const repo = await this.contextFor(session.roots, req.onProgress);
    const status = statusOf(repo);
    req.onContext?.(status);
    const extra = [...(session.pending ?? []), ...(req.attachments ?? [])];
    const question = withAttachments(req.question, extra);
    const prompt = repoPromptTokens(template, engine.tokenizer, repo.segmentTokens, session.turns, question);
    req.onPrompt?.(prompt);
    if (prompt.length + maxTokens > engine.contextSize) {
      throw new UserError(`session ${session.id} has outgrown the context (${prompt.length} prompt tokens + ${maxTokens} for the answer > ${engine.contextSize}); start a new session or raise the context size`);
    }
    const seq = engine.createSequence(Math.min(engine.contextSize, prompt.length + maxTokens + 1));
    try {
      const tPrefill0 = performance.now();
      let logits: Float32Array;
      try {
        logits = await engine.prefill(seq, prompt, { signal: req.signal, onProgress: (done, total) => req.onProgress?.({ stage: 'prefill', done, total }) });
      } catch (e) {
        if ((e as Error).name === 'AbortError') return { answer: '', status: this.measure(session, repo, engine, prompt.length, seq.lastPrefill, t0, tPrefill0, 0, performance.now(), [], 'cancelled') };
        throw e;
      }
      const tPrefill = performance.now();
      const gen = engine.generate(seq, logits, { maxTokens, temperature: req.temperature ?? 0, signal: req.signal });
      let r = await gen.next();
      let tFirst = 0;
      while (!r.done) {
        if (!tFirst) tFirst = performance.now();
        if (r.value.text) req.onToken?.(r.value.text);
        // Let I/O through between tokens (a cancellation, streamed text), even when the backend computes synchronously.
        await new Promise<void>((done) => setImmediate(done));
        r = await gen.next();
      }
      const tEnd = performance.now();
      const result = r.value;
      const st = this.measure(session, repo, engine, prompt.length, seq.lastPrefill, t0, tPrefill0, tFirst, tEnd, result.tokens, result.stopReason, tPrefill);
      // The turn is kept even when stopped early: its tokens are exactly what the KV holds.
      this.saveTurn(session, req, question, result.text, result.tokens, st);
      await engine.flushCache();
      return { answer: result.text, status: st };
    } finally {
      engine.freeSequence(seq);
    }
  }

  /**
   * An answer from the remote engine: the repository block as text first (the same bytes in every
   * request), earlier turns, the question; streamed, with the remote's own token counts.
   */
  private async remoteAnswer(remote: RemoteClient, req: AskRequest): Promise<AnswerResult> {
    const t0 = performance.now();
    const session = this.sessionFor(req);
    const repo = await this.contextFor(session.roots, req.onProgress);
    req.onContext?.(statusOf(repo));
    const question = withAttachments(req.question, [...(session.pending ?? []), ...(req.attachments ?? [])]);
    const repoText = repo.document.segments.map((s) => s.text).join('');
    const model = await remote.model(req.signal);
    this.remoteModel = model;
    const tChat = performance.now();
    const r = await remote.chat({ messages: remoteMessages(repoText, session.turns, question), maxTokens: req.maxTokens ?? 256, temperature: req.temperature ?? 0, signal: req.signal, onDelta: req.onToken });
    const u = r.usage;
    const prompt = u?.promptTokens ?? 0;
    const cached = u?.cachedTokens ?? 0;
    const answerTokens = u?.completionTokens || r.chunks;
    const firstMs = r.timeToFirstTokenMs;
    const st: AnswerStatus = {
      session: session.id,
      backend: `remote ${model.id}`,
      promptTokens: prompt,
      cachedTokens: cached,
      computedTokens: Math.max(0, prompt - cached),
      fromMemory: 0,
      fromDisk: 0,
      repoTokens: repo.stats.tokens,
      files: repo.stats.files,
      prefillMs: Math.round(firstMs ?? r.totalMs),
      timeToFirstTokenMs: Math.round(tChat - t0 + (firstMs ?? r.totalMs)),
      answerTokens,
      tokensPerSecond: answerTokens > 1 && firstMs !== null && r.totalMs > firstMs ? (answerTokens - 1) / ((r.totalMs - firstMs) / 1000) : null,
      stopReason: r.finishReason === 'cancelled' ? 'cancelled' : r.finishReason === 'length' ? 'length' : 'stop',
      remote: { endpoint: remote.base, model: model.id, cachedReported: u?.cachedTokens != null },
    };
    // Kept even when stopped early, as the local path does (the remote sees the text next turn).
    this.saveTurn(session, req, question, r.text, undefined, st);
    return { answer: r.text, status: st };
  }

  private measure(
    session: Session,
    repo: RepoContext,
    engine: Engine,
    promptTokens: number,
    report: PrefillReport | null,
    t0: number,
    tPrefill0: number,
    tFirst: number,
    tEnd: number,
    tokens: number[],
    stopReason: StopReason,
    tPrefill = tEnd,
  ): AnswerStatus {
    return {
      session: session.id,
      backend: engine.backend.info.name,
      promptTokens,
      cachedTokens: report?.cachedTokens ?? 0,
      computedTokens: report?.computedTokens ?? promptTokens,
      fromMemory: (report?.fromDevice ?? 0) + (report?.fromHost ?? 0),
      fromDisk: report?.fromDisk ?? 0,
      repoTokens: repo.stats.tokens,
      files: repo.stats.files,
      prefillMs: Math.round(tPrefill - tPrefill0),
      timeToFirstTokenMs: Math.round((tFirst || tEnd) - t0),
      answerTokens: tokens.length,
      tokensPerSecond: tokens.length > 1 && tFirst ? (tokens.length - 1) / ((tEnd - tFirst) / 1000) : null,
      stopReason,
      ...(report?.sparse ? { sparsePrefill: true } : {}),
    };
  }

  // Sessions ---------------------------------------------------------------------------------------

  getSession(id: string): Session | undefined {
    return this.sessions.load(id) as Session | undefined;
  }

  newSession(roots: string[], title = ''): Session {
    const s = this.sessions.create(roots.map((r) => resolve(r)), undefined, title) as Session;
    s.updated = s.created;
    this.sessions.save(s);
    return s;
  }

  listSessions(): SessionSummary[] {
    return (this.sessions.list() as Session[])
      .map((s) => ({ id: s.id, title: s.title || '(untitled)', roots: s.roots, created: s.created, updated: s.updated ?? s.created, turns: s.turns.length }))
      .sort((a, b) => b.updated.localeCompare(a.updated));
  }

  renameSession(id: string, title: string): Session {
    const s = this.requireSession(id);
    s.title = title.trim().slice(0, 200);
    this.sessions.save(s);
    return s;
  }

  deleteSession(id: string): boolean {
    return this.sessions.delete(id);
  }

  /** Adds material (a selection, a file, a problem) to go with the session's next question. */
  addToSession(id: string, a: Attachment): Session {
    const s = this.requireSession(id);
    s.pending = [...(s.pending ?? []), a];
    this.sessions.save(s);
    return s;
  }

  private requireSession(id: string): Session {
    const s = this.getSession(id);
    if (!s) throw new UserError(`session "${id}" does not exist`);
    return s;
  }

  // Cache ------------------------------------------------------------------------------------------

  cacheStatus(): CacheStatus {
    const stores = cacheStats(this.kvDir);
    const live = this.engine?.cacheStats();
    return {
      dir: this.kvDir,
      fileBytes: stores.reduce((s, x) => s + x.fileBytes, 0),
      stores,
      engine: live ? { poolPages: live.pool.pages, usedPages: live.pool.used, cachedPages: live.pool.cached, hostPages: live.host.pages, pageTokens: this.engine?.kvCache?.pageSize ?? 0 } : null,
      contexts: [...this.contexts.values()].map((c) => ({ roots: c.roots, files: c.stats.files, tokens: c.stats.tokens })),
      sessions: this.sessions.list().length,
    };
  }

  /** Deletes the KV cache on disk (the model is reloaded on the next question); sessions stay. */
  purgeCache(): Promise<{ removed: string[] }> {
    return this.serialize(async () => {
      await this.unload();
      return { removed: purgeCache(this.kvDir) };
    });
  }

  /** Releases the model (persisting what is pending); the next question loads it again. */
  private async unload(): Promise<void> {
    const e = this.engine ?? (this.loading ? await this.loading.catch(() => null) : null);
    this.engine = null;
    this.contexts.clear();
    if (e) await e.close();
  }

  async close(): Promise<void> {
    if (this.closed) return;
    await this.serialize(() => this.unload());
    this.closed = true;
  }
}

function statusOf(c: RepoContext): ContextStatus {
  const s = c.stats;
  return { roots: c.roots, files: s.files, excluded: s.excluded, tokens: s.tokens, walkMs: Math.round(s.walkMs), tokenizeMs: Math.round(s.tokenizeMs), invalidation: s.invalidation };
}

/** The question with added material after it, each piece labelled and fenced (data, not instructions). */
export function withAttachments(question: string, extra: Attachment[]): string {
  if (extra.length === 0) return question;
  const parts = extra.map((a) => `${a.label}:\n\`\`\`\n${a.text.replace(/```/g, '`\u200b``')}\n\`\`\``);
  return `${question}\n\n${parts.join('\n\n')}`;
}

export type { Turn };
