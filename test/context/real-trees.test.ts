// Real trees: this repository and the `typescript` package from node_modules. Deterministic bytes,
// a format a reader can split back into files exactly (headers carry line counts, so a file that
// itself contains "<<<FILE" cannot be mistaken for a header), no false secret findings, and the
// invalidation of a one-file edit in the middle of the order.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { cpSync, utimesSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { refreshWalk, walkRepository } from '../../engine/context/walk.js';
import { buildDocument, documentText, END_MARKER, updateDocument, type RepoDocument } from '../../engine/context/document.js';
import { remove, tempDir } from './helpers.js';

const repo = new URL('../..', import.meta.url).pathname.replace(/\/$/, '');
const tsPkg = join(repo, 'node_modules', 'typescript');

/** Splits a document back into (path, text) by its headers' line counts. */
function parse(doc: string): { path: string; text: string }[] {
  const lines = doc.split('\n');
  let i = lines.findIndex((l) => l.startsWith('<<<FILE '));
  const out: { path: string; text: string }[] = [];
  while (i >= 0 && i < lines.length && lines[i] !== END_MARKER) {
    const m = /^<<<FILE (.*) \((\d+) lines?\)>>>$/.exec(lines[i]);
    assert.ok(m, `not a header: ${lines[i]}`);
    const n = Number(m[2]);
    out.push({ path: m[1], text: lines.slice(i + 1, i + 1 + n).map((l) => l + '\n').join('') });
    i += 1 + n;
  }
  assert.equal(lines[i], END_MARKER);
  return out;
}

function checkRoundTrip(d: RepoDocument, texts: Map<string, string>): void {
  const parsed = parse(documentText(d));
  assert.deepEqual(parsed.map((p) => p.path), d.segments.filter((s) => s.kind === 'file').map((s) => s.path));
  for (const p of parsed) assert.equal(p.text, texts.get(p.path), p.path);
}

test('this repository: deterministic, parseable, no false secrets', async () => {
  const w1 = await walkRepository([repo]);
  const w2 = await walkRepository([repo]);
  const d1 = buildDocument(w1);
  const d2 = buildDocument(w2);
  assert.equal(documentText(d1), documentText(d2));
  assert.ok(w1.files.some((f) => f.path === 'engine/context/walk.ts'));
  assert.ok(!w1.files.some((f) => f.path.startsWith('node_modules/') || f.path === 'package-lock.json'));
  // this very suite writes "<<<FILE" inside files: the line counts keep the format unambiguous
  checkRoundTrip(d1, new Map(w1.files.map((f) => [f.path, f.text])));
  const secrets = w1.excluded.filter((e) => e.reason === 'secret-content');
  assert.deepEqual(secrets, [], JSON.stringify(secrets));
});

test('node_modules/typescript: deterministic, large files named, no false secrets', async () => {
  const t0 = performance.now();
  const w1 = await walkRepository([tsPkg]);
  const ms = performance.now() - t0;
  const w2 = await walkRepository([tsPkg]);
  assert.ok(w1.files.length > 100, `${w1.files.length} files`);
  assert.ok(w1.files.some((f) => f.path === 'lib/lib.es5.d.ts'));
  const d1 = buildDocument(w1);
  assert.equal(documentText(d1), documentText(buildDocument(w2)));
  checkRoundTrip(d1, new Map(w1.files.map((f) => [f.path, f.text])));
  const tooLarge = w1.excluded.filter((e) => e.reason === 'too-large').map((e) => e.path);
  assert.ok(tooLarge.includes('lib/typescript.js'), tooLarge.join(', '));
  assert.match(documentText(d1), /- lib\/typescript\.js \(too large: \d+ bytes\)\n/);
  assert.deepEqual(w1.excluded.filter((e) => e.reason.startsWith('secret')), []);
  assert.equal(w1.roots[0].notes.length, 1); // node_modules/ in the repository's .gitignore is not applied to it
  const mb = w1.files.reduce((s, f) => s + f.size, 0) / 1e6;
  console.log(`typescript: ${w1.files.length} files, ${mb.toFixed(1)} MB walked in ${ms.toFixed(0)} ms`);
});

test('a copy of typescript/lib: a one-file edit in the middle recomputes that file and what follows', async () => {
  const dir = tempDir('tslib');
  try {
    cpSync(join(tsPkg, 'lib'), dir, { recursive: true, filter: (src) => !/\.js$/.test(src) || src.endsWith('lib') });
    let w = await walkRepository([dir], { git: false });
    const d = buildDocument(w);
    const fileSegs = d.segments.filter((s) => s.kind === 'file');
    const mid = fileSegs[Math.floor(fileSegs.length / 2)];
    const abs = join(dir, mid.path!);
    const f = w.files.find((x) => x.path === mid.path)!;
    writeFileSync(abs, f.text.replace(/\n$/, '\n// edited\n'));
    utimesSync(abs, 2_000_000_000, 2_000_000_000);
    w = await refreshWalk(w, [abs]);
    const u = updateDocument(d, w);
    const idx = d.segments.indexOf(mid);
    assert.equal(u.invalidation.segment, idx);
    assert.equal(u.invalidation.tokens, mid.tokenOffset);
    const moved = u.document.segments[u.document.segments.length - 2];
    assert.equal(moved.path, mid.path);
    // recomputed = the files after it (moved up) + the edited file + the footer
    const after = d.segments.slice(idx + 1, -1).reduce((s, x) => s + x.tokens, 0);
    assert.equal(u.invalidation.recomputedTokens, after + moved.tokens + u.document.segments.at(-1)!.tokens);
    console.log(`typescript/lib copy: one-file edit in the middle recomputes ${u.invalidation.recomputedTokens} of ${u.invalidation.totalTokens} tokens (the file: ${moved.tokens})`);
    // the same file again: only itself
    writeFileSync(abs, f.text.replace(/\n$/, '\n// edited twice\n'));
    w = await refreshWalk(w, [abs]);
    const u2 = updateDocument(u.document, w);
    assert.equal(u2.invalidation.recomputedTokens, u2.document.segments.at(-2)!.tokens + u2.document.segments.at(-1)!.tokens);
  } finally {
    remove(dir);
  }
});
