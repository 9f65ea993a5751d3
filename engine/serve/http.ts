// repokv serve [--host 127.0.0.1] [--port 8080] [--model F] [--folder DIR ...] [--api-key K]
// The engine over the OpenAI-compatible HTTP API (node:http, no framework): GET /v1/models,
// POST /v1/chat/completions and POST /v1/completions, streamed as server-sent events when asked.
//
// Prefills are model jobs of the assistant service and run one at a time, in arrival order; requests
// past their prefill decode together, one engine step for all of them (continuous batching,
// batcher.ts), each step queued with the prefills. Concurrent sessions also share their common prefix: every
// prompt goes through the engine's prefix cache, so a repository block computed for one request is
// restored, not recomputed, for the next (usage.prompt_tokens_details.cached_tokens says how much).
//
// A request may name a repository context instead of resending it: `"repokv": {"folder": DIR}`, DIR
// one of the --folder folders the server was started with (no other path is ever read). The prompt
// is then laid out as the assistant's (engine/assistant/conversation.ts): the repository block
// first, the same tokens in every request, then the request's own messages.
//
// Safety: loopback by default; any other address needs a bearer token (--api-key or
// REPOKV_API_KEY), checked on every request when set. Bodies and prompts have size limits; errors
// come back in OpenAI's shape, {"error": {"message", "type", "param", "code"}}.

import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { createHash, timingSafeEqual, randomUUID } from 'node:crypto';
import { isIP } from 'node:net';
import { basename, resolve } from 'node:path';
import { AssistantService } from '../assistant/service.js';
import { chatPromptTokens, SYSTEM_INSTRUCTIONS } from '../assistant/conversation.js';
import type { BackendChoice, Engine, GenerateResult, StopReason } from '../engine.js';
import { DecodeBatcher } from './batcher.js';
import { RepoWatcher } from '../context/watch.js';
import { UserError } from '../errors.js';
import { GGUFError } from '../gguf/reader.js';
import { cacheDir } from '../paths.js';
import { flagNumber, flagString, parseArgs } from '../commands/args.js';

export const HTTP_USAGE = `usage: repokv serve [--host 127.0.0.1] [--port 8080] [--model F] [--folder DIR ...] [--api-key K]
                   [--backend auto|cpu|webgpu|reference] [--ctx N] [--cache-dir D]
                   [--max-body-bytes N] [--max-prompt-tokens N]
  OpenAI-compatible HTTP API: GET /v1/models, POST /v1/chat/completions, POST /v1/completions.
  A request may add "repokv": {"folder": DIR} (DIR one of the --folder folders), or
  "repokv": {"context": ID} (an id from GET /v1/repokv/contexts: the content hash of that folder's
  repository block; 409 if the folder has changed since), to put that
  repository first in the prompt, its KV reused across requests.
  Binding an address other than loopback needs --api-key (or REPOKV_API_KEY).
usage: repokv serve --stdio [--cache-dir D]
  JSON-RPC over stdin/stdout for the VS Code extension.`;

export interface HttpServerOptions {
  host?: string;
  /** 0: any free port. */
  port?: number;
  model?: string;
  backend?: BackendChoice;
  contextSize?: number;
  cacheDir: string;
  /** The only folders whose contents the server may read (repository contexts). */
  folders?: string[];
  apiKey?: string;
  /** Largest request body, in bytes (default 1 MiB). */
  maxBodyBytes?: number;
  /** Longest prompt, in tokens (default: the context size). */
  maxPromptTokens?: number;
  /** Most requests decoded together per step (continuous batching; default 16). */
  maxBatch?: number;
  onWarning?: (message: string) => void;
}

export interface HttpServerStats {
  requests: number;
  completed: number;
  cancelled: number;
  /** Prompt tokens computed and restored from the cache, over all requests. */
  computedTokens: number;
  cachedTokens: number;
  /** Tokens generated, over all requests (cancelled ones included, up to where they stopped). */
  generatedTokens: number;
}

const DEFAULT_MAX_BODY = 1 << 20;
const DEFAULT_MAX_TOKENS = 256;

export function isLoopback(host: string): boolean {
  const h = host.replace(/^\[|\]$/g, '').toLowerCase();
  if (h === 'localhost' || h === '::1' || h === '0:0:0:0:0:0:0:1') return true;
  if (isIP(h) === 4) return h.startsWith('127.');
  if (h.startsWith('::ffff:')) return h.slice(7).startsWith('127.');
  return false;
}

