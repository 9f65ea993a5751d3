// The repository document: exact bytes for a small tree, the order (git history, edits last, mtimes
// without git), determinism, the budget policy, and incremental updates with their invalidation offsets
// (edits, repeated edits, touches, renames, deletes, additions, many files at once).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { renameSync, rmSync, utimesSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { walkRepository, refreshWalk } from '../../engine/context/walk.js';
import {
  buildDocument,
  documentText,
  END_MARKER,
  estimateTokens,
  manifestOf,
  preamble,
  updateDocument,
  type RepoDocument,
} from '../../engine/context/document.js';
import { git, hasGit, remove, setMtimes, tempDir, writeTree } from './helpers.js';

const files = (d: RepoDocument) => d.segments.filter((s) => s.kind === 'file').map((s) => s.path);

test('the document of a small tree, byte for byte', async () => {
  const dir = tempDir('doc');
  try {
    writeTree(dir, { 'a.ts': 'export const a = 1;\r\n', 'lib/b.py': 'def b():\n    return 2', 'README.md': '# T\n', 'empty.txt': '' });
    setMtimes(dir, ['README.md', 'empty.txt', 'lib/b.py', 'a.ts']);
    const w = await walkRepository([dir], { git: false });
    const d = buildDocument(w);
    const name = w.roots[0].name;
    const expected =
      preamble([name]) +
      '<<<FILE README.md (1 line)>>>\n# T\n' +
      '<<<FILE empty.txt (0 lines)>>>\n' +
      '<<<FILE lib/b.py (2 lines)>>>\ndef b():\n    return 2\n' +
      '<<<FILE a.ts (1 line)>>>\nexport const a = 1;\n' +
      END_MARKER +
      '\n';
    assert.equal(documentText(d), expected);
    assert.ok(preamble([name]).startsWith(`What follows is the repository "${name}"`));
    // offsets are running sums; tokens by the counter given
    let c = 0;
    let t = 0;
    for (const s of d.segments) {
      assert.equal(s.charOffset, c);
      assert.equal(s.tokenOffset, t);
      assert.equal(s.tokens, estimateTokens(s.text));
      c += s.chars;
      t += s.tokens;
    }
    assert.equal(d.totalChars, expected.length);
    assert.equal(d.totalBytes, Buffer.byteLength(expected));
    const words = buildDocument(w, { countTokens: (x) => x.split(/\s+/).filter(Boolean).length });
    assert.equal(words.totalTokens, words.segments.reduce((s, x) => s + x.text.split(/\s+/).filter(Boolean).length, 0));
  } finally {
    remove(dir);
  }
});

test('order from git history: least changed first, files being edited last; same tree, same bytes', { skip: !hasGit }, async () => {
  const dir = tempDir('git');
  try {
    writeTree(dir, { 'stable.ts': 's\n', 'warm.ts': 'w\n', 'hot.ts': 'h\n', 'editing.ts': 'e\n', 'z-old.ts': 'z\n' });
    git(dir, ['init', '-q']);
    git(dir, ['add', '.']);
    git(dir, ['commit', '-q', '-m', 'c1'], '2023-01-01T00:00:00Z');
    writeTree(dir, { 'warm.ts': 'w2\n', 'hot.ts': 'h2\n' });
    git(dir, ['commit', '-q', '-am', 'c2'], '2024-01-01T00:00:00Z');
    writeTree(dir, { 'hot.ts': 'h3\n' });
    git(dir, ['commit', '-q', '-am', 'c3'], '2024-06-01T00:00:00Z');
    writeTree(dir, { 'editing.ts': 'e2\n', 'new.ts': 'n\n' });
    setMtimes(dir, ['new.ts', 'editing.ts']);
    const w = await walkRepository([dir]);
    assert.equal(w.roots[0].git?.commitsRead, 3);
    const d = buildDocument(w);
    // stable.ts and z-old.ts: one commit each, at the same time: by path
    assert.deepEqual(files(d), ['stable.ts', 'z-old.ts', 'warm.ts', 'hot.ts', 'new.ts', 'editing.ts']);
    const again = buildDocument(await walkRepository([dir]));
    assert.equal(documentText(again), documentText(d));
    // a new commit that touches only warm.ts moves only warm.ts (scores of the others are unchanged)
    git(dir, ['add', '.']);
    git(dir, ['commit', '-q', '-m', 'c4'], '2024-07-01T00:00:00Z');
    writeTree(dir, { 'warm.ts': 'w3\n' });
    git(dir, ['commit', '-q', '-am', 'c5'], '2024-08-01T00:00:00Z');
    const after = buildDocument(await walkRepository([dir]));
    assert.deepEqual(files(after), ['stable.ts', 'z-old.ts', 'hot.ts', 'new.ts', 'editing.ts', 'warm.ts']);
    // without git: modification times
    const noGit = buildDocument(await walkRepository([dir], { git: false }));
    assert.equal(files(noGit).length, 6);
  } finally {
    remove(dir);
  }
});

