// Remote engines: any OpenAI-compatible server (vLLM, SGLang, llama.cpp's llama-server, Ollama, or
// `repokv serve` on a GPU box) answering instead of the local model. Plain fetch and a small
// server-sent-events reader: no client library at run time.
//
// The repository context is still built here, from the local files (engine/assistant/repo-context.ts),
// and sent as text in the same layout as the local path (engine/assistant/conversation.ts):
//
//   system: instructions + repository document      ← the same bytes in every request and session
//   user / assistant: earlier turns
//   user: the question (+ attachments)
//
// so the remote's own prefix cache (vLLM's automatic prefix caching, SGLang's RadixAttention,
// llama-server's prompt cache, RepoKV's KV cache) finds the repository block and reuses it. Sparse
// prefill and retrieval attention are then the remote engine's business, not ours.
//
// Errors are one sentence each (UserError): the endpoint cannot be reached, refuses the key, does not
// serve the model, or does not answer like an OpenAI-compatible API.

import { UserError } from '../errors.js';
import { SYSTEM_INSTRUCTIONS, type Turn } from './conversation.js';

export const REMOTE_NOTICE =
  'sparse prefill and retrieval attention are the remote engine\'s business; RepoKV builds the repository block here and sends it first, byte-identical in every request, so the remote\'s prefix cache can reuse it';

export interface RemoteOptions {
  /** Base URL of the API, e.g. http://gpu-box:8000/v1 (a URL without a path gets /v1). */
  endpoint: string;
  /** Model id as the server names it (default: the first one /models lists). */
  model?: string;
  /** Sent as `Authorization: Bearer <key>` when set. */
  apiKey?: string;
  /** How to set the key, for the 401 message (e.g. "set REPOKV_API_KEY"). */
  keyHint?: string;
  /** The remote model's context in tokens, when the server does not say (default 32768). */
  contextTokens?: number;
  /** Timeout of the short requests (/models), ms (default 15 s). Answers have none but the caller's signal. */
  timeoutMs?: number;
}

export interface RemoteModel {
  id: string;
  /** The model's context, when the server reports it (vLLM's max_model_len and the like). */
  contextTokens?: number;
}

export interface RemoteMessage {
  role: 'system' | 'user' | 'assistant';
  content: string;
}

export interface RemoteUsage {
  promptTokens: number;
  completionTokens: number;
  /** Prompt tokens the remote took from its prefix cache; null when it does not report them. */
  cachedTokens: number | null;
}

export interface RemoteAnswer {
  text: string;
  /** 'cancelled' when the caller's signal ended it (the text so far is kept). */
  finishReason: 'stop' | 'length' | 'cancelled';
  usage: RemoteUsage | null;
  /** Content chunks received. */
  chunks: number;
  timeToFirstTokenMs: number | null;
  totalMs: number;
}

export interface ChatRequest {
  messages: RemoteMessage[];
  maxTokens?: number;
  temperature?: number;
  signal?: AbortSignal;
  onDelta?: (text: string) => void;
}

/** The messages of a question about a repository: the same structure as the local prompt. */
export function remoteMessages(repoText: string, turns: Turn[], question: string): RemoteMessage[] {
  return [{ role: 'system', content: SYSTEM_INSTRUCTIONS + repoText }, ...turns.map((t) => ({ role: t.role, content: t.content })), { role: 'user', content: question }];
}

/**
 * Tokens of a text, estimated without the remote's tokenizer (one per 3 bytes: BPE tokenizers of
 * current models average 3.5–4.5 bytes per token on source code, so budgets err on the safe side).
 */
export function estimateTokens(text: string): number {
  return Math.ceil(Buffer.byteLength(text, 'utf8') / 3);
}

/** A tokenizer stand-in that only counts (the repository budget is all the remote path needs). */
export const estimatingTokenizer = {
  encode(text: string): Int32Array {
    return new Int32Array(estimateTokens(text));
  },
};

/** The API base: http(s) only; a bare origin gets /v1; no trailing slash. */
export function normalizeEndpoint(url: string): string {
  let u: URL;
  try {
    u = new URL(url.trim());
  } catch {
    throw new UserError(`the endpoint "${url}" is not a URL; give the server's API base, e.g. http://127.0.0.1:8080/v1`);
  }
  if (u.protocol !== 'http:' && u.protocol !== 'https:') throw new UserError(`the endpoint "${url}" must be an http:// or https:// URL`);
  if (u.username || u.password) throw new UserError(`the endpoint "${url}" carries credentials in the URL; remove them and set the API key instead`);
  u.search = '';
  u.hash = '';
  let path = u.pathname.replace(/\/+$/, '');
  if (path === '') path = '/v1';
  // A pasted full route points at the base it belongs to.
  path = path.replace(/\/(chat\/completions|completions|models)$/, '');
  return `${u.origin}${path}`;
}