/** An error answered as JSON in OpenAI's shape. */
export class HttpError extends Error {
  constructor(
    readonly status: number,
    message: string,
    readonly type = 'invalid_request_error',
    readonly code: string | null = null,
    readonly param: string | null = null,
  ) {
    super(message);
  }
}

export class OpenAIServer {
  readonly service: AssistantService;
  readonly stats: HttpServerStats = { requests: 0, completed: 0, cancelled: 0, computedTokens: 0, cachedTokens: 0, generatedTokens: 0 };
  private server: Server | null = null;
  private readonly folders: Map<string, string>;
  private readonly modelId: string;
  private readonly created = Math.floor(Date.now() / 1000);

  constructor(private readonly opts: HttpServerOptions) {
    const host = opts.host ?? '127.0.0.1';
    if (!isLoopback(host) && !opts.apiKey) {
      throw new UserError(`serving on ${host} (not a loopback address) needs an API key: pass --api-key or set REPOKV_API_KEY`);
    }
    this.service = new AssistantService({ cacheDir: opts.cacheDir, model: opts.model, backend: opts.backend, contextSize: opts.contextSize, onWarning: opts.onWarning });
    this.modelId = basename(this.service.model().path).replace(/\.gguf$/i, '');
    // Folders by their resolved path; a request may name one by the path as given or as resolved.
    this.folders = new Map();
    for (const f of opts.folders ?? []) {
      this.folders.set(f, resolve(f));
      this.folders.set(resolve(f), resolve(f));
    }
  }

  /** Loads the model (and opens the folders' contexts), then listens; resolves with the bound port. */
  async listen(): Promise<{ host: string; port: number }> {
    const roots = [...new Set(this.folders.values())];
    await this.service.loadEngine();
    for (const r of roots) {
      await this.service.openContext([r]);
      // Edits to a served folder reach its context before the next request (and change its content id).
      const ctx = await this.service.withEngine(async (_engine, repo) => repo([r]));
      try {
        this.watchers.push(await RepoWatcher.start(ctx.walk, (b) => void this.service.refresh(b.paths.length ? b.paths : [r])));
      } catch (e) {
        // Too many folders to watch: served as a snapshot; a restart picks up edits.
        (this.opts.onWarning ?? ((m: string) => console.error(m)))(`repokv serve: not watching ${r} (${(e as Error).message}); its context stays as opened until a restart`);
      }
    }
    const server = createServer((req, res) => void this.handle(req, res));
    this.server = server;
    const host = this.opts.host ?? '127.0.0.1';
    await new Promise<void>((ok, fail) => {
      server.once('error', fail);
      server.listen(this.opts.port ?? 8080, host, () => ok());
    });
    const addr = server.address();
    return { host, port: typeof addr === 'object' && addr ? addr.port : (this.opts.port ?? 0) };
  }

  private watchers: RepoWatcher[] = [];