test('a root inside a repository: history of its own files, paths relative to the root', { skip: !hasGit }, async () => {
  const dir = tempDir('subgit');
  try {
    writeTree(dir, { 'pkg/a.ts': 'a\n', 'pkg/b.ts': 'b\n', 'other/c.ts': 'c\n' });
    git(dir, ['init', '-q']);
    git(dir, ['add', '.']);
    git(dir, ['commit', '-q', '-m', 'c1'], '2023-01-01T00:00:00Z');
    writeTree(dir, { 'pkg/a.ts': 'a2\n', 'other/c.ts': 'c2\n' });
    git(dir, ['commit', '-q', '-am', 'c2'], '2023-02-01T00:00:00Z');
    const w = await walkRepository([join(dir, 'pkg')]);
    assert.deepEqual(w.files.map((f) => [f.path, f.change.group, f.change.commits]), [['a.ts', 0, 2], ['b.ts', 0, 1]]);
    assert.deepEqual(files(buildDocument(w)), ['b.ts', 'a.ts']);
    // an older layout version shares nothing
    const d = buildDocument(w);
    const inv = updateDocument({ ...manifestOf(d), format: 0 }, w).invalidation;
    assert.equal(inv.segment, 0);
    assert.equal(inv.recomputedTokens, d.totalTokens);
  } finally {
    remove(dir);
  }
});

/** A tree of n files f00..f(n-1), oldest first, each a few lines. */
function numbered(dir: string, n: number): string[] {
  const names = Array.from({ length: n }, (_, i) => `src/f${String(i).padStart(2, '0')}.ts`);
  writeTree(dir, Object.fromEntries(names.map((p, i) => [p, `export const v${i} = ${i};\nexport function f${i}() {\n  return v${i};\n}\n`])));
  setMtimes(dir, names);
  return names;
}

let clock = 1_800_000_000;
function edit(dir: string, path: string, text: string): string {
  const abs = join(dir, path);
  writeFileSync(abs, text);
  clock += 10;
  utimesSync(abs, clock, clock);
  return abs;
}