export class RemoteClient {
  readonly base: string;
  private modelCache: Promise<RemoteModel> | null = null;

  constructor(private readonly opts: RemoteOptions) {
    this.base = normalizeEndpoint(opts.endpoint);
  }

  private headers(json: boolean): Record<string, string> {
    const h: Record<string, string> = { accept: json ? 'application/json' : 'text/event-stream, application/json' };
    if (json) h['content-type'] = 'application/json';
    if (this.opts.apiKey) h.authorization = `Bearer ${this.opts.apiKey}`;
    return h;
  }

  private async send(path: string, init: RequestInit): Promise<Response> {
    try {
      return await fetch(`${this.base}${path}`, init);
    } catch (e) {
      if ((e as Error).name === 'AbortError') throw e;
      if ((e as Error).name === 'TimeoutError') throw new UserError(`the endpoint ${this.base} did not answer within ${Math.round((this.opts.timeoutMs ?? 15_000) / 1000)} s; is the server up and the URL right?`);
      throw new UserError(`cannot reach the endpoint ${this.base} (${networkReason(e)}); is the server running and the URL right?`);
    }
  }

  /** The models the server lists (GET /models). */
  async models(signal?: AbortSignal): Promise<RemoteModel[]> {
    const timeout = AbortSignal.timeout(this.opts.timeoutMs ?? 15_000);
    const res = await this.send('/models', { headers: this.headers(false), signal: signal ? AbortSignal.any([signal, timeout]) : timeout });
    if (!res.ok) throw await this.httpError(res, 'GET /models');
    const body = await this.json(res, 'GET /models');
    const data = (body as { data?: unknown }).data;
    if (!Array.isArray(data)) throw this.notOpenAI('GET /models', 'no "data" list');
    return data
      .filter((m): m is Record<string, unknown> => !!m && typeof m === 'object' && typeof (m as Record<string, unknown>).id === 'string')
      .map((m) => ({ id: m.id as string, contextTokens: contextOf(m) }));
  }

  /** The model to ask: the one configured (checked against /models), else the first listed. Cached. */
  model(signal?: AbortSignal): Promise<RemoteModel> {
    this.modelCache ??= (async () => {
      const list = await this.models(signal);
      const want = this.opts.model;
      if (want) {
        const m = list.find((x) => x.id === want);
        if (m) return m;
        throw new UserError(`the endpoint ${this.base} has no model "${want}"${list.length ? ` (it serves ${list.map((x) => x.id).slice(0, 8).join(', ')})` : ''}; pick one of its models`);
      }
      if (!list.length) throw new UserError(`the endpoint ${this.base} lists no models; name one explicitly`);
      return list[0];
    })();
    this.modelCache.catch(() => (this.modelCache = null));
    return this.modelCache;
  }

  /** The remote model's context in tokens: what the server reports, else the configured default. */
  async contextTokens(signal?: AbortSignal): Promise<number> {
    return (await this.model(signal)).contextTokens ?? this.opts.contextTokens ?? 32768;
  }