  async close(): Promise<void> {
    for (const w of this.watchers.splice(0)) await w.close();
    const s = this.server;
    this.server = null;
    if (s) {
      s.closeAllConnections();
      await new Promise<void>((r) => s.close(() => r()));
    }
    await this.service.close();
  }

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    try {
      this.authorize(req);
      const url = new URL(req.url ?? '/', 'http://localhost');
      const path = url.pathname.replace(/\/+$/, '');
      if (req.method === 'GET' && path === '/v1/models') return sendJson(res, 200, { object: 'list', data: [this.modelEntry()] });
      if (req.method === 'GET' && path.startsWith('/v1/models/')) {
        if (decodeURIComponent(path.slice('/v1/models/'.length)) !== this.modelId) throw new HttpError(404, `model "${path.slice(11)}" does not exist`, 'invalid_request_error', 'model_not_found', 'model');
        return sendJson(res, 200, this.modelEntry());
      }
      if (req.method === 'GET' && path === '/health') return sendJson(res, 200, { status: 'ok', ...this.stats, batch: this.batcher ? { ...this.batcher.stats } : null });
      if (req.method === 'GET' && path === '/v1/repokv/contexts') return sendJson(res, 200, { object: 'list', data: await this.listContexts() });
      if (path === '/v1/chat/completions' || path === '/v1/completions') {
        if (req.method !== 'POST') throw new HttpError(405, `${path} takes POST`);
        const body = await readJson(req, this.opts.maxBodyBytes ?? DEFAULT_MAX_BODY);
        return await this.complete(req, res, body, path === '/v1/chat/completions' ? 'chat' : 'text');
      }
      throw new HttpError(404, `no route ${req.method} ${path}`, 'invalid_request_error', 'not_found');
    } catch (e) {
      this.fail(res, e);
    }
  }

  private modelEntry() {
    // max_model_len as vLLM names it: clients (RepoKV's remote mode among them) size prompts by it.
    const ctx = this.service.model().contextSize;
    return { id: this.modelId, object: 'model', created: this.created, owned_by: 'repokv', ...(ctx ? { max_model_len: ctx } : {}) };
  }

  private authorize(req: IncomingMessage): void {
    const key = this.opts.apiKey;
    if (!key) return;
    const m = /^Bearer\s+(.+)$/i.exec(req.headers.authorization ?? '');
    const given = Buffer.from(m?.[1]?.trim() ?? '');
    const want = Buffer.from(key);
    if (given.length !== want.length || !timingSafeEqual(given, want)) {
      throw new HttpError(401, 'missing or wrong API key: send "Authorization: Bearer <key>" with the key the server was started with', 'authentication_error', 'invalid_api_key');
    }
  }

  private fail(res: ServerResponse, e: unknown): void {
    let err: HttpError;
    if (e instanceof HttpError) err = e;
    else if (e instanceof UserError || e instanceof GGUFError) err = new HttpError(400, e.message);
    else err = new HttpError(500, `engine error: ${(e as Error).message}`, 'server_error');
    if (err.status >= 500) console.error((e as Error).stack ?? e);
    if (res.headersSent) {
      // Mid-stream: an error event, then the end of the stream.
      if (!res.writableEnded) {
        res.write(`data: ${JSON.stringify(errorBody(err))}\n\n`);
        res.end();
      }
      return;
    }
    sendJson(res, err.status, errorBody(err), err.status === 413 ? { connection: 'close' } : {});
  }

  private async complete(req: IncomingMessage, res: ServerResponse, body: Record<string, unknown>, kind: 'chat' | 'text'): Promise<void> {
    const p = parseParams(body, kind);
    const folder = this.folderOf(body);
    this.stats.requests++;
    // The client going away (closed socket, aborted fetch) cancels the request, queued or running.
    const ac = new AbortController();
    res.on('close', () => {
      if (!res.writableFinished) ac.abort();
    });
    const id = `${kind === 'chat' ? 'chatcmpl' : 'cmpl'}-${randomUUID().replace(/-/g, '').slice(0, 24)}`;
    const created = Math.floor(Date.now() / 1000);
    const model = this.modelId;
    const chunk = (choice: Record<string, unknown>, extra: Record<string, unknown> = {}) => ({
      id,
      object: kind === 'chat' ? 'chat.completion.chunk' : 'text_completion',
      created,
      model,
      choices: [{ index: 0, ...choice }],
      ...extra,
    });
    let started = false;
    const start = () => {
      if (started) return;
      started = true;
      res.writeHead(200, { 'content-type': 'text/event-stream; charset=utf-8', 'cache-control': 'no-cache', connection: 'keep-alive', ...(contextId ? { 'x-repokv-context': contextId } : {}) });
      if (kind === 'chat') res.write(sse(chunk({ delta: { role: 'assistant', content: '' }, logprobs: null, finish_reason: null })));
    };
    // The prefill is one job of the engine's queue; the generation then decodes in the batcher,
    // one step for every request generating at that moment (continuous batching).
    let contextId: string | null = null;
    const pre = await this.service.withEngine(async (engine, repoContext) => {
      if (ac.signal.aborted) return null;
      let segments: Int32Array[] | null = null;
      if (folder) {
        segments = (await repoContext([folder.root])).segmentTokens;
        const now = this.contextId(folder.root, segments);
        // A context named by id must still be that content (a byte-identical repository block).
        if (folder.id && folder.id !== now) throw new HttpError(409, `repository context "${folder.id}" has changed (the folder now gives "${now}"); send "repokv": {"context": "${now}"} or name the folder`, 'invalid_request_error', 'context_changed', 'repokv.context');
        contextId = now;
      }
      const prompt = kind === 'chat' ? chatPrompt(engine, p.messages!, segments) : textPrompt(engine, p.prompt!);
      const limit = Math.min(this.opts.maxPromptTokens ?? engine.contextSize, engine.contextSize);
      if (prompt.length > limit) {
        throw new HttpError(400, `the prompt has ${prompt.length} tokens, more than this server accepts (${limit}); shorten the messages`, 'invalid_request_error', 'context_length_exceeded', kind === 'chat' ? 'messages' : 'prompt');
      }
      const room = engine.contextSize - prompt.length;
      if (room < 1 || (p.maxTokens !== undefined && p.maxTokens > room)) {
        throw new HttpError(400, `the prompt (${prompt.length} tokens) and max_tokens (${p.maxTokens ?? 1}) exceed the context of ${engine.contextSize} tokens; lower max_tokens or shorten the messages`, 'invalid_request_error', 'context_length_exceeded', 'max_tokens');
      }
      const maxTokens = p.maxTokens ?? Math.min(DEFAULT_MAX_TOKENS, room);
      const seq = engine.createSequence(Math.min(engine.contextSize, prompt.length + maxTokens + 1));
      try {
        const logits = await engine.prefill(seq, prompt, { signal: ac.signal });
        const report = seq.lastPrefill!;
        this.stats.cachedTokens += report.cachedTokens;
        this.stats.computedTokens += report.computedTokens;
        return { engine, seq, logits, prompt: prompt.length, cached: report.cachedTokens, maxTokens };
      } catch (e) {
        engine.freeSequence(seq);
        if ((e as Error).name === 'AbortError') return null;
        throw e;
      }
    });
    let r: { prompt: number; cached: number; result: GenerateResult } | null = null;
    if (pre) {
      try {
        if (p.stream) start();
        const gen = this.batcherFor(pre.engine).generate(pre.seq, pre.logits, { maxTokens: pre.maxTokens, temperature: p.temperature, topK: p.topK, topP: p.topP, seed: p.seed, stop: p.stop, signal: ac.signal });
        let step = await gen.next();
        while (!step.done) {
          if (step.value.token >= 0) this.stats.generatedTokens++;
          const text = step.value.text;
          if (p.stream && text) {
            res.write(sse(kind === 'chat' ? chunk({ delta: { content: text }, logprobs: null, finish_reason: null }) : chunk({ text, logprobs: null, finish_reason: null })));
          }
          step = await gen.next();
        }
        r = { prompt: pre.prompt, cached: pre.cached, result: step.value };
      } finally {
        await this.service.withEngine(async (engine) => engine.freeSequence(pre.seq));
      }
    }
    if (!r || r.result.stopReason === 'cancelled') {
      this.stats.cancelled++;
      if (!res.writableEnded) res.end();
      return;
    }
    this.stats.completed++;
    const finish = finishReason(r.result.stopReason);
    const usage = { prompt_tokens: r.prompt, completion_tokens: r.result.tokens.length, total_tokens: r.prompt + r.result.tokens.length, prompt_tokens_details: { cached_tokens: r.cached } };
    if (p.stream) {
      start();
      res.write(sse(kind === 'chat' ? chunk({ delta: {}, logprobs: null, finish_reason: finish }) : chunk({ text: '', logprobs: null, finish_reason: finish })));
      if (p.includeUsage) res.write(sse({ id, object: kind === 'chat' ? 'chat.completion.chunk' : 'text_completion', created, model, choices: [], usage }));
      res.end('data: [DONE]\n\n');
      return;
    }
    const choice =
      kind === 'chat'
        ? { index: 0, message: { role: 'assistant', content: r.result.text, refusal: null }, logprobs: null, finish_reason: finish }
        : { index: 0, text: r.result.text, logprobs: null, finish_reason: finish };
    sendJson(res, 200, { id, object: kind === 'chat' ? 'chat.completion' : 'text_completion', created, model, choices: [choice], usage, ...(contextId ? { repokv: { context: contextId } } : {}) }, contextId ? { 'x-repokv-context': contextId } : {});
  }

  private batcher: DecodeBatcher | null = null;
  /** The decode batcher of the (one) loaded engine; its steps queue with the service's other jobs. */
  private batcherFor(engine: Engine): DecodeBatcher {
    if (!this.batcher || this.batcherEngine !== engine) {
      this.batcher = new DecodeBatcher(engine, (job) => this.service.withEngine(() => job()), this.opts.maxBatch ?? 16);
      this.batcherEngine = engine;
    }
    return this.batcher;
  }
  private batcherEngine: Engine | null = null;

  /** The repository folder a request names, checked against the folders the server was given. */
  /** Content ids of repository contexts seen (GET /v1/repokv/contexts, or a folder request) → folder. */
  private contextIds = new Map<string, string>();

  /** The id of a repository context: a hash of its token ids (the prompt block it puts first). */
  private contextId(root: string, segmentTokens: Int32Array[]): string {
    // A context's token arrays are replaced, not changed, when its files change: hash each set once.
    let id = this.hashed.get(segmentTokens);
    if (!id) {
      const h = createHash('sha256');
      for (const t of segmentTokens) h.update(new Uint8Array(t.buffer, t.byteOffset, t.byteLength));
      id = 'ctx-' + h.digest('hex').slice(0, 24);
      this.hashed.set(segmentTokens, id);
    }
    this.contextIds.set(id, root);
    return id;
  }
  private hashed = new WeakMap<Int32Array[], string>();

  /** Every served folder's current context: id (content hash), folder, tokens. */
  private async listContexts(): Promise<{ id: string; object: 'repokv.context'; folder: string; tokens: number; files: number }[]> {
    const roots = [...new Set(this.folders.values())];
    return this.service.withEngine(async (_engine, repoContext) => {
      const out = [];
      for (const root of roots) {
        const ctx = await repoContext([root]);
        out.push({ id: this.contextId(root, ctx.segmentTokens), object: 'repokv.context' as const, folder: root, tokens: ctx.stats.tokens, files: ctx.stats.files });
      }
      return out;
    });
  }

  private folderOf(body: Record<string, unknown>): { root: string; id?: string } | null {
    const ext = body.repokv;
    if (ext === undefined || ext === null) return null;
    if (typeof ext !== 'object' || Array.isArray(ext)) throw new HttpError(400, '"repokv" must be an object such as {"folder": "<one of the server\'s --folder folders>"}', 'invalid_request_error', null, 'repokv');
    const id = (ext as Record<string, unknown>).context;
    if (id !== undefined) {
      if (typeof id !== 'string') throw new HttpError(400, '"repokv.context" must be a string (an id from GET /v1/repokv/contexts)', 'invalid_request_error', null, 'repokv.context');
      const known = this.contextIds.get(id);
      if (!known) throw new HttpError(404, `no repository context "${id}" on this server; GET /v1/repokv/contexts lists the current ones`, 'invalid_request_error', 'context_not_found', 'repokv.context');
      return { root: known, id };
    }
    const f = (ext as Record<string, unknown>).folder;
    if (f === undefined) return null;
    if (typeof f !== 'string') throw new HttpError(400, '"repokv.folder" must be a string', 'invalid_request_error', null, 'repokv.folder');
    const root = this.folders.get(f);
    if (!root) {
      const known = [...new Set(this.folders.values())];
      throw new HttpError(
        403,
        known.length ? `folder "${f}" is not one this server serves (${known.join(', ')}); start it with --folder to add one` : `this server serves no folders; start it with --folder DIR to use repository contexts`,
        'permission_error',
        'folder_not_served',
        'repokv.folder',
      );
    }
    return { root };
  }
}