test('incremental: edits move to the tail, repeated edits cost only that file, touches cost nothing', async () => {
  const dir = tempDir('inc');
  try {
    const names = numbered(dir, 10);
    let w = await walkRepository([dir], { git: false });
    const d0 = buildDocument(w);
    assert.deepEqual(files(d0), names);

    // one edit in the middle
    w = await refreshWalk(w, [edit(dir, names[4], 'export const v4 = 44;\n')]);
    const u1 = updateDocument(d0, w);
    assert.deepEqual(files(u1.document), [...names.slice(0, 4), ...names.slice(5), names[4]]);
    assert.equal(u1.invalidation.segment, 5); // preamble + 4 files kept
    assert.equal(u1.invalidation.path, names[5]);
    assert.equal(u1.invalidation.tokens, d0.segments[5].tokenOffset);
    assert.equal(u1.invalidation.chars, d0.segments[5].charOffset);
    assert.equal(u1.invalidation.recomputedTokens, u1.document.totalTokens - d0.segments[5].tokenOffset);
    assert.equal(documentText(u1.document).slice(0, u1.invalidation.chars), documentText(d0).slice(0, u1.invalidation.chars));

    // the same file again: only it (and the footer) is recomputed
    w = await refreshWalk(w, [edit(dir, names[4], 'export const v4 = 444;\n')]);
    const u2 = updateDocument(u1.document, w);
    const last = u2.document.segments[10];
    assert.equal(last.path, names[4]);
    assert.equal(u2.invalidation.segment, 10);
    assert.equal(u2.invalidation.recomputedTokens, last.tokens + u2.document.segments[11].tokens);

    // a touch without a change of content: nothing
    const touched = join(dir, names[2]);
    utimesSync(touched, clock + 5, clock + 5);
    w = await refreshWalk(w, [touched]);
    const u3 = updateDocument(manifestOf(u2.document), w); // from the manifest alone
    assert.equal(u3.invalidation.unchanged, true);
    assert.equal(u3.invalidation.recomputedTokens, 0);
    assert.equal(documentText(u3.document), documentText(u2.document));

    // the update equals a fresh layout in the new order: same bytes as building from the same walk
    const fresh = await walkRepository([dir], { git: false });
    assert.deepEqual(w.files.map((f) => [f.path, f.hash]), fresh.files.map((f) => [f.path, f.hash]));
  } finally {
    remove(dir);
  }
});

test('incremental: renames, deletes, additions and many files at once', async () => {
  const dir = tempDir('inc2');
  try {
    const names = numbered(dir, 12);
    let w = await walkRepository([dir], { git: false });
    let d = buildDocument(w);

    // rename f01 -> g01: the old place is the first difference, the new name goes to the tail
    renameSync(join(dir, names[1]), join(dir, 'src/g01.ts'));
    clock += 10;
    utimesSync(join(dir, 'src/g01.ts'), clock, clock);
    w = await refreshWalk(w, [join(dir, names[1]), join(dir, 'src/g01.ts')]);
    let u = updateDocument(d, w);
    assert.deepEqual(files(u.document), [names[0], ...names.slice(2), 'src/g01.ts']);
    assert.equal(u.invalidation.segment, 2);
    assert.equal(u.invalidation.tokens, d.segments[2].tokenOffset);
    d = u.document;

    // delete f07
    rmSync(join(dir, names[7]));
    w = await refreshWalk(w, [join(dir, names[7])]);
    u = updateDocument(d, w);
    assert.ok(!files(u.document).includes(names[7]));
    assert.equal(u.invalidation.path, names[8]);
    assert.equal(u.invalidation.segment, files(d).indexOf(names[7]) + 1);
    d = u.document;

    // a new file: everything before the footer stays
    const added = edit(dir, 'src/new.ts', 'export {};\n');
    w = await refreshWalk(w, [added]);
    u = updateDocument(d, w);
    const footerAt = d.segments.length - 1;
    assert.equal(u.invalidation.segment, footerAt);
    assert.equal(u.invalidation.path, 'src/new.ts');
    assert.equal(u.invalidation.tokens, d.segments[footerAt].tokenOffset);
    d = u.document;

    // a burst (a checkout): six files change at once, one update; they go to the tail by mtime, then path
    const burst = [names[3], names[5], names[9], names[0], names[11], names[6]];
    const abs = burst.map((p, i) => edit(dir, p, `export const changed${i} = true;\n`));
    w = await refreshWalk(w, abs.reverse());
    u = updateDocument(d, w);
    const order = files(u.document);
    assert.deepEqual(order.slice(-6), burst);
    assert.equal(u.invalidation.segment, 1); // f00 was first, and changed
    // deleting a folder removes everything under it
    rmSync(join(dir, 'src'), { recursive: true });
    w = await refreshWalk(w, [join(dir, 'src')]);
    assert.equal(w.files.length, 0);
    u = updateDocument(u.document, w);
    assert.deepEqual(files(u.document), []);
  } finally {
    remove(dir);
  }
});

