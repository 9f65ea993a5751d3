// RepoKV in VS Code: activation, the engine process, commands, the status bar, the file watcher and
// workspace trust. Stable APIs only. The model runs in a child process (`repokv serve --stdio`), so
// the extension host never waits on model work; its cache lives in the extension's global storage.
// With `repokv.endpoint` set, that same process answers through the OpenAI-compatible server there
// (engine/assistant/remote.ts), still building the repository context from the workspace; the key
// lives in VS Code's secret storage, one per endpoint, and reaches the engine over its stdio pipe.

import * as vscode from 'vscode';
import { filesExcludeToIgnore } from './excludes.js';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { Methods, type CacheStatus, type ContextStatus, type EngineSettings, type ModelInfo, type ProgressNotification } from '../engine/serve/protocol.js';
import { normalizeEndpoint } from '../engine/assistant/remote.js';
import { EngineClient, type EngineState } from './engine-client.js';
import { ChatView, errorText } from './chat-view.js';
import { findModels } from './models.js';
import { codeAttachment, debugAttachments, debugTitle, DEBUG_QUESTION, EXPLAIN_REPOSITORY, explainFileQuestion, explainSelectionQuestion, type DebugMaterial, type DiagnosticInfo, type StackFrameInfo } from './prompts.js';

let client: EngineClient | null = null;