interface Params {
  messages?: { role: string; content: string }[];
  prompt?: string;
  stream: boolean;
  includeUsage: boolean;
  maxTokens?: number;
  temperature: number;
  topP: number;
  topK: number;
  seed?: number;
  stop: string[];
}

function parseParams(b: Record<string, unknown>, kind: 'chat' | 'text'): Params {
  const bad = (param: string, message: string) => new HttpError(400, message, 'invalid_request_error', null, param);
  const num = (name: string, lo: number, hi: number, int = false): number | undefined => {
    const v = b[name];
    if (v === undefined || v === null) return undefined;
    if (typeof v !== 'number' || !Number.isFinite(v) || v < lo || v > hi || (int && !Number.isInteger(v))) throw bad(name, `"${name}" must be ${int ? 'an integer' : 'a number'} from ${lo} to ${hi}`);
    return v;
  };
  const p: Params = {
    stream: b.stream === true,
    includeUsage: !!(b.stream_options && typeof b.stream_options === 'object' && (b.stream_options as Record<string, unknown>).include_usage === true),
    // OpenAI's default temperature is 1; 0 is greedy.
    temperature: num('temperature', 0, 2) ?? 1,
    topP: num('top_p', 0, 1) ?? 1,
    topK: num('top_k', 0, 1e6, true) ?? 0,
    seed: num('seed', -(2 ** 53), 2 ** 53, true),
    maxTokens: num('max_completion_tokens', 1, 1e7, true) ?? num('max_tokens', 1, 1e7, true),
    stop: [],
  };
  if (p.seed !== undefined) p.seed = p.seed >>> 0;
  const n = num('n', 1, 128, true);
  if (n !== undefined && n !== 1) throw bad('n', 'only n = 1 is supported');
  if (b.stop !== undefined && b.stop !== null) {
    const s = typeof b.stop === 'string' ? [b.stop] : b.stop;
    if (!Array.isArray(s) || s.length > 4 || !s.every((x) => typeof x === 'string')) throw bad('stop', '"stop" must be a string or an array of at most 4 strings');
    p.stop = s as string[];
  }
  if (kind === 'chat') {
    if (!Array.isArray(b.messages) || b.messages.length === 0) throw bad('messages', '"messages" must be a non-empty array');
    p.messages = b.messages.map((m: unknown, i: number) => {
      if (!m || typeof m !== 'object') throw bad(`messages[${i}]`, `messages[${i}] must be an object`);
      const { role, content } = m as Record<string, unknown>;
      if (typeof role !== 'string' || !['system', 'developer', 'user', 'assistant'].includes(role)) throw bad(`messages[${i}].role`, `messages[${i}].role must be system, developer, user or assistant`);
      return { role: role === 'developer' ? 'system' : role, content: contentText(content, `messages[${i}].content`) };
    });
  } else {
    const pr = Array.isArray(b.prompt) && b.prompt.length === 1 ? b.prompt[0] : b.prompt;
    if (typeof pr !== 'string') throw bad('prompt', '"prompt" must be a string (one prompt per request)');
    if (pr.length === 0) throw bad('prompt', '"prompt" must not be empty');
    p.prompt = pr;
  }
  return p;
}