test('budget: generated files first, then outlines, then the largest files; the footer names them', async () => {
  const dir = tempDir('budget');
  try {
    const big = Array.from({ length: 60 }, (_, i) => `export function fn${i}(x: number): number {\n  const y = x * ${i};\n  return y + ${i};\n}\n`).join('');
    writeTree(dir, {
      'small.ts': 'export const s = 1;\n',
      'big.ts': big,
      'data.json': JSON.stringify(Array.from({ length: 4000 }, (_, i) => ({ id: i, name: `item${i}` }))) + '\n',
      'proto/api_pb.js': '// generated\nexports.x = 1;\n',
      'mid.ts': 'export class Mid {\n  run(): void {}\n}\n'.repeat(20),
    });
    setMtimes(dir, ['small.ts', 'big.ts', 'data.json', 'proto/api_pb.js', 'mid.ts']);
    const w = await walkRepository([dir], { git: false });
    const full = buildDocument(w);
    const tok = (p: string) => full.segments.find((s) => s.path === p)!.tokens;

    // room for everything but the data file
    const b1 = full.totalTokens - tok('data.json') + 60;
    const d1 = buildDocument(w, { budgetTokens: b1 });
    assert.ok(d1.totalTokens <= b1, `${d1.totalTokens} > ${b1}`);
    assert.deepEqual(d1.omitted.map((o) => [o.path, o.reason]), [['data.json', 'generated']]);
    assert.deepEqual(d1.outlined, []);
    assert.match(documentText(d1), /Not shown:\n- data\.json \(generated or data, left out to fit the context\)\n$/);

    // less: big.ts becomes an outline
    const b2 = b1 - tok('proto/api_pb.js') - Math.floor(tok('big.ts') / 3);
    const d2 = buildDocument(w, { budgetTokens: b2 });
    assert.ok(d2.totalTokens <= b2);
    assert.deepEqual(d2.omitted.map((o) => o.path).sort(), ['data.json', 'proto/api_pb.js']);
    assert.deepEqual(d2.outlined.map((o) => o.path), ['big.ts']);
    const outline = d2.segments.find((s) => s.path === 'big.ts')!;
    assert.equal(outline.mode, 'outline');
    assert.ok(outline.text.startsWith('<<<FILE big.ts (outline: 60 of 240 lines)>>>\n1: export function fn0(x: number): number {\n5: export function fn1'));
    assert.match(documentText(d2), /Shown only as an outline, to fit the context:\n- big\.ts \(\d+ tokens in full\)\n/);

    // much less: the largest remaining files are left out
    const b3 = full.segments[0].tokens + 200;
    const d3 = buildDocument(w, { budgetTokens: b3 });
    assert.ok(d3.totalTokens <= b3, `${d3.totalTokens} > ${b3}`);
    assert.ok(files(d3).includes('small.ts'));
    assert.ok(d3.omitted.some((o) => o.reason === 'budget'));

    // an update keeps earlier budget decisions for unchanged files
    const u = updateDocument(d2, await refreshWalk(w, [edit(dir, 'small.ts', 'export const s = 2;\n')]));
    assert.equal(u.document.segments.find((s) => s.path === 'big.ts')!.mode, 'outline');
    assert.equal(u.invalidation.path, files(d2)[1]);
    assert.ok(u.document.totalTokens <= b2);
  } finally {
    remove(dir);
  }
});

test('files left out for size are named in the footer', async () => {
  const dir = tempDir('footer');
  try {
    writeTree(dir, { 'a.ts': 'a\n', 'dump.sql': 'x'.repeat(3000) + '\n' });
    const d = buildDocument(await walkRepository([dir], { git: false, maxFileBytes: 1000 }));
    assert.match(documentText(d), /<<<END OF REPOSITORY>>>\nNot shown:\n- dump\.sql \(too large: 3001 bytes\)\n$/);
  } finally {
    remove(dir);
  }
});