export function activate(context: vscode.ExtensionContext): void {
  const out = vscode.window.createOutputChannel('RepoKV');
  const status = vscode.window.createStatusBarItem('repokv.status', vscode.StatusBarAlignment.Right, 100);
  status.name = 'RepoKV';
  status.command = 'repokv.showCacheStatus';
  context.subscriptions.push(out, status);

  const roots = () => (vscode.workspace.workspaceFolders ?? []).filter((f) => f.uri.scheme === 'file').map((f) => f.uri.fsPath);
  const view = new ChatView(context.extensionUri, () => client, roots, context.workspaceState);
  context.subscriptions.push(vscode.window.registerWebviewViewProvider(ChatView.viewId, view));

  let indexed: ContextStatus | null = null;
  /** What the status bar says between jobs; progress (model load, prefill) shows over it for a while. */
  let resting = { text: '', tooltip: '' };
  const setStatus = (text: string, tooltip: string, transient = false) => {
    if (!transient) resting = { text, tooltip };
    status.text = text;
    status.tooltip = tooltip;
    status.show();
  };
  const onProgress = (p: ProgressNotification) => {
    if (p.done >= p.total) return setStatus(resting.text, resting.tooltip, true);
    const pct = p.total > 0 ? Math.floor((100 * p.done) / p.total) : 0;
    if (p.stage === 'index') setStatus(`$(sync~spin) RepoKV: indexing${p.total > 1 ? ` ${pct}%` : ''}`, p.total > 1 ? `Tokenizing the workspace: ${p.done} of ${p.total} files` : 'Reading the workspace', true);
    else if (p.stage === 'load') setStatus(`$(sync~spin) RepoKV: loading model ${pct}%`, 'Loading the model', true);
    else setStatus(`$(sync~spin) RepoKV: prefill ${pct}%`, `Computing the prompt's KV: ${p.done} of ${p.total} tokens (cached pages are restored, not computed)`, true);
  };

  /** The secret-storage entry of an endpoint's API key (one per endpoint: a key never goes to another server). */
  const keyId = (endpoint: string) => {
    let e = endpoint.trim();
    try {
      e = normalizeEndpoint(e);
    } catch {
      /* an invalid URL: the engine names the problem */
    }
    return `repokv.endpointKey:${e}`;
  };
  const endpointSetting = () => vscode.workspace.getConfiguration('repokv').get<string>('endpoint', '').trim();

  const settings = async (): Promise<EngineSettings> => {
    const c = vscode.workspace.getConfiguration('repokv');
    const cacheDir = c.get<string>('cacheFolder') || context.globalStorageUri.fsPath;
    const endpoint = endpointSetting();
    return {
      cacheDir,
      // Empty strings, not undefined, so that a cleared setting also clears the engine's.
      model: c.get<string>('modelPath') || '',
      endpoint,
      endpointModel: c.get<string>('endpointModel', '').trim(),
      apiKey: endpoint ? ((await context.secrets.get(keyId(endpoint))) ?? '') : '',
      backend: c.get<EngineSettings['backend']>('backend', 'auto'),
      contextSize: c.get<number>('contextSize') || undefined,
      contextBudget: c.get<number>('contextBudget') || undefined,
      memoryMB: c.get<number>('memoryBudgetMB') || undefined,
      maxDiskGB: c.get<number>('cacheMaxGB') || undefined,
      // The user's own excludes plus VS Code's files.exclude (what the Explorer hides stays out too).
      exclude: [...c.get<string[]>('exclude', []), ...filesExcludeToIgnore(vscode.workspace.getConfiguration('files').get<Record<string, unknown>>('exclude'))],
    };
  };

  const onState = (s: EngineState, detail?: string) => {
    if (detail) out.appendLine(`engine: ${detail}`);
    if (s === 'restarting') setStatus('$(sync~spin) RepoKV: restarting', detail ?? 'The engine is restarting');
    else if (s === 'failed') {
      setStatus('$(error) RepoKV', detail ?? 'The engine stopped');
      view.setBanner(detail ?? 'The engine stopped.');
      void vscode.window.showErrorMessage(`RepoKV: ${detail ?? 'the engine stopped'}`, 'Restart Engine').then((a) => a && vscode.commands.executeCommand('repokv.restartEngine'));
    } else if (s === 'ready') {
      setStatus('$(database) RepoKV', 'Engine ready');
      view.setBanner(modelBanner());
      if (indexed) void openContext(false);
    }
  };

  let modelNotice = '';
  const modelBanner = () => modelNotice;
  let remote: ModelInfo['remote'] | undefined;
  const noticeFor = (m: ModelInfo): string => {
    remote = m.remote;
    if (m.remote) {
      const n = m.remote.notice;
      return `Remote engine: ${m.remote.endpoint}${m.remote.model ? ` (${m.remote.model})` : ''}. ${n[0].toUpperCase()}${n.slice(1)}.`;
    }
    return m.notice ? 'No model selected: the built-in synthetic model answers (random weights, meaningless text). Use "RepoKV: Select Model…".' : '';
  };

  /** Starts the engine in a trusted workspace with a folder; no-op otherwise. */
  const startEngine = async (): Promise<EngineClient | null> => {
    if (!vscode.workspace.isTrusted) return null;
    if (!client) {
      const s = await settings();
      mkdirSync(s.cacheDir, { recursive: true });
      client = new EngineClient({
        command: process.execPath,
        args: [join(context.extensionPath, 'dist', 'engine.mjs'), 'serve', '--stdio'],
        // The built-in synthetic model is written under REPOKV_CACHE_DIR; the extension host may be Electron.
        env: { ...process.env, ELECTRON_RUN_AS_NODE: '1', REPOKV_CACHE_DIR: s.cacheDir },
        settings: s,
        onLog: (l) => out.appendLine(l),
        onState,
        onProgress,
      });
    }
    try {
      const info = await client.start();
      modelNotice = noticeFor(info.model);
      view.setBanner(modelNotice);
      return client;
    } catch (e) {
      out.appendLine(`engine: ${errorText(e)}`);
      setStatus('$(error) RepoKV', errorText(e));
      view.setBanner(`The engine did not start: ${errorText(e)}`);
      return null;
    }
  };

  /** Indexes the workspace folders (cheap when nothing changed: the manifest is on disk). */
  const openContext = async (rebuild: boolean): Promise<void> => {
    const c = await startEngine();
    const r = roots();
    if (!c || !r.length) return;
    setStatus('$(sync~spin) RepoKV: indexing', 'Reading the workspace');
    const run = async (signal?: AbortSignal) => {
      try {
        indexed = await c.request<ContextStatus>(Methods.contextOpen, { roots: r }, signal);
        if (remote) setStatus(`$(cloud) RepoKV: ~${fmtTokens(indexed.tokens)}`, `${indexed.files} files, about ${indexed.tokens} tokens (estimated here; the remote's tokenizer decides) sent first to ${remote.endpoint} (${indexed.excluded} left out)`);
        else setStatus(`$(database) RepoKV: ${fmtTokens(indexed.tokens)}`, `${indexed.files} files, ${indexed.tokens} tokens in context (${indexed.excluded} left out); click for cache status`);
      } catch (e) {
        setStatus('$(warning) RepoKV', errorText(e));
        if (rebuild) void vscode.window.showErrorMessage(`RepoKV: ${errorText(e)}`);
      }
    };
    if (rebuild) {
      await vscode.window.withProgress({ location: vscode.ProgressLocation.Notification, title: 'RepoKV: rebuilding the repository index', cancellable: true }, (_p, token) => {
        const ac = new AbortController();
        token.onCancellationRequested(() => ac.abort());
        return run(ac.signal);
      });
    } else await vscode.window.withProgress({ location: vscode.ProgressLocation.Window, title: 'RepoKV: indexing' }, () => run());
  };

  view.onDidAnswer((s) => {
    if (s.remote) {
      const first = `first token ${(s.timeToFirstTokenMs / 1000).toFixed(2)} s`;
      if (s.remote.cachedReported) setStatus(`$(cloud) RepoKV: ${fmtTokens(s.cachedTokens)} cached remotely`, `Last answer from ${s.remote.model} at ${s.remote.endpoint}: ${s.cachedTokens} of ${s.promptTokens} prompt tokens from the remote's prefix cache, ${first}`);
      else setStatus('$(cloud) RepoKV: remote', `Last answer from ${s.remote.model} at ${s.remote.endpoint}: the server reports no cached-token count, ${first}`);
    } else setStatus(`$(database) RepoKV: ${fmtTokens(s.repoTokens)}`, `Last answer: ${s.cachedTokens} of ${s.promptTokens} prompt tokens from cache, first token ${(s.timeToFirstTokenMs / 1000).toFixed(2)} s`);
  });
  // An answer that failed or was stopped mid-prefill leaves no progress on the status bar.
  view.onDidSettle(() => setStatus(resting.text, resting.tooltip, true));

  // Restricted Mode: no engine, no indexing, until the folder is trusted.
  if (!vscode.workspace.isTrusted) {
    view.setBanner('Restricted Mode: RepoKV reads and indexes the workspace only after you trust this folder.', true);
    setStatus('$(shield) RepoKV', 'Restricted Mode: no indexing until the folder is trusted');
  } else if (roots().length) void openContext(false);
  context.subscriptions.push(
    vscode.workspace.onDidGrantWorkspaceTrust(() => {
      view.setBanner('');
      void openContext(false).then(() => view.pushState());
    }),
  );

  // VS Code's own watcher (no second watcher in the extension host): changes are batched and sent.
  const pending = new Set<string>();
  let timer: NodeJS.Timeout | undefined;
  const changed = (uri: vscode.Uri) => {
    if (uri.scheme !== 'file' || !client || client.state !== 'ready') return;
    pending.add(uri.fsPath);
    clearTimeout(timer);
    timer = setTimeout(() => {
      const paths = [...pending];
      pending.clear();
      client?.request(Methods.contextRefresh, { paths }).catch((e) => out.appendLine(`refresh: ${errorText(e)}`));
    }, 500);
  };
  const watcher = vscode.workspace.createFileSystemWatcher('**/*');
  context.subscriptions.push(watcher, watcher.onDidCreate(changed), watcher.onDidChange(changed), watcher.onDidDelete(changed));
  context.subscriptions.push(vscode.workspace.onDidChangeWorkspaceFolders(() => void openContext(false)));

  const reconfigure = () => {
    if (!client) return;
    const c = client;
    settings()
      .then((s) => c.configure(s))
      .then((info) => {
        modelNotice = noticeFor(info.model);
        view.setBanner(modelNotice);
        return openContext(false);
      })
      .catch((e) => void vscode.window.showErrorMessage(`RepoKV: ${errorText(e)}`));
  };
  context.subscriptions.push(
    vscode.workspace.onDidChangeConfiguration((e) => {
      if (!e.affectsConfiguration('repokv') || !client) return;
      if (e.affectsConfiguration('repokv.maxAnswerTokens')) return;
      reconfigure();
    }),
    context.secrets.onDidChange((e) => {
      const ep = endpointSetting();
      if (ep && e.key === keyId(ep)) reconfigure();
    }),
  );

  const reveal = () => vscode.commands.executeCommand(`${ChatView.viewId}.focus`);
  const relPath = (uri: vscode.Uri) => vscode.workspace.asRelativePath(uri, (vscode.workspace.workspaceFolders?.length ?? 0) > 1);
  const command = (id: string, fn: (...a: unknown[]) => unknown) =>
    context.subscriptions.push(
      vscode.commands.registerCommand(id, async (...a: unknown[]) => {
        try {
          await fn(...a);
        } catch (e) {
          void vscode.window.showErrorMessage(`RepoKV: ${errorText(e)}`);
        }
      }),
    );

  command('repokv.explainRepository', async () => {
    await reveal();
    await startEngine();
    await view.ask(EXPLAIN_REPOSITORY, { newSessionTitle: 'Explain this repository' });
  });
  command('repokv.explainFile', async (arg) => {
    const uri = arg instanceof vscode.Uri ? arg : vscode.window.activeTextEditor?.document.uri;
    if (!uri) return vscode.window.showInformationMessage('Open a file to explain.');
    const rel = relPath(uri);
    const inWorkspace = !!vscode.workspace.getWorkspaceFolder(uri);
    const attachments = inWorkspace ? [] : [codeAttachment(rel, (await vscode.workspace.openTextDocument(uri)).getText())];
    await reveal();
    await view.ask(explainFileQuestion(rel), { newSessionTitle: `Explain ${rel}`, attachments });
  });
  command('repokv.explainSelection', async () => {
    const ed = vscode.window.activeTextEditor;
    if (!ed || ed.selection.isEmpty) return vscode.window.showInformationMessage('Select some code to explain.');
    const rel = relPath(ed.document.uri);
    const a = ed.selection.start.line + 1;
    const b = ed.selection.end.line + 1;
    await reveal();
    await view.ask(explainSelectionQuestion(rel, a, b), { newSessionTitle: `Explain ${rel}:${a}`, attachments: [codeAttachment(rel, ed.document.getText(ed.selection), a, b)] });
  });
  command('repokv.startDebugSession', async () => {
    const material = await collectDebugMaterial(relPath);
    const attachments = debugAttachments(material);
    if (!attachments.length) return vscode.window.showInformationMessage('Nothing to debug yet: no problems, no selected terminal text, and no stopped debug session.');
    await reveal();
    await view.ask(DEBUG_QUESTION, { newSessionTitle: debugTitle(material), attachments, display: `${DEBUG_QUESTION}\n\n${attachments.map((x) => `- ${x.label}`).join('\n')}` });
  });
  command('repokv.addToSession', async () => {
    const ed = vscode.window.activeTextEditor;
    const picks: (vscode.QuickPickItem & { id: string })[] = [];
    if (ed && !ed.selection.isEmpty) picks.push({ id: 'selection', label: 'Selection', description: relPath(ed.document.uri) });
    if (ed) picks.push({ id: 'file', label: 'Current file', description: relPath(ed.document.uri) });
    picks.push({ id: 'problems', label: 'Problems', description: 'errors and warnings of the workspace' });
    const pick = await vscode.window.showQuickPick(picks, { placeHolder: 'Add to the RepoKV session' });
    if (!pick) return;
    if (pick.id === 'selection' && ed) {
      const a = ed.selection.start.line + 1;
      await view.addToSession(codeAttachment(relPath(ed.document.uri), ed.document.getText(ed.selection), a, ed.selection.end.line + 1));
    } else if (pick.id === 'file' && ed) await view.addToSession(codeAttachment(relPath(ed.document.uri), ed.document.getText()));
    else {
      const [att] = debugAttachments({ diagnostics: diagnostics(relPath) });
      if (!att) return vscode.window.showInformationMessage('There are no problems to add.');
      await view.addToSession(att);
    }
    await reveal();
  });
  command('repokv.rebuildIndex', () => openContext(true));
  command('repokv.newSession', async () => {
    await reveal();
    await view.pushState();
  });
  command('repokv.stop', () => view.stop());
  command('repokv.setApiKey', async () => {
    const ep = endpointSetting();
    if (!ep) {
      const pick = await vscode.window.showInformationMessage('Set "repokv.endpoint" to the server\'s API base (e.g. http://gpu-box:8000/v1) first; its key goes with it.', 'Open Settings');
      if (pick) await vscode.commands.executeCommand('workbench.action.openSettings', 'repokv.endpoint');
      return;
    }
    const key = await vscode.window.showInputBox({
      title: 'RepoKV: API key for the endpoint',
      prompt: `Key for ${ep}, kept in VS Code's secret storage (never in settings) and sent only to this endpoint. Leave empty to remove it.`,
      password: true,
      ignoreFocusOut: true,
    });
    if (key === undefined) return;
    if (key.trim()) await context.secrets.store(keyId(ep), key.trim());
    else await context.secrets.delete(keyId(ep));
    void vscode.window.showInformationMessage(key.trim() ? `RepoKV: key saved for ${ep}.` : `RepoKV: key removed for ${ep}.`);
  });
  command('repokv.restartEngine', async () => {
    if (!client) return startEngine();
    await client.restart();
  });
  command('repokv.selectModel', async () => {
    const folders = vscode.workspace.getConfiguration('repokv').get<string[]>('modelFolders', []);
    const found = findModels(folders);
    type Item = vscode.QuickPickItem & { path?: string; browse?: boolean };
    const items: Item[] = [
      ...found.map((m) => ({ label: m.label, description: `${(m.bytes / 2 ** 30).toFixed(2)} GiB · ${m.source}`, detail: m.path, path: m.path })),
      { label: '$(folder-opened) Browse…', browse: true },
      { label: 'Built-in synthetic model', description: 'testing only: meaningless answers', path: '' },
    ];
    const pick = await vscode.window.showQuickPick(items, { placeHolder: found.length ? 'Model for RepoKV (GGUF)' : 'No GGUF models found in the settings folders, Ollama or LM Studio' });
    if (!pick) return;
    let path = pick.path;
    if (pick.browse) {
      const sel = await vscode.window.showOpenDialog({ canSelectMany: false, filters: { 'GGUF models': ['gguf'] }, openLabel: 'Use this model' });
      if (!sel?.[0]) return;
      path = sel[0].fsPath;
    }
    await vscode.workspace.getConfiguration('repokv').update('modelPath', path ?? '', vscode.ConfigurationTarget.Global);
  });
  command('repokv.showCacheStatus', async () => {
    const c = await startEngine();
    if (!c) return vscode.window.showInformationMessage('RepoKV is off in Restricted Mode (or has no folder).');
    const s = await c.request<CacheStatus>(Methods.cacheStatus);
    out.appendLine(`KV cache in ${s.dir}: ${fmtBytes(s.fileBytes)} on disk, ${s.stores.length} model cache(s), ${s.sessions} session(s)`);
    for (const st of s.stores) out.appendLine(`  ${st.id} ${st.model ?? '?'}: ${st.pages} pages = ${st.tokens} tokens, ${fmtBytes(st.fileBytes)}, last used ${st.lastUsed ?? 'never'}`);
    if (s.engine) out.appendLine(`  in memory: ${s.engine.usedPages}/${s.engine.poolPages} pages used (${s.engine.cachedPages} cached), ${s.engine.hostPages} in host memory`);
    for (const x of s.contexts) out.appendLine(`  context ${x.roots.join(', ')}: ${x.files} files, ${x.tokens} tokens`);
    const tokens = s.stores.reduce((n, x) => n + x.tokens, 0);
    const pick = await vscode.window.showInformationMessage(`RepoKV: ${fmtTokens(tokens)} cached on disk (${fmtBytes(s.fileBytes)}), ${s.sessions} session(s).`, 'Details', 'Purge Cache');
    if (pick === 'Details') out.show(true);
    if (pick === 'Purge Cache') await vscode.commands.executeCommand('repokv.purgeCache');
  });
  command('repokv.purgeCache', async () => {
    const ok = await vscode.window.showWarningMessage('Delete RepoKV\'s KV cache on disk? Sessions stay; the repository is read into the model again on the next question.', { modal: true }, 'Purge');
    if (ok !== 'Purge') return;
    const c = await startEngine();
    if (!c) return;
    const r = await c.request<{ removed: string[] }>(Methods.cachePurge);
    void vscode.window.showInformationMessage(`RepoKV: removed ${r.removed.length} model cache(s).`);
  });
}