/** A message's text: a string, or an array of text parts (other part types are refused). */
function contentText(c: unknown, param: string): string {
  if (typeof c === 'string') return c;
  if (c === null || c === undefined) return '';
  if (Array.isArray(c)) {
    return c
      .map((part) => {
        if (part && typeof part === 'object' && (part as Record<string, unknown>).type === 'text' && typeof (part as Record<string, unknown>).text === 'string') return (part as { text: string }).text;
        throw new HttpError(400, `${param}: only text parts are supported`, 'invalid_request_error', null, param);
      })
      .join('');
  }
  throw new HttpError(400, `${param} must be a string or an array of text parts`, 'invalid_request_error', null, param);
}

/**
 * Chat prompt tokens, each message's content tokenized on its own (so a conversation's prompt only
 * grows at the end). With a repository: the assistant's instructions and the repository block form
 * the system message, byte-identical in every request; the request's own system text comes after it.
 */
function chatPrompt(engine: Engine, messages: { role: string; content: string }[], repo: Int32Array[] | null): number[] {
  if (!engine.chatTemplate) throw new HttpError(400, `the model ${basename(engine.modelPath)} has no chat template; use /v1/completions or an instruct model`);
  const tok = engine.tokenizer;
  const enc = (t: string) => tok.encode(t, { addSpecial: false, parseSpecial: false });
  const out: { role: string; content: { text: string } | { tokens: ArrayLike<number>[] } }[] = [];
  let rest = messages;
  if (repo) {
    const sys = messages.filter((m) => m.role === 'system').map((m) => m.content);
    rest = messages.filter((m) => m.role !== 'system');
    out.push({ role: 'system', content: { tokens: [enc(SYSTEM_INSTRUCTIONS), ...repo, ...(sys.length ? [enc('\n\n' + sys.join('\n\n'))] : [])] } });
  }
  for (const m of rest) out.push({ role: m.role, content: { text: m.content } });
  return chatPromptTokens(engine.chatTemplate, tok, out);
}

