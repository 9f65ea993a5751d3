// The chat panel: a webview view in RepoKV's own activity-bar container. The page (media/chat.js)
// renders; this side owns the current session, talks to the engine, and opens files the answers
// reference. Strict CSP: nonce'd scripts from media/ only, styles from media/, nothing remote.

import * as vscode from 'vscode';
import { randomBytes } from 'node:crypto';
import { Methods, type AnswerStatus, type Attachment, type Session, type SessionSummary } from '../engine/serve/protocol.js';
import { EngineUserError, type EngineClient } from './engine-client.js';

type FromPage =
  | { type: 'ready'; currentId?: string }
  | { type: 'ask'; text: string }
  | { type: 'stop' }
  | { type: 'newSession' }
  | { type: 'selectSession'; id: string | null }
  | { type: 'renameSession'; id: string }
  | { type: 'deleteSession'; id: string }
  | { type: 'open'; path: string; line?: number };

export interface AskOptions {
  /** Start a new session with this title first. */
  newSessionTitle?: string;
  attachments?: Attachment[];
  /** What the panel shows as the question (default: the question). */
  display?: string;
}

export class ChatView implements vscode.WebviewViewProvider {
  static readonly viewId = 'repokv.chat';
  private view: vscode.WebviewView | null = null;
  private currentId: string | null = null;
  private inFlight: { requestId: string; ac: AbortController } | null = null;
  private seq = 0;
  private banner = '';
  private disabled = false;
  private readonly onAnswer = new vscode.EventEmitter<AnswerStatus>();
  readonly onDidAnswer = this.onAnswer.event;
  /** Fires when an answer ends, however it ended (done, stopped, failed). */
  private readonly onSettle = new vscode.EventEmitter<void>();
  readonly onDidSettle = this.onSettle.event;

  constructor(
    private readonly extUri: vscode.Uri,
    private readonly client: () => EngineClient | null,
    private readonly roots: () => string[],
    private readonly state: vscode.Memento,
  ) {
    this.currentId = state.get<string>('repokv.currentSession') ?? null;
  }

  get sessionId(): string | null {
    return this.currentId;
  }

  get busy(): boolean {
    return !!this.inFlight;
  }

  resolveWebviewView(view: vscode.WebviewView): void {
    this.view = view;
    const media = vscode.Uri.joinPath(this.extUri, 'media');
    view.webview.options = { enableScripts: true, localResourceRoots: [media] };
    view.webview.html = this.html(view.webview, media);
    view.webview.onDidReceiveMessage((m: FromPage) => this.onMessage(m).catch((e) => this.showError(e)));
    view.onDidDispose(() => (this.view = null));
  }

  /** Restricted Mode, no folder, engine problems: a line at the top of the panel. */
  setBanner(text: string, disabled = false): void {
    this.banner = text;
    this.disabled = disabled;
    void this.pushState();
  }

  private html(webview: vscode.Webview, media: vscode.Uri): string {
    const nonce = randomBytes(16).toString('base64');
    const src = (f: string) => webview.asWebviewUri(vscode.Uri.joinPath(media, f)).toString();
    const csp = `default-src 'none'; img-src ${webview.cspSource}; style-src ${webview.cspSource}; font-src ${webview.cspSource}; script-src 'nonce-${nonce}';`;
    return `<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="UTF-8">
<meta http-equiv="Content-Security-Policy" content="${csp}">
<meta name="viewport" content="width=device-width, initial-scale=1.0">
<link href="${src('chat.css')}" rel="stylesheet">
<title>RepoKV</title>
</head>
<body>
<header role="toolbar" aria-label="Sessions">
  <label class="sr-only" for="sessions">Session</label>
  <select id="sessions" title="Sessions"></select>
  <button id="new" title="New session">New</button>
  <button id="rename" title="Rename this session">Rename</button>
  <button id="delete" title="Delete this session">Delete</button>
</header>
<div id="banner" role="status" hidden></div>
<main id="log" role="log" aria-live="polite" aria-label="Conversation" tabindex="0"></main>
<footer>
  <div id="progress" role="status" aria-live="polite"></div>
  <label class="sr-only" for="input">Question</label>
  <textarea id="input" rows="3" placeholder="Ask about this repository (Enter to send, Shift+Enter for a new line, Escape to stop)"></textarea>
  <div class="actions">
    <button id="stop" disabled title="Stop the answer (Escape)">Stop</button>
    <button id="send" class="primary" title="Send (Enter)">Send</button>
  </div>
</footer>
<script nonce="${nonce}" src="${src('markdown.js')}"></script>
<script nonce="${nonce}" src="${src('chat.js')}"></script>
</body>
</html>`;
  }