export async function deactivate(): Promise<void> {
  // The window closes: the engine persists what is pending and exits (killed if it takes too long).
  await client?.stop(2000);
  client = null;
}

function diagnostics(relPath: (u: vscode.Uri) => string): DiagnosticInfo[] {
  const sev = ['error', 'warning', 'info', 'hint'] as const;
  const out: DiagnosticInfo[] = [];
  for (const [uri, list] of vscode.languages.getDiagnostics()) {
    for (const d of list) {
      if (d.severity > vscode.DiagnosticSeverity.Warning) continue;
      out.push({ path: relPath(uri), line: d.range.start.line + 1, severity: sev[d.severity], message: d.message, source: d.source });
    }
  }
  return out;
}

/** Problems, the selected terminal text (through the clipboard, restored after), and a stopped debug frame. */
async function collectDebugMaterial(relPath: (u: vscode.Uri) => string): Promise<DebugMaterial> {
  const m: DebugMaterial = { diagnostics: diagnostics(relPath) };
  if (vscode.window.activeTerminal) {
    const saved = await vscode.env.clipboard.readText();
    try {
      await vscode.env.clipboard.writeText('');
      await vscode.commands.executeCommand('workbench.action.terminal.copySelection');
      const text = await vscode.env.clipboard.readText();
      if (text) m.terminalText = text;
    } catch {
      /* no selection */
    } finally {
      await vscode.env.clipboard.writeText(saved);
    }
  }
  const session = vscode.debug.activeDebugSession;
  const item = vscode.debug.activeStackItem;
  if (session && item && 'threadId' in item) {
    const threadId = item.threadId;
    const frames: StackFrameInfo[] = [];
    let exception: string | undefined;
    try {
      const st = (await session.customRequest('stackTrace', { threadId, startFrame: 0, levels: 30 })) as { stackFrames?: { name: string; line?: number; source?: { path?: string; name?: string } }[] };
      for (const f of st.stackFrames ?? []) {
        const p = f.source?.path;
        frames.push({ name: f.name, path: p ? relPath(vscode.Uri.file(p)) : f.source?.name, line: f.line });
      }
    } catch {
      /* the adapter has no stack for this thread */
    }
    try {
      const ex = (await session.customRequest('exceptionInfo', { threadId })) as { exceptionId?: string; description?: string; details?: { message?: string; stackTrace?: string } };
      exception = [ex.exceptionId, ex.description ?? ex.details?.message, ex.details?.stackTrace].filter(Boolean).join(': ');
    } catch {
      /* not stopped on an exception, or the adapter does not support exceptionInfo */
    }
    m.debug = { sessionName: session.name, exception, frames };
  }
  return m;
}

function fmtTokens(n: number): string {
  return n >= 1e6 ? `${(n / 1e6).toFixed(1)}M tok` : n >= 1e3 ? `${(n / 1e3).toFixed(1)}k tok` : `${n} tok`;
}

function fmtBytes(n: number): string {
  return n >= 2 ** 30 ? `${(n / 2 ** 30).toFixed(2)} GiB` : `${(n / 2 ** 20).toFixed(1)} MiB`;
}
