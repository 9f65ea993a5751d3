// repokv serve --stdio [--cache-dir D]   (without --stdio: the OpenAI-compatible HTTP server, http.ts)
// The assistant service over JSON-RPC on stdin/stdout (vscode-jsonrpc's Content-Length framing), for
// the VS Code extension, which runs it as a child process: a crash or a long model job never takes
// the editor with it. stdout carries only protocol messages; everything else goes to stderr.

import { createMessageConnection, ResponseError, StreamMessageReader, StreamMessageWriter, type CancellationToken, type MessageConnection } from 'vscode-jsonrpc/node';
import { AssistantService } from '../assistant/service.js';
import { UserError } from '../errors.js';
import { GGUFError } from '../gguf/reader.js';
import { cacheDir } from '../paths.js';
import { flagString, parseArgs } from '../commands/args.js';
import { ErrorCodes, Methods, PROTOCOL_VERSION, type AskParams, type AskResult, type EngineSettings, type InitializeResult } from './protocol.js';
import type { Attachment } from '../assistant/service.js';

const USAGE = `usage: repokv serve --stdio [--cache-dir D]
  JSON-RPC over stdin/stdout for the VS Code extension (engine/serve/protocol.ts).`;

/** Text deltas are gathered for this long before a notification goes out. */
const DELTA_MS = 30;

export async function run(args: string[]): Promise<number> {
  // Without --stdio: the OpenAI-compatible HTTP server (engine/serve/http.ts).
  if (!args.includes('--stdio')) return (await import('./http.js')).runHttp(args);
  const p = parseArgs(args, ['stdio', 'help']);
  if (p.flags.has('help')) {
    console.error(USAGE);
    return 0;
  }
  // Anything printed by the engine or a library must not interleave with protocol messages.
  console.log = console.info = console.debug = (...a: unknown[]) => console.error(...a);
  const conn = createMessageConnection(new StreamMessageReader(process.stdin), new StreamMessageWriter(process.stdout));
  const server = new RpcServer(conn, flagString(p, 'cache-dir') ?? cacheDir());
  conn.listen();
  const code = await server.done;
  conn.dispose();
  // Let the process end: stdin would keep it alive, and a stray handle must not keep a window's engine around.
  process.stdin.destroy();
  setTimeout(() => process.exit(code), 2000).unref();
  return code;
}

export class RpcServer {
  private service: AssistantService | null = null;
  private settings: EngineSettings;
  private exit!: (code: number) => void;
  readonly done = new Promise<number>((r) => (this.exit = r));

  constructor(
    private readonly conn: MessageConnection,
    defaultCacheDir: string,
  ) {
    this.settings = { cacheDir: defaultCacheDir };
    const on = <P, R>(method: string, fn: (params: P, token: CancellationToken) => R | Promise<R>) =>
      conn.onRequest(method, async (params: P, token: CancellationToken) => {
        try {
          return await fn(params, token);
        } catch (e) {
          if (e instanceof UserError || e instanceof GGUFError) return new ResponseError(ErrorCodes.userError, e.message);
          if (e instanceof ResponseError) return e;
          return new ResponseError(-32603, `engine error: ${(e as Error).message}`, { stack: (e as Error).stack });
        }
      });
    on(Methods.initialize, (s: Partial<EngineSettings>) => this.configure(s));
    on(Methods.configure, (s: Partial<EngineSettings>) => this.configure(s));
    on(Methods.modelInfo, () => this.svc().model());
    on(Methods.contextOpen, (q: { roots: string[] }) => this.svc().openContext(q.roots, { onProgress: (pr) => this.conn.sendNotification(Methods.progress, pr) }));
    on(Methods.contextRefresh, (q: { paths: string[]; now?: boolean }) => this.svc().refresh(q.paths, q.now));
    on(Methods.ask, (q: AskParams, token) => this.ask(q, token));
    on(Methods.sessionList, () => this.svc().listSessions());
    on(Methods.sessionGet, (q: { id: string }) => this.svc().getSession(q.id) ?? null);
    on(Methods.sessionNew, (q: { roots: string[]; title?: string }) => this.svc().newSession(q.roots, q.title));
    on(Methods.sessionRename, (q: { id: string; title: string }) => this.svc().renameSession(q.id, q.title));
    on(Methods.sessionDelete, (q: { id: string }) => this.svc().deleteSession(q.id));
    on(Methods.sessionAdd, (q: { id: string; attachment: Attachment }) => this.svc().addToSession(q.id, q.attachment));
    on(Methods.cacheStatus, () => this.svc().cacheStatus());
    on(Methods.cachePurge, () => this.svc().purgeCache());
    on(Methods.shutdown, async () => {
      await this.service?.close();
      this.service = null;
      setImmediate(() => this.exit(0));
      return null;
    });
    conn.onClose(() => {
      // The client went away (window closed, extension host gone): persist what is pending and leave.
      void (this.service?.close() ?? Promise.resolve()).finally(() => this.exit(0));
    });
  }

  private svc(): AssistantService {
    if (!this.service) throw new ResponseError(ErrorCodes.notInitialized, 'the engine is not initialized (send "initialize" first)');
    return this.service;
  }

  private async configure(s: Partial<EngineSettings>): Promise<InitializeResult> {
    const next = { ...this.settings, ...s };
    if (!next.cacheDir) next.cacheDir = this.settings.cacheDir;
    const old = this.service;
    this.service = null;
    await old?.close();
    this.settings = next;
    this.service = new AssistantService({
      cacheDir: next.cacheDir,
      model: next.model || undefined,
      backend: next.backend,
      contextSize: next.contextSize,
      contextBudget: next.contextBudget,
      memoryBytes: next.memoryMB ? next.memoryMB * 2 ** 20 : undefined,
      maxDiskBytes: next.maxDiskGB ? next.maxDiskGB * 2 ** 30 : undefined,
      walk: next.exclude?.length ? { exclude: next.exclude } : undefined,
      onWarning: (message) => this.conn.sendNotification(Methods.log, { message }),
      remote: next.endpoint
        ? { endpoint: next.endpoint, model: next.endpointModel || undefined, apiKey: next.apiKey || undefined, keyHint: 'set it with "RepoKV: Set API Key for Endpoint…"', contextTokens: next.contextSize }
        : undefined,
    });
    return { protocol: PROTOCOL_VERSION, pid: process.pid, model: this.service.model() };
  }

  private async ask(q: AskParams, token: CancellationToken): Promise<AskResult> {
    const ac = new AbortController();
    const sub = token.onCancellationRequested(() => ac.abort());
    let buf = '';
    let last = 0;
    const flush = () => {
      if (!buf) return;
      this.conn.sendNotification(Methods.delta, { requestId: q.requestId, text: buf });
      buf = '';
      last = performance.now();
    };
    try {
      const r = await this.svc().ask({
        question: q.question,
        sessionId: q.sessionId,
        roots: q.roots,
        attachments: q.attachments,
        title: q.title,
        maxTokens: q.maxTokens,
        temperature: q.temperature,
        signal: ac.signal,
        onProgress: (pr) => this.conn.sendNotification(Methods.progress, { ...pr, requestId: q.requestId }),
        onToken: (text) => {
          buf += text;
          if (performance.now() - last >= DELTA_MS) flush();
        },
      });
      flush();
      return r;
    } finally {
      sub.dispose();
    }
  }
}
