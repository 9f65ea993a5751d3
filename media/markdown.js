// Markdown for the chat panel, small on purpose: headings, paragraphs, lists, block quotes, fenced
// code (with a light keyword highlighter), inline code, bold, italics, and repository references —
// `path/to/file.ext` and `path:line` — turned into links the extension opens. Everything is escaped
// first; the only tags produced are the ones written here (no raw HTML from model output ever reaches
// the DOM). A classic script: the panel loads it with a nonce, the tests evaluate it in a VM.
(function (global) {
  'use strict';

  const esc = (s) => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;').replace(/'/g, '&#39;');

  // A path with a folder or a file extension, optionally :line or :line:col. Kept conservative:
  // URLs and version numbers are not paths.
  const PATH_RE = /(^|[\s(\[{'"`,;])((?:\.{0,2}\/)?(?:[A-Za-z0-9_@.-]+\/)*[A-Za-z0-9_@-][A-Za-z0-9_@.-]*\.[A-Za-z][A-Za-z0-9]{0,9})(?::(\d+)(?::\d+)?)?(?=$|[\s)\]}'"`,;:.!?])/g;

  // File extensions a bare name (no folder, no line) must end with to count as a path.
  const EXTENSIONS = new Set(
    ('ts tsx js jsx mjs cjs json md py rs go c h cc cpp hpp cs java kt swift rb php sh bash zsh yml yaml toml ini cfg txt html css scss ' +
      'vue svelte sql proto gradle xml lock wgsl gguf mk cmake dockerfile').split(' '),
  );

  function linkPaths(escaped) {
    return escaped.replace(PATH_RE, (m, pre, path, line) => {
      if (/^\d+(\.\d+)+$/.test(path) || /^(?:e\.g|i\.e|etc)\./i.test(path)) return m;
      const ext = path.slice(path.lastIndexOf('.') + 1).toLowerCase();
      if (!EXTENSIONS.has(ext) && !(path.includes('/') && line)) return m;
      const label = line ? `${path}:${line}` : path;
      return `${pre}<a href="#" class="ref" data-path="${path}" data-line="${line || ''}" title="Open ${label}">${label}</a>`;
    });
  }

  const KEYWORDS = new Set(
    ('abstract as async await break case catch class const continue def default defer del delete do elif else enum export extends false ' +
      'final finally fn for from func function go if impl import in interface is lambda let loop match mod mut new nil none not null of or ' +
      'package pass private protected pub public raise return self static struct super switch this throw trait true try type typeof use var ' +
      'void while with yield None True False and').split(' '),
  );

  /** Light highlighting: comments, strings, numbers and keywords, by one left-to-right scan. */
  function highlight(code) {
    const re = /(\/\/[^\n]*|#[^\n]*|\/\*[\s\S]*?\*\/)|("(?:\\.|[^"\\\n])*"|'(?:\\.|[^'\\\n])*'|`(?:\\.|[^`\\])*`)|(\b\d+(?:\.\d+)?\b)|([A-Za-z_$][\w$]*)/g;
    let out = '';
    let last = 0;
    let m;
    while ((m = re.exec(code))) {
      out += esc(code.slice(last, m.index));
      const t = esc(m[0]);
      if (m[1]) out += `<span class="tok-comment">${t}</span>`;
      else if (m[2]) out += `<span class="tok-string">${t}</span>`;
      else if (m[3]) out += `<span class="tok-number">${t}</span>`;
      else if (KEYWORDS.has(m[4])) out += `<span class="tok-keyword">${t}</span>`;
      else out += t;
      last = re.lastIndex;
    }
    return out + esc(code.slice(last));
  }

  function inline(text) {
    // Inline code first (kept verbatim), then emphasis and references in the rest.
    const parts = text.split(/(`[^`\n]+`)/g);
    return parts
      .map((p, i) => {
        if (i % 2 === 1) {
          const inner = p.slice(1, -1);
          const linked = linkPaths(esc(inner));
          return `<code>${linked}</code>`;
        }
        let s = esc(p);
        s = s.replace(/\*\*([^*\n]+)\*\*/g, '<strong>$1</strong>').replace(/(^|[^*\w])\*([^*\n]+)\*(?!\w)/g, '$1<em>$2</em>');
        return linkPaths(s);
      })
      .join('');
  }

  /** Markdown text (possibly incomplete, while streaming) → safe HTML. */
  function renderMarkdown(src) {
    const lines = String(src).replace(/\r\n?/g, '\n').split('\n');
    const out = [];
    let para = [];
    let list = null; // 'ul' | 'ol'
    const flushPara = () => {
      if (para.length) out.push(`<p>${inline(para.join('\n')).replace(/\n/g, '<br>')}</p>`);
      para = [];
    };
    const closeList = () => {
      if (list) out.push(`</${list}>`);
      list = null;
    };
    for (let i = 0; i < lines.length; i++) {
      const line = lines[i];
      const fence = /^\s*(```+|~~~+)\s*([\w+#.-]*)\s*$/.exec(line);
      if (fence) {
        flushPara();
        closeList();
        const body = [];
        i++;
        while (i < lines.length && !lines[i].trim().startsWith(fence[1])) body.push(lines[i++]);
        const lang = fence[2] ? ` data-lang="${esc(fence[2])}"` : '';
        out.push(`<pre class="code"${lang}><code>${highlight(body.join('\n'))}</code></pre>`);
        continue;
      }
      const h = /^(#{1,6})\s+(.*)$/.exec(line);
      if (h) {
        flushPara();
        closeList();
        const n = Math.min(6, h[1].length + 2); // h3.. inside a chat bubble
        out.push(`<h${n}>${inline(h[2])}</h${n}>`);
        continue;
      }
      const li = /^\s*(?:([-*+])|(\d+)[.)])\s+(.*)$/.exec(line);
      if (li) {
        flushPara();
        const kind = li[1] ? 'ul' : 'ol';
        if (list !== kind) {
          closeList();
          out.push(`<${kind}>`);
          list = kind;
        }
        out.push(`<li>${inline(li[3])}</li>`);
        continue;
      }
      const q = /^>\s?(.*)$/.exec(line);
      if (q) {
        flushPara();
        closeList();
        out.push(`<blockquote>${inline(q[1])}</blockquote>`);
        continue;
      }
      if (!line.trim()) {
        flushPara();
        closeList();
        continue;
      }
      if (list) closeList();
      para.push(line);
    }
    flushPara();
    closeList();
    return out.join('');
  }

  global.RepoKVMarkdown = { renderMarkdown, highlight, escapeHtml: esc };
})(globalThis);