function textPrompt(engine: Engine, prompt: string): number[] {
  return Array.from(engine.tokenizer.encode(prompt, { addSpecial: true, parseSpecial: false }));
}

function finishReason(r: StopReason): 'stop' | 'length' {
  return r === 'eog' || r === 'stop' ? 'stop' : 'length';
}

function errorBody(e: HttpError) {
  return { error: { message: e.message, type: e.type, param: e.param, code: e.code } };
}

function sse(obj: unknown): string {
  return `data: ${JSON.stringify(obj)}\n\n`;
}

function sendJson(res: ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}): void {
  const data = JSON.stringify(body);
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(data), ...headers });
  res.end(data);
}

/** The request body as a JSON object; 413 past `limit` bytes (without reading the rest), 400 when not JSON. */
async function readJson(req: IncomingMessage, limit: number): Promise<Record<string, unknown>> {
  const tooBig = () => new HttpError(413, `the request body is larger than this server accepts (${limit} bytes); send less, or name a repository context ("repokv": {"folder": …}) instead of resending it`, 'invalid_request_error', 'request_too_large');
  const declared = Number(req.headers['content-length']);
  if (Number.isFinite(declared) && declared > limit) {
    req.resume();
    throw tooBig();
  }
  const parts: Buffer[] = [];
  let size = 0;
  for await (const c of req) {
    size += (c as Buffer).length;
    if (size > limit) {
      req.resume();
      throw tooBig();
    }
    parts.push(c as Buffer);
  }
  let v: unknown;
  try {
    v = JSON.parse(Buffer.concat(parts).toString('utf8'));
  } catch (e) {
    throw new HttpError(400, `the request body is not valid JSON (${(e as Error).message})`, 'invalid_request_error', 'invalid_json');
  }
  if (!v || typeof v !== 'object' || Array.isArray(v)) throw new HttpError(400, 'the request body must be a JSON object', 'invalid_request_error', 'invalid_json');
  return v as Record<string, unknown>;
}