  /**
   * A streamed chat completion. Deltas go to `onDelta` as they arrive; the usage chunk
   * (stream_options.include_usage) gives the prompt, completion and cached token counts. A server
   * that answers a stream request with one JSON body is accepted too.
   */
  async chat(req: ChatRequest): Promise<RemoteAnswer> {
    const model = await this.model(req.signal);
    const t0 = performance.now();
    const body = {
      model: model.id,
      messages: req.messages,
      stream: true,
      stream_options: { include_usage: true },
      max_tokens: req.maxTokens ?? 256,
      temperature: req.temperature ?? 0,
    };
    let text = '';
    let chunks = 0;
    let tFirst: number | null = null;
    let finish: RemoteAnswer['finishReason'] = 'stop';
    let usage: RemoteUsage | null = null;
    const done = (): RemoteAnswer => ({ text, finishReason: finish, usage, chunks, timeToFirstTokenMs: tFirst, totalMs: performance.now() - t0 });
    const add = (s: string) => {
      if (!s) return;
      tFirst ??= performance.now() - t0;
      chunks++;
      text += s;
      req.onDelta?.(s);
    };
    let res: Response;
    try {
      res = await this.send('/chat/completions', { method: 'POST', headers: this.headers(true), body: JSON.stringify(body), signal: req.signal });
    } catch (e) {
      if ((e as Error).name === 'AbortError') {
        finish = 'cancelled';
        return done();
      }
      throw e;
    }
    if (!res.ok) throw await this.httpError(res, 'POST /chat/completions', model.id);
    const type = res.headers.get('content-type') ?? '';
    if (type.includes('application/json')) {
      // A server that ignores "stream": one chat.completion object.
      const j = (await this.json(res, 'POST /chat/completions')) as Record<string, unknown>;
      const choice = firstChoice(j);
      if (!choice) throw this.notOpenAI('POST /chat/completions', 'no choices');
      const msg = choice.message as Record<string, unknown> | undefined;
      add(typeof msg?.content === 'string' ? msg.content : '');
      finish = choice.finish_reason === 'length' ? 'length' : 'stop';
      usage = usageOf(j);
      return done();
    }
    if (!type.includes('text/event-stream')) {
      await res.body?.cancel().catch(() => undefined);
      throw this.notOpenAI('POST /chat/completions', `content-type ${type || 'missing'}`);
    }
    try {
      for await (const data of sseData(res.body!)) {
        if (data === '[DONE]') break;
        let j: Record<string, unknown>;
        try {
          j = JSON.parse(data) as Record<string, unknown>;
        } catch {
          throw this.notOpenAI('POST /chat/completions', 'an event that is not JSON');
        }
        if (j.error) throw new UserError(`the endpoint ${this.base} failed mid-answer: ${errorMessage(j) ?? 'unknown error'}`);
        const u = usageOf(j);
        if (u) usage = u;
        const choice = firstChoice(j);
        if (!choice) continue;
        const delta = choice.delta as Record<string, unknown> | undefined;
        if (delta && typeof delta.content === 'string') add(delta.content);
        if (choice.finish_reason === 'length') finish = 'length';
      }
    } catch (e) {
      if ((e as Error).name === 'AbortError' || req.signal?.aborted) {
        finish = 'cancelled';
        return done();
      }
      if (e instanceof UserError) throw e;
      throw new UserError(`the endpoint ${this.base} closed the answer's stream early (${networkReason(e)})`);
    }
    return done();
  }

  private async json(res: Response, what: string): Promise<unknown> {
    const type = res.headers.get('content-type') ?? '';
    const raw = await res.text();
    try {
      return JSON.parse(raw);
    } catch {
      throw this.notOpenAI(what, type.includes('json') ? 'a body that is not JSON' : `${type.split(';')[0] || 'no content type'} instead of JSON`);
    }
  }

  private notOpenAI(what: string, detail: string): UserError {
    return new UserError(`the endpoint ${this.base} did not answer like an OpenAI-compatible API (${what}: ${detail}); point it at the server's API base, e.g. http://host:8000/v1`);
  }

  private async httpError(res: Response, what: string, model?: string): Promise<UserError> {
    const raw = await res.text().catch(() => '');
    let parsed: unknown = null;
    try {
      parsed = JSON.parse(raw);
    } catch {
      /* not JSON */
    }
    const msg = parsed ? errorMessage(parsed) : null;
    const code = parsed ? errorCode(parsed) : null;
    const why = msg ? `: ${clip(msg)}` : '';
    const s = res.status;
    if (s === 401 || s === 403) {
      return new UserError(`the endpoint ${this.base} refused the request (HTTP ${s}${why}); ${this.opts.apiKey ? 'check the API key' : 'it needs an API key'}${this.opts.keyHint ? ` (${this.opts.keyHint})` : ''}`);
    }
    if (s === 404 && model && (code === 'model_not_found' || /model/i.test(msg ?? ''))) {
      return new UserError(`the endpoint ${this.base} has no model "${model}" (HTTP 404${why}); pick one of its models`);
    }
    if (s === 404 || s === 405) {
      if (!parsed) return this.notOpenAI(what, `HTTP ${s}`);
      return new UserError(`the endpoint ${this.base} has no ${what} route (HTTP ${s}${why}); point it at the server's API base, e.g. http://host:8000/v1`);
    }
    if (code === 'context_length_exceeded' || /context length|maximum context|too long|exceeds? the context/i.test(msg ?? '')) {
      return new UserError(`the remote model's context is too small for the repository and the question (HTTP ${s}${why}); lower the repository's budget (--context-budget, or the setting repokv.contextBudget) or use a model with a longer context`);
    }
    if (s === 429) return new UserError(`the endpoint ${this.base} is rate-limiting requests (HTTP 429${why}); try again later`);
    if (!parsed && s >= 400 && s < 500) return this.notOpenAI(what, `HTTP ${s} without a JSON error`);
    return new UserError(`the endpoint ${this.base} failed (${what}: HTTP ${s}${why})`);
  }
}

