// The chat panel's markdown renderer (media/markdown.js, evaluated as the webview evaluates it):
// model output is escaped, code is highlighted, and path / path:line references become links.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { runInNewContext } from 'node:vm';

const src = readFileSync(new URL('../../media/markdown.js', import.meta.url), 'utf8');
const sandbox: { RepoKVMarkdown?: { renderMarkdown(s: string): string; highlight(s: string): string } } = {};
(sandbox as Record<string, unknown>).globalThis = sandbox;
runInNewContext(src, sandbox);
const md = sandbox.RepoKVMarkdown!;

test('raw HTML from the model is escaped, never rendered', () => {
  const html = md.renderMarkdown('<img src=x onerror=alert(1)> and <script>alert(1)</script>\n```html\n<b onclick="x">\n```');
  assert.ok(!/<img|<script|<b /.test(html), html);
  assert.match(html, /&lt;img src=x onerror=alert\(1\)&gt;/);
});

test('path and path:line references become links; prose with dots does not', () => {
  const html = md.renderMarkdown('See src/math.ts:12 and README.md, also `engine/cli.ts`. Version 1.2.3, e.g. this. still.std foo.bar');
  assert.match(html, /<a href="#" class="ref" data-path="src\/math.ts" data-line="12"[^>]*>src\/math.ts:12<\/a>/);
  assert.match(html, /data-path="README.md" data-line=""/);
  assert.match(html, /<code><a href="#" class="ref" data-path="engine\/cli.ts"/);
  assert.ok(!/data-path="1.2.3"|data-path="still.std"|data-path="foo.bar"|data-path="e.g"/.test(html), html);
});

test('headings, lists, emphasis, fenced code with highlighting; an unfinished fence while streaming', () => {
  const html = md.renderMarkdown('# Title\n- one **bold**\n- two *it*\n\n1. first\n\n```ts\nconst x = 1; // note\n```');
  assert.match(html, /<h3>Title<\/h3>/);
  assert.match(html, /<ul><li>one <strong>bold<\/strong><\/li><li>two <em>it<\/em><\/li><\/ul>/);
  assert.match(html, /<ol><li>first<\/li><\/ol>/);
  assert.match(html, /<pre class="code" data-lang="ts"><code><span class="tok-keyword">const<\/span> x = <span class="tok-number">1<\/span>; <span class="tok-comment">\/\/ note<\/span><\/code><\/pre>/);
  const partial = md.renderMarkdown('Text\n```py\ndef f(');
  assert.match(partial, /<pre class="code" data-lang="py"><code><span class="tok-keyword">def<\/span> f\(<\/code><\/pre>/);
});