/** `repokv serve` in HTTP mode: runs until SIGINT/SIGTERM. */
export async function runHttp(args: string[]): Promise<number> {
  const folders: string[] = [];
  // --folder may repeat; parseArgs keeps the last, so collect them first.
  const rest: string[] = [];
  for (let i = 0; i < args.length; i++) {
    if (args[i] === '--folder') {
      if (args[i + 1] === undefined) throw new UserError('option --folder needs a value');
      folders.push(args[++i]);
    } else if (args[i].startsWith('--folder=')) folders.push(args[i].slice('--folder='.length));
    else rest.push(args[i]);
  }
  const p = parseArgs(rest, ['help']);
  if (p.flags.has('help')) {
    console.error(HTTP_USAGE);
    return 0;
  }
  if (p.positional.length) folders.push(...p.positional);
  const backend = flagString(p, 'backend') as BackendChoice | undefined;
  const server = new OpenAIServer({
    host: flagString(p, 'host') ?? '127.0.0.1',
    port: flagNumber(p, 'port', 8080),
    model: flagString(p, 'model'),
    backend,
    contextSize: p.flags.has('ctx') ? flagNumber(p, 'ctx', 0) : undefined,
    cacheDir: flagString(p, 'cache-dir') ?? cacheDir(),
    folders,
    apiKey: flagString(p, 'api-key') ?? (process.env.REPOKV_API_KEY || undefined),
    maxBodyBytes: flagNumber(p, 'max-body-bytes', DEFAULT_MAX_BODY),
    maxPromptTokens: flagString(p, 'max-prompt-tokens') !== undefined ? flagNumber(p, 'max-prompt-tokens', 0) : undefined,
  });
  const m = server.service.model();
  if (m.notice) console.error(m.notice);
  const { host, port } = await server.listen();
  const shown = host.includes(':') ? `[${host}]` : host;
  console.log(`repokv: OpenAI-compatible API on http://${shown}:${port}/v1 (model ${basename(m.path)}, backend ${server.service.model().backend})`);
  await new Promise<void>((done) => {
    process.once('SIGINT', done);
    process.once('SIGTERM', done);
  });
  await server.close();
  return 0;
}