/** The data of each server-sent event, in order (multi-line data joined; comments skipped). */
export async function* sseData(body: ReadableStream<Uint8Array>): AsyncGenerator<string> {
  const decoder = new TextDecoder();
  let buf = '';
  let data: string[] = [];
  const reader = body.getReader();
  try {
    for (;;) {
      const { value, done } = await reader.read();
      buf += done ? decoder.decode() : decoder.decode(value, { stream: true });
      let nl: number;
      while ((nl = buf.search(/\r\n|\r|\n/)) >= 0) {
        const line = buf.slice(0, nl);
        buf = buf.slice(nl + (buf[nl] === '\r' && buf[nl + 1] === '\n' ? 2 : 1));
        if (line === '') {
          if (data.length) yield data.join('\n');
          data = [];
        } else if (line.startsWith('data:')) data.push(line.slice(line[5] === ' ' ? 6 : 5));
        // "event:", "id:", "retry:" and ":" comments carry nothing a chat completion needs.
      }
      if (done) break;
    }
    if (buf.startsWith('data:')) data.push(buf.slice(buf[5] === ' ' ? 6 : 5));
    if (data.length) yield data.join('\n');
  } finally {
    reader.releaseLock();
    await body.cancel().catch(() => undefined);
  }
}

function firstChoice(j: Record<string, unknown>): Record<string, unknown> | null {
  const c = j.choices;
  return Array.isArray(c) && c[0] && typeof c[0] === 'object' ? (c[0] as Record<string, unknown>) : null;
}

function usageOf(j: Record<string, unknown>): RemoteUsage | null {
  const u = j.usage as Record<string, unknown> | undefined | null;
  const num = (v: unknown) => (typeof v === 'number' && Number.isFinite(v) ? v : null);
  // llama-server reports its prompt cache in "timings" (cache_n) instead of prompt_tokens_details.
  const timings = j.timings as Record<string, unknown> | undefined;
  if (!u || typeof u !== 'object') return null;
  const details = u.prompt_tokens_details as Record<string, unknown> | undefined | null;
  return {
    promptTokens: num(u.prompt_tokens) ?? 0,
    completionTokens: num(u.completion_tokens) ?? 0,
    cachedTokens: num(details?.cached_tokens) ?? num(timings?.cache_n),
  };
}

/** The context length a /models entry reports, under any of the names servers use. */
function contextOf(m: Record<string, unknown>): number | undefined {
  const meta = m.meta as Record<string, unknown> | undefined;
  for (const v of [m.max_model_len, m.context_length, m.max_context_length, meta?.n_ctx, meta?.n_ctx_train]) {
    if (typeof v === 'number' && Number.isFinite(v) && v > 0) return v;
  }
  return undefined;
}

function errorMessage(j: unknown): string | null {
  if (!j || typeof j !== 'object') return null;
  const e = (j as Record<string, unknown>).error;
  if (typeof e === 'string') return e;
  if (e && typeof e === 'object' && typeof (e as Record<string, unknown>).message === 'string') return (e as { message: string }).message;
  const m = (j as Record<string, unknown>).message ?? (j as Record<string, unknown>).detail;
  return typeof m === 'string' ? m : null;
}

function errorCode(j: unknown): string | null {
  const e = j && typeof j === 'object' ? (j as Record<string, unknown>).error : null;
  const c = e && typeof e === 'object' ? (e as Record<string, unknown>).code : null;
  return typeof c === 'string' ? c : null;
}

function clip(s: string): string {
  const one = s.replace(/\s+/g, ' ').trim();
  return one.length > 200 ? `${one.slice(0, 200)}…` : one;
}

/** Why a connection failed, from undici's error causes. */
function networkReason(e: unknown): string {
  let c: unknown = e;
  for (let i = 0; i < 4 && c; i++) {
    const code = (c as { code?: string }).code;
    if (code === 'ECONNREFUSED') return 'connection refused';
    if (code === 'ENOTFOUND' || code === 'EAI_AGAIN') return 'host not found';
    if (code === 'ECONNRESET' || code === 'UND_ERR_SOCKET') return 'connection reset';
    if (code === 'ETIMEDOUT' || code === 'UND_ERR_CONNECT_TIMEOUT') return 'connection timed out';
    if (code === 'EHOSTUNREACH' || code === 'ENETUNREACH') return 'host unreachable';
    if (code && /CERT|SELF_SIGNED|TLS|SSL/.test(code)) return `TLS certificate problem: ${code}`;
    if (code) return code;
    c = (c as { cause?: unknown }).cause;
  }
  return (e as Error).message;
}
