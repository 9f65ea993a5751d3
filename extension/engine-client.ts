// The extension's side of the engine process: spawns `repokv serve --stdio`, speaks JSON-RPC to it
// (engine/serve/protocol.ts), restarts it after a crash with the same settings (sessions and their
// KV are on disk, so nothing is lost but the answer in flight), and stops it with the window.
// No `vscode` import: the tests drive this very class against the real engine.

import { spawn, type ChildProcess } from 'node:child_process';
import { createMessageConnection, CancellationTokenSource, StreamMessageReader, StreamMessageWriter, ResponseError, type MessageConnection } from 'vscode-jsonrpc/node';
import { DAWN_LIMIT_NOTICE } from '../engine/backends/webgpu/quiet-stderr.js';
import { ErrorCodes, Methods, type AskParams, type AskResult, type DeltaNotification, type EngineSettings, type InitializeResult, type ProgressNotification } from '../engine/serve/protocol.js';

export type EngineState = 'stopped' | 'starting' | 'ready' | 'restarting' | 'failed';

export interface EngineClientOptions {
  /** Program and arguments that start the server (e.g. node bin/repokv.js serve --stdio). */
  command: string;
  args: string[];
  env?: NodeJS.ProcessEnv;
  cwd?: string;
  settings: EngineSettings;
  /** Restarts allowed within `restartWindowMs` before giving up (default 3 in 60 s). */
  maxRestarts?: number;
  restartWindowMs?: number;
  onLog?: (line: string) => void;
  onState?: (state: EngineState, detail?: string) => void;
  onProgress?: (p: ProgressNotification) => void;
}

/** An error the user can fix, as the engine worded it. */
export class EngineUserError extends Error {}

export class EngineClient {
  private child: ChildProcess | null = null;
  private conn: MessageConnection | null = null;
  private starting: Promise<InitializeResult> | null = null;
  private restarts: number[] = [];
  private stopping = false;
  private deltas = new Map<string, (text: string) => void>();
  private progress = new Map<string, (p: ProgressNotification) => void>();
  state: EngineState = 'stopped';
  info: InitializeResult | null = null;
  /** Exits of the engine process that were not asked for. */
  crashes = 0;

  constructor(private opts: EngineClientOptions) {}

  get pid(): number | undefined {
    return this.child?.pid;
  }

  private setState(s: EngineState, detail?: string): void {
    this.state = s;
    this.opts.onState?.(s, detail);
  }

  /** Starts the engine process (once; concurrent callers share the start). */
  start(): Promise<InitializeResult> {
    if (this.conn && this.info && this.state === 'ready') return Promise.resolve(this.info);
    this.stopping = false;
    this.starting ??= this.spawnAndInit().finally(() => (this.starting = null));
    return this.starting;
  }

  private async spawnAndInit(): Promise<InitializeResult> {
    if (this.state !== 'restarting') this.setState('starting');
    const child = spawn(this.opts.command, this.opts.args, { cwd: this.opts.cwd, env: this.opts.env ?? process.env, stdio: ['pipe', 'pipe', 'pipe'] });
    this.child = child;
    let stderrTail = '';
    let partial = '';
    child.stderr!.setEncoding('utf8');
    child.stderr!.on('data', (d: string) => {
      // Whole lines only, without Dawn's start-up notices about clamped driver limits (the engine
      // hides them itself where it can: engine/backends/webgpu/quiet-stderr.ts).
      const lines = (partial + d).split('\n');
      partial = lines.pop() ?? '';
      for (const line of lines) {
        if (!line.trim() || DAWN_LIMIT_NOTICE.test(line.trimEnd())) continue;
        stderrTail = (stderrTail + line + '\n').slice(-4000);
        this.opts.onLog?.(line);
      }
    });
    child.stderr!.on('end', () => {
      if (partial.trim() && !DAWN_LIMIT_NOTICE.test(partial.trimEnd())) {
        stderrTail = (stderrTail + partial).slice(-4000);
        this.opts.onLog?.(partial);
      }
      partial = '';
    });
    const conn = createMessageConnection(new StreamMessageReader(child.stdout!), new StreamMessageWriter(child.stdin!));
    this.conn = conn;
    conn.onNotification(Methods.delta, (n: DeltaNotification) => this.deltas.get(n.requestId)?.(n.text));
    conn.onNotification(Methods.progress, (p: ProgressNotification) => {
      if (p.requestId) this.progress.get(p.requestId)?.(p);
      this.opts.onProgress?.(p);
    });
    conn.onNotification(Methods.log, (n: { message: string }) => this.opts.onLog?.(n.message));
    conn.onError(() => undefined);
    conn.listen();
    const exited = new Promise<never>((_, reject) => {
      child.once('error', (e) => reject(new Error(`could not start the engine (${this.opts.command}): ${e.message}`)));
      child.once('exit', (code, signal) => reject(new Error(`the engine exited during start (${signal ?? `code ${code}`}): ${lastLine(stderrTail + partial)}`)));
    });
    exited.catch(() => undefined); // a later crash is onExit's business
    child.once('exit', (code, signal) => this.onExit(child, conn, code, signal, stderrTail + partial));
    try {
      const info = await Promise.race([conn.sendRequest<InitializeResult>(Methods.initialize, this.opts.settings), exited]);
      this.info = info;
      this.setState('ready');
      return info;
    } catch (e) {
      this.kill(child);
      throw e;
    }
  }