  private post(m: unknown): void {
    void this.view?.webview.postMessage(m);
  }

  private async onMessage(m: FromPage): Promise<void> {
    switch (m.type) {
      case 'ready':
        await this.pushState();
        return;
      case 'ask':
        await this.ask(m.text);
        return;
      case 'stop':
        this.stop();
        return;
      case 'newSession':
        this.select(null);
        await this.pushState();
        return;
      case 'selectSession':
        this.select(m.id);
        await this.pushState();
        return;
      case 'renameSession':
        await this.rename(m.id);
        return;
      case 'deleteSession':
        await this.delete(m.id);
        return;
      case 'open':
        await this.openReference(m.path, m.line);
        return;
    }
  }

  private select(id: string | null): void {
    this.currentId = id;
    void this.state.update('repokv.currentSession', id ?? undefined);
  }

  /** Sends the sessions and the current conversation to the page. */
  async pushState(): Promise<void> {
    if (!this.view) return;
    const c = this.client();
    let sessions: SessionSummary[] = [];
    let session: Session | null = null;
    if (c && !this.disabled) {
      try {
        sessions = await c.request<SessionSummary[]>(Methods.sessionList);
        if (this.currentId) session = await c.request<Session | null>(Methods.sessionGet, { id: this.currentId });
        if (!session) this.select(null);
      } catch (e) {
        this.banner ||= `The engine is not available: ${(e as Error).message}`;
      }
    }
    this.post({
      type: 'state',
      banner: this.banner,
      disabled: this.disabled,
      busy: !!this.inFlight,
      sessions,
      currentId: this.currentId,
      turns: session?.turns.map((t) => ({ role: t.role, content: t.content })) ?? [],
      statuses: session?.statuses ?? {},
    });
  }

  /** Asks in the current session (or a new one); the answer streams into the panel. */
  async ask(question: string, opts: AskOptions = {}): Promise<AnswerStatus | null> {
    const c = this.client();
    if (!c || this.disabled) {
      void vscode.window.showWarningMessage(this.banner || 'RepoKV is not available in this window.');
      return null;
    }
    if (this.inFlight) {
      void vscode.window.showInformationMessage('RepoKV is still answering; stop it first (Escape in the panel).');
      return null;
    }
    const roots = this.roots();
    if (!roots.length) {
      void vscode.window.showWarningMessage('Open a folder first: RepoKV answers about the folders of the workspace.');
      return null;
    }
    if (opts.newSessionTitle !== undefined) {
      const s = await c.request<Session>(Methods.sessionNew, { roots, title: opts.newSessionTitle });
      this.select(s.id);
      await this.pushState();
    }
    const requestId = `r${Date.now().toString(36)}-${++this.seq}`;
    const ac = new AbortController();
    this.inFlight = { requestId, ac };
    this.post({ type: 'start', requestId, question: opts.display ?? question });
    try {
      const r = await c.ask(
        { requestId, question, sessionId: this.currentId ?? undefined, roots, attachments: opts.attachments, maxTokens: vscode.workspace.getConfiguration('repokv').get<number>('maxAnswerTokens', 512) },
        {
          signal: ac.signal,
          onDelta: (text) => this.post({ type: 'delta', requestId, text }),
          onProgress: (p) => this.post({ type: 'progress', requestId, stage: p.stage, done: p.done, total: p.total }),
        },
      );
      this.select(r.status.session);
      this.post({ type: 'done', requestId, answer: r.answer, status: r.status });
      this.onAnswer.fire(r.status);
      return r.status;
    } catch (e) {
      this.post({ type: 'error', requestId, message: errorText(e) });
      return null;
    } finally {
      this.inFlight = null;
      this.onSettle.fire();
      void this.refreshSessions();
    }
  }

