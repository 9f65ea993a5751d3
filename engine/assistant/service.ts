// The assistant as a service: one engine, repository contexts by set of roots, sessions on disk,
// answers streamed with cancellation and measured. The CLI (`repokv ask`), the JSON-RPC server
// (`repokv serve --stdio`, used by the VS Code extension) and the tests all go through it.
//
// One model job runs at a time (the engine is one process's memory and cores): asks, context opens
// and refreshes queue up in arrival order. Sessions keep their KV through the engine's prefix cache,
// not through a live sequence: the next turn's prompt starts with every token of the previous one,
// so its pages are found in memory, or on disk after a restart (engine/kv/README.md).

import { existsSync, statSync } from 'node:fs';
import { join, resolve, sep } from 'node:path';
import { Engine, type BackendChoice, type PrefillReport, type StopReason } from '../engine.js';
import { UserError } from '../errors.js';
import { BUILTIN_MODEL_NOTICE, resolveModel } from '../model/default-model.js';
import { cacheStats, purgeCache, type StoreSummary } from '../kv/maintenance.js';
import type { WalkOptions, Invalidation } from '../context/index.js';
import { RepoContext } from './repo-context.js';
import { repoPrefixTokens, repoPromptTokens, SessionStore, type SessionRecord, type Turn } from './conversation.js';

export interface AssistantOptions {
  /** Base folder: kv/ (the KV cache), sessions/, contexts/ (document manifests). */
  cacheDir: string;
  /** GGUF model file; absent: $REPOKV_MODEL, else the built-in synthetic model (answers meaningless). */
  model?: string;
  backend?: BackendChoice;
  /** Context size in tokens (default: the model's, at most 32768). */
  contextSize?: number;
  /** Tokens the repository may take (default: the context less a quarter, 1024–8192, for the conversation). */
  contextBudget?: number;
  /** Memory budget of the KV page pool, in bytes. */
  memoryBytes?: number;
  /** Size cap of the KV cache on disk, in bytes. */
  maxDiskBytes?: number;
  /** Walk options: extra ignore globs (gitignore syntax) and the like. */
  walk?: WalkOptions;
  onWarning?: (message: string) => void;
}

export interface ModelInfo {
  path: string;
  builtin: boolean;
  /** Set when the built-in synthetic model is used: say so wherever answers are shown. */
  notice?: string;
  backend?: string;
  contextSize?: number;
  loaded: boolean;
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

  constructor(private opts: AssistantOptions) {
    this.sessions = new SessionStore(join(opts.cacheDir, 'sessions'));
    this.resolved = resolveModel(opts.model);
  }

  get kvDir(): string {
    return join(this.opts.cacheDir, 'kv');
  }

  model(): ModelInfo {
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
    if (this.engine) return Promise.resolve(this.engine);
    this.loading ??= Engine.load({
      model: this.resolved.path,
      backend: this.opts.backend ?? 'auto',
      contextSize: this.opts.contextSize ?? 32768,
      onLoadProgress: onProgress ? (done, total) => onProgress({ stage: 'load', done, total }) : undefined,
      kv: { cacheDir: this.kvDir, memoryBytes: this.opts.memoryBytes, maxDiskBytes: this.opts.maxDiskBytes, onWarning: this.opts.onWarning },
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
    const engine = await this.loadEngine(onProgress);
    const key = JSON.stringify(roots);
    const prev = this.contexts.get(key);
    const changed = this.stale.get(key);
    if (prev && !rewalk && !changed?.size) return prev;
    onProgress?.({ stage: 'index', done: 0, total: 1 });
    this.stale.delete(key);
    const ctx = await RepoContext.open(roots, engine.tokenizer, {
      budgetTokens: this.repoBudget(engine),
      stateDir: join(this.opts.cacheDir, 'contexts'),
      modelKey: engine.modelPath,
      walk: this.opts.walk,
      previous: prev && !rewalk ? prev : undefined,
      changed: prev && !rewalk ? changed : undefined,
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
  private repoBudget(engine: Engine): number {
    const conversationShare = Math.min(8192, Math.max(1024, Math.floor(engine.contextSize / 4)));
    return Math.min(this.opts.contextBudget ?? Infinity, engine.contextSize - conversationShare);
  }

  /** Answers a question in a session, streaming text through `onToken`. */
  ask(req: AskRequest): Promise<AnswerResult> {
    return this.serialize(() => this.answer(req));
  }

  private async answer(req: AskRequest): Promise<AnswerResult> {
    const t0 = performance.now();
    const maxTokens = req.maxTokens ?? 256;
    let session = req.sessionId ? this.getSession(req.sessionId) : undefined;
    if (!session) {
      const roots = req.roots ?? this.lastRoots;
      if (!roots?.length) throw new UserError('no folder to answer about: open a repository context first');
      session = this.sessions.create(roots.map((r) => resolve(r)), req.sessionId, req.title ?? '') as Session;
    }
    const engine = await this.loadEngine(req.onProgress);
    const template = engine.chatTemplate;
    if (!template) throw new UserError(`${engine.modelPath}: the model has no chat template; use an instruct/chat model`);
    const repo = await this.contextFor(session.roots, req.onProgress);
    const status = statusOf(repo);
    req.onContext?.(status);
    const extra = [...(session.pending ?? []), ...(req.attachments ?? [])];
    const question = withAttachments(req.question, extra);
    const prompt = repoPromptTokens(template, engine.tokenizer, repo.segmentTokens, session.turns, question);
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
      session.turns.push({ role: 'user', content: question }, { role: 'assistant', content: result.text, tokens: result.tokens });
      session.pending = [];
      session.statuses = { ...(session.statuses ?? {}), [session.turns.length - 1]: st };
      if (!session.title) session.title = req.question.slice(0, 80);
      session.updated = new Date().toISOString();
      this.sessions.save(session);
      await engine.flushCache();
      return { answer: result.text, status: st };
    } finally {
      engine.freeSequence(seq);
    }
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