  private onExit(child: ChildProcess, conn: MessageConnection, code: number | null, signal: NodeJS.Signals | null, stderrTail: string): void {
    conn.dispose();
    if (this.child !== child) return;
    this.child = null;
    this.conn = null;
    this.info = null;
    this.deltas.clear();
    this.progress.clear();
    if (this.stopping) {
      this.setState('stopped');
      return;
    }
    this.crashes++;
    const now = Date.now();
    const windowMs = this.opts.restartWindowMs ?? 60_000;
    this.restarts = this.restarts.filter((t) => now - t < windowMs);
    const why = `${signal ?? `exit code ${code}`}${stderrTail ? `: ${lastLine(stderrTail)}` : ''}`;
    if (this.restarts.length >= (this.opts.maxRestarts ?? 3)) {
      this.setState('failed', `the engine stopped (${why}) and was restarted ${this.restarts.length} times in a minute; run "RepoKV: Restart Engine" after fixing the cause`);
      return;
    }
    this.restarts.push(now);
    this.setState('restarting', `the engine stopped (${why}); restarting it — sessions are kept on disk`);
    this.start().catch((e: Error) => this.setState('failed', e.message));
  }

  /** A request; `signal` cancels it (the engine keeps what it has and answers at once). */
  async request<R>(method: string, params?: unknown, signal?: AbortSignal): Promise<R> {
    await this.start();
    const conn = this.conn;
    if (!conn) throw new Error('the engine is not running');
    const cts = new CancellationTokenSource();
    const onAbort = () => cts.cancel();
    signal?.addEventListener('abort', onAbort, { once: true });
    try {
      return await conn.sendRequest<R>(method, params, cts.token);
    } catch (e) {
      if (e instanceof ResponseError && e.code === ErrorCodes.userError) throw new EngineUserError(e.message);
      throw e;
    } finally {
      signal?.removeEventListener('abort', onAbort);
      cts.dispose();
    }
  }

  /** Asks a question; text arrives through `onDelta` as it is generated. */
  async ask(params: AskParams, h: { onDelta?: (text: string) => void; onProgress?: (p: ProgressNotification) => void; signal?: AbortSignal } = {}): Promise<AskResult> {
    if (h.onDelta) this.deltas.set(params.requestId, h.onDelta);
    if (h.onProgress) this.progress.set(params.requestId, h.onProgress);
    try {
      return await this.request<AskResult>(Methods.ask, params, h.signal);
    } finally {
      this.deltas.delete(params.requestId);
      this.progress.delete(params.requestId);
    }
  }

  /** New settings (model, budgets): the engine reloads on its next job. */
  async configure(settings: EngineSettings): Promise<InitializeResult> {
    this.opts.settings = settings;
    if (!this.conn) return this.start();
    this.info = await this.request<InitializeResult>(Methods.configure, settings);
    return this.info;
  }

  /** Asks the engine to finish (persisting pending KV), and kills it if it takes longer than `graceMs`. */
  async stop(graceMs = 3000): Promise<void> {
    this.stopping = true;
    const child = this.child;
    const conn = this.conn;
    if (!child) {
      this.setState('stopped');
      return;
    }
    const gone = new Promise<void>((r) => (child.exitCode !== null || child.signalCode !== null ? r() : child.once('exit', () => r())));
    try {
      if (conn) await Promise.race([conn.sendRequest(Methods.shutdown), gone, sleep(graceMs)]);
    } catch {
      /* already gone */
    }
    await Promise.race([gone, sleep(graceMs)]);
    this.kill(child);
    await Promise.race([gone, sleep(1000)]);
  }

  /** Restarts the engine now (after "failed", or to pick up a new engine build). */
  async restart(): Promise<InitializeResult> {
    await this.stop();
    this.restarts = [];
    return this.start();
  }

  private kill(child: ChildProcess): void {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  }
}

function lastLine(s: string): string {
  const lines = s.trim().split('\n');
  return lines[lines.length - 1] ?? '';
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms).unref());
}