  private async refreshSessions(): Promise<void> {
    // The session list changes after an answer (title, turns); the conversation on screen does not.
    const c = this.client();
    if (!c || !this.view) return;
    try {
      const sessions = await c.request<SessionSummary[]>(Methods.sessionList);
      this.post({ type: 'sessions', sessions, currentId: this.currentId });
    } catch {
      /* engine gone: the state is pushed again when it is back */
    }
  }

  stop(): void {
    this.inFlight?.ac.abort();
  }

  private async rename(id: string): Promise<void> {
    const c = this.client();
    if (!c || !id) return;
    const s = await c.request<Session | null>(Methods.sessionGet, { id });
    const title = await vscode.window.showInputBox({ prompt: 'Session title', value: s?.title ?? '' });
    if (title === undefined) return;
    await c.request(Methods.sessionRename, { id, title });
    await this.pushState();
  }

  private async delete(id: string): Promise<void> {
    const c = this.client();
    if (!c || !id) return;
    const ok = await vscode.window.showWarningMessage('Delete this session? Its conversation is removed (the repository cache stays).', { modal: true }, 'Delete');
    if (ok !== 'Delete') return;
    await c.request(Methods.sessionDelete, { id });
    if (this.currentId === id) this.select(null);
    await this.pushState();
  }

  /** Adds material to the current session (a new one if there is none); it goes with the next question. */
  async addToSession(a: Attachment): Promise<void> {
    const c = this.client();
    if (!c) return;
    if (!this.currentId) {
      const s = await c.request<Session>(Methods.sessionNew, { roots: this.roots(), title: '' });
      this.select(s.id);
    }
    await c.request(Methods.sessionAdd, { id: this.currentId, attachment: a });
    await this.pushState();
    void vscode.window.showInformationMessage(`Added ${a.label} to the session; it goes with your next question.`);
  }

  /** Opens a path an answer mentioned (relative to a workspace folder), at the line when given. */
  async openReference(path: string, line?: number): Promise<void> {
    const folders = vscode.workspace.workspaceFolders ?? [];
    const candidates: vscode.Uri[] = [];
    const clean = path.replace(/^\.\//, '');
    for (const f of folders) {
      candidates.push(vscode.Uri.joinPath(f.uri, clean));
      // Multi-root documents prefix paths with the folder name.
      const [head, ...rest] = clean.split('/');
      if (head === f.name && rest.length) candidates.push(vscode.Uri.joinPath(f.uri, rest.join('/')));
    }
    for (const uri of candidates) {
      try {
        const st = await vscode.workspace.fs.stat(uri);
        if (st.type & vscode.FileType.Directory) {
          await vscode.commands.executeCommand('revealInExplorer', uri);
          return;
        }
        const pos = new vscode.Position(Math.max(0, (line ?? 1) - 1), 0);
        await vscode.window.showTextDocument(uri, { selection: new vscode.Range(pos, pos), preview: true });
        return;
      } catch {
        /* try the next root */
      }
    }
    void vscode.window.showInformationMessage(`${path} is not in this workspace.`);
  }

  private showError(e: unknown): void {
    void vscode.window.showErrorMessage(`RepoKV: ${errorText(e)}`);
  }
}

export function errorText(e: unknown): string {
  if (e instanceof EngineUserError) return e.message;
  return (e as Error)?.message ?? String(e);
}
