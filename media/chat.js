// The chat panel's script (webview). It only renders and forwards: sessions, answers and the engine
// live in the extension host. Messages in: state, start, delta, done, error, progress, busy.
// Messages out: ready, ask, stop, newSession, selectSession, renameSession, deleteSession, open.
(function () {
  'use strict';
  const vscode = acquireVsCodeApi();
  const { renderMarkdown, escapeHtml } = globalThis.RepoKVMarkdown;
  const $ = (id) => document.getElementById(id);
  const log = $('log');
  const input = $('input');
  const send = $('send');
  const stop = $('stop');
  const sessions = $('sessions');
  const banner = $('banner');
  const progress = $('progress');

  let busy = false;
  /** requestId → { el, text, pending } for answers being streamed. */
  const live = new Map();

  function fmtStatus(s) {
    if (!s) return '';
    const sec = (ms) => (ms / 1000).toFixed(2) + ' s';
    if (s.remote) {
      // A remote engine's own counts; the repository size is estimated here (its tokenizer is not).
      const r = [
        s.remote.cachedReported
          ? `prompt ${s.promptTokens} tokens: ${s.cachedTokens} cached by the remote, ${s.computedTokens} computed there`
          : `prompt ${s.promptTokens || '?'} tokens (the remote reports no cached count)`,
        `repository ~${s.repoTokens} tokens`,
        `first token ${sec(s.timeToFirstTokenMs)}`,
        `${s.tokensPerSecond ? s.tokensPerSecond.toFixed(1) : '–'} tokens/s`,
        `remote ${s.remote.model}`,
      ];
      if (s.stopReason === 'cancelled') r.push('stopped');
      return r.join(' · ');
    }
    const parts = [
      `prompt ${s.promptTokens} tokens: ${s.cachedTokens} from cache` + (s.fromDisk ? ` (${s.fromDisk} from disk)` : '') + `, ${s.computedTokens} computed`,
      `repository ${s.repoTokens} tokens` + (s.cachedTokens >= s.repoTokens && s.repoTokens > 0 ? ' (cached)' : ''),
      `first token ${sec(s.timeToFirstTokenMs)}`,
      `${s.tokensPerSecond ? s.tokensPerSecond.toFixed(1) : '–'} tokens/s`,
      s.backend,
    ];
    if (s.stopReason === 'cancelled') parts.push('stopped');
    return parts.join(' · ');
  }

  function bubble(role, html, status) {
    const el = document.createElement('div');
    el.className = `msg ${role}`;
    el.setAttribute('role', 'article');
    el.setAttribute('aria-label', role === 'user' ? 'Your question' : 'Answer');
    const body = document.createElement('div');
    body.className = 'body';
    body.innerHTML = html;
    el.appendChild(body);
    if (role === 'assistant') {
      const st = document.createElement('div');
      st.className = 'status';
      st.textContent = fmtStatus(status);
      el.appendChild(st);
    }
    log.appendChild(el);
    log.scrollTop = log.scrollHeight;
    return el;
  }

  function setBusy(b) {
    busy = b;
    stop.disabled = !b;
    send.disabled = b;
    document.body.classList.toggle('busy', b);
  }

  function renderSessions(st) {
    sessions.innerHTML = '';
    const none = document.createElement('option');
    none.value = '';
    none.textContent = st.sessions.length ? '— new session —' : 'No sessions yet';
    sessions.appendChild(none);
    for (const s of st.sessions) {
      const o = document.createElement('option');
      o.value = s.id;
      o.textContent = `${s.title} (${Math.floor(s.turns / 2)} turns)`;
      if (s.id === st.currentId) o.selected = true;
      sessions.appendChild(o);
    }
    $('rename').disabled = !st.currentId;
    $('delete').disabled = !st.currentId;
  }

  function renderState(st) {
    banner.textContent = st.banner || '';
    banner.hidden = !st.banner;
    renderSessions(st);
    log.innerHTML = '';
    live.clear();
    const turns = st.turns || [];
    turns.forEach((t, i) => {
      if (t.role === 'user') bubble('user', renderMarkdown(t.content));
      else bubble('assistant', renderMarkdown(t.content), st.statuses ? st.statuses[i] : null);
    });
    input.disabled = !!st.disabled;
    setBusy(!!st.busy);
    vscode.setState({ currentId: st.currentId });
  }

  let raf = 0;
  function repaint() {
    raf = 0;
    for (const a of live.values()) {
      if (!a.pending) continue;
      a.pending = false;
      a.el.querySelector('.body').innerHTML = renderMarkdown(a.text) + '<span class="cursor" aria-hidden="true"></span>';
    }
    log.scrollTop = log.scrollHeight;
  }

  window.addEventListener('message', (ev) => {
    const m = ev.data;
    switch (m.type) {
      case 'state':
        renderState(m);
        break;
      case 'sessions':
        renderSessions(m);
        vscode.setState({ currentId: m.currentId });
        break;
      case 'start': {
        bubble('user', renderMarkdown(m.question));
        const el = bubble('assistant', '<span class="cursor" aria-hidden="true"></span>');
        el.querySelector('.status').textContent = 'thinking…';
        live.set(m.requestId, { el, text: '', pending: false });
        setBusy(true);
        break;
      }
      case 'delta': {
        const a = live.get(m.requestId);
        if (!a) break;
        a.text += m.text;
        a.pending = true;
        a.el.querySelector('.status').textContent = 'answering…';
        if (!raf) raf = requestAnimationFrame(repaint);
        break;
      }
      case 'progress': {
        const a = m.requestId && live.get(m.requestId);
        const what = m.stage === 'prefill' ? `reading the repository into the model: ${m.done}/${m.total} tokens` : m.stage === 'index' ? 'indexing the repository…' : 'loading the model…';
        if (a) a.el.querySelector('.status').textContent = what;
        progress.textContent = what;
        break;
      }
      case 'done': {
        const a = live.get(m.requestId);
        if (a) {
          a.el.querySelector('.body').innerHTML = renderMarkdown(m.answer);
          a.el.querySelector('.status').textContent = fmtStatus(m.status);
          live.delete(m.requestId);
        }
        progress.textContent = '';
        setBusy(false);
        input.focus();
        break;
      }
      case 'error': {
        const a = m.requestId && live.get(m.requestId);
        if (a) {
          a.el.classList.add('error');
          a.el.querySelector('.body').innerHTML = `<p>${escapeHtml(m.message)}</p>`;
          a.el.querySelector('.status').textContent = '';
          live.delete(m.requestId);
        } else {
          bubble('error', `<p>${escapeHtml(m.message)}</p>`);
        }
        progress.textContent = '';
        setBusy(false);
        break;
      }
    }
  });

  function submit() {
    const text = input.value.trim();
    if (!text || busy) return;
    input.value = '';
    vscode.postMessage({ type: 'ask', text });
  }

  send.addEventListener('click', submit);
  stop.addEventListener('click', () => vscode.postMessage({ type: 'stop' }));
  input.addEventListener('keydown', (e) => {
    if (e.key === 'Enter' && !e.shiftKey && !e.isComposing) {
      e.preventDefault();
      submit();
    } else if (e.key === 'Escape' && busy) {
      e.preventDefault();
      vscode.postMessage({ type: 'stop' });
    }
  });
  document.addEventListener('keydown', (e) => {
    if (e.key === 'Escape' && busy) vscode.postMessage({ type: 'stop' });
  });
  sessions.addEventListener('change', () => vscode.postMessage({ type: 'selectSession', id: sessions.value || null }));
  $('new').addEventListener('click', () => vscode.postMessage({ type: 'newSession' }));
  $('rename').addEventListener('click', () => vscode.postMessage({ type: 'renameSession', id: sessions.value }));
  $('delete').addEventListener('click', () => vscode.postMessage({ type: 'deleteSession', id: sessions.value }));
  // File references: a click (or Enter on the focused link) asks the extension to open the file.
  log.addEventListener('click', (e) => {
    const a = e.target.closest && e.target.closest('a.ref');
    if (!a) return;
    e.preventDefault();
    vscode.postMessage({ type: 'open', path: a.dataset.path, line: a.dataset.line ? Number(a.dataset.line) : undefined });
  });

  const saved = vscode.getState();
  vscode.postMessage({ type: 'ready', currentId: saved ? saved.currentId : undefined });
  input.focus();
})();
