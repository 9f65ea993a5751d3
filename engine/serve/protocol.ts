// The JSON-RPC protocol between the VS Code extension (client) and `repokv serve --stdio` (server):
// method names and message shapes, shared by both sides. Plain types only (the extension bundles
// this file; nothing here imports the engine or `vscode`).
//
// Requests are answered in order of arrival for model work (one job at a time); session and cache
// bookkeeping answer at once. A long request (`ask`, `context/open`) is cancelled with JSON-RPC's
// `$/cancelRequest`: the answer so far is kept and the result says `stopReason: 'cancelled'`.

import type { AnswerStatus, Attachment, CacheStatus, ContextStatus, ModelInfo, Progress, Session, SessionSummary } from '../assistant/service.js';

export type { AnswerStatus, Attachment, CacheStatus, ContextStatus, ModelInfo, Progress, Session, SessionSummary };

export const PROTOCOL_VERSION = 1;

export interface EngineSettings {
  /** Base folder for the KV cache, sessions and document manifests (the extension's global storage). */
  cacheDir: string;
  /** GGUF model file; empty: the built-in synthetic model. */
  model?: string;
  backend?: 'auto' | 'cpu' | 'webgpu' | 'reference';
  contextSize?: number;
  /** Tokens the repository may take. */
  contextBudget?: number;
  /** KV page pool budget, MiB. */
  memoryMB?: number;
  /** Size cap of the KV cache on disk, GiB. */
  maxDiskGB?: number;
  /** Extra ignore globs (gitignore syntax). */
  exclude?: string[];
  /**
   * An OpenAI-compatible server to answer with instead of a local model (empty: the local model).
   * The repository context is still built by this engine process, from the local files.
   */
  endpoint?: string;
  /** The server's model id (empty: the first it lists). */
  endpointModel?: string;
  /** Bearer key for the endpoint (the extension keeps it in VS Code's secret storage; never logged). */
  apiKey?: string;
}

export interface InitializeResult {
  protocol: number;
  pid: number;
  model: ModelInfo;
}

export interface AskParams {
  /** Chosen by the client; notifications for this answer carry it. */
  requestId: string;
  question: string;
  sessionId?: string;
  roots?: string[];
  attachments?: Attachment[];
  title?: string;
  maxTokens?: number;
  temperature?: number;
}

export interface AskResult {
  answer: string;
  status: AnswerStatus;
}

export interface DeltaNotification {
  requestId: string;
  text: string;
}

export interface ProgressNotification extends Progress {
  requestId?: string;
}

/** Method names: requests (client → server) and notifications (server → client). */
export const Methods = {
  initialize: 'initialize',
  configure: 'configure',
  modelInfo: 'model/info',
  contextOpen: 'context/open',
  contextRefresh: 'context/refresh',
  ask: 'ask',
  sessionList: 'session/list',
  sessionGet: 'session/get',
  sessionNew: 'session/new',
  sessionRename: 'session/rename',
  sessionDelete: 'session/delete',
  sessionAdd: 'session/add',
  cacheStatus: 'cache/status',
  cachePurge: 'cache/purge',
  shutdown: 'shutdown',
  // notifications
  delta: 'ask/delta',
  progress: 'progress',
  log: 'log',
} as const;

/** Error codes in JSON-RPC error responses. */
export const ErrorCodes = {
  /** A problem the user can fix; the message is one sentence naming it and the fix. */
  userError: -32001,
  notInitialized: -32002,
} as const;
