// The walk on temporary trees: ignore rules at several levels and their precedence, default excludes,
// binaries, encodings, symlinks (loops, outside the root, duplicates), a 50 MB file, special and
// unreadable files, multi-root workspaces.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { chmodSync, closeSync, mkdirSync, openSync, ftruncateSync, symlinkSync } from 'node:fs';
import { join } from 'node:path';
import { walkRepository, type WalkResult } from '../../engine/context/walk.js';
import { rebaseFromAbove, rebasePattern } from '../../engine/context/rules.js';
import { git, hasGit, remove, tempDir, writeTree } from './helpers.js';

const paths = (w: WalkResult) => w.files.map((f) => f.path);
const reasons = (w: WalkResult) => Object.fromEntries(w.excluded.map((e) => [e.path, e.reason]));

test('ignore rules at every level, in git precedence, with .repokvignore above .gitignore', async () => {
  const dir = tempDir('rules');
  try {
    writeTree(dir, {
      '.gitignore': 'ignored-root.txt\n/only-top.txt\ngen/\n*.tmp\n# comment\n\nsettings-*.csv\n',
      '.repokvignore': '!gen/\ndocs/private/\n!vendor/\n',
      'only-top.txt': 'x\n',
      'ignored-root.txt': 'x\n',
      'keep.txt': 'x\n',
      'a.tmp': 'x\n',
      'gen/out.ts': 'export {};\n',
      'sub/only-top.txt': 'kept: /only-top.txt is anchored to the root\n',
      'sub/.gitignore': '!keep.tmp\nlocal/\n',
      'sub/keep.tmp': 'x\n',
      'sub/other.tmp': 'x\n',
      'sub/local/x.ts': 'x\n',
      'sub/deeper/.gitignore': '*.md\n',
      'sub/deeper/README.md': 'x\n',
      'sub/deeper/code.ts': 'x\n',
      'docs/private/notes.md': 'x\n',
      'docs/public.md': 'x\n',
      'node_modules/pkg/index.js': 'x\n',
      'dist/bundle.js': 'x\n',
      'vendor/lib.c': 'int x;\n',
      'vendor/node_modules/dep.js': 'x\n',
      'package-lock.json': '{}\n',
      'sub/app.min.js': 'x\n',
      'sub/app.js.map': '{}\n',
      'data/big.csv': 'a,b\n',
      'data/small.json': '{}\n',
      '.git/info/exclude': 'local-only.txt\n',
      'local-only.txt': 'x\n',
    });
    const w = await walkRepository([dir], { exclude: ['data/*.csv'], git: false });
    assert.deepEqual(paths(w), [
      '.gitignore',
      '.repokvignore',
      'data/small.json',
      'docs/public.md',
      'gen/out.ts',
      'keep.txt',
      'sub/.gitignore',
      'sub/deeper/.gitignore',
      'sub/deeper/code.ts',
      'sub/keep.tmp',
      'sub/only-top.txt',
      'vendor/lib.c',
    ]);
    assert.deepEqual(reasons(w), {
      '.git/': 'vcs-dir',
      'a.tmp': 'gitignore',
      'data/big.csv': 'settings-exclude',
      'dist/': 'default-excluded',
      'docs/private/': 'repokvignore',
      'ignored-root.txt': 'gitignore',
      'local-only.txt': 'git-info-exclude',
      'node_modules/': 'default-excluded',
      'only-top.txt': 'gitignore',
      'package-lock.json': 'default-excluded',
      'sub/app.js.map': 'default-excluded',
      'sub/app.min.js': 'default-excluded',
      'sub/deeper/README.md': 'gitignore',
      'sub/local/': 'gitignore',
      'sub/other.tmp': 'gitignore',
      'vendor/node_modules/': 'default-excluded',
    });
    const detail = Object.fromEntries(w.excluded.map((e) => [e.path, e.detail]));
    assert.equal(detail['sub/deeper/README.md'], 'sub/deeper/.gitignore:1: /sub/deeper/**/*.md');
    assert.equal(detail['a.tmp'], '.gitignore:4: *.tmp');
    // include: only matching files (folders are still walked)
    const inc = await walkRepository([dir], { include: ['*.ts'], git: false });
    assert.deepEqual(paths(inc), ['gen/out.ts', 'sub/deeper/code.ts']);
    // without the default excludes, node_modules and dist come in (still gitignore-free here)
    const all = await walkRepository([dir], { defaultExcludes: false, git: false });
    assert.ok(paths(all).includes('node_modules/pkg/index.js') && paths(all).includes('dist/bundle.js'));
  } finally {
    remove(dir);
  }
});

test('pattern rebasing follows gitignore(5)', () => {
  assert.equal(rebasePattern('*.md', 'a/b'), '/a/b/**/*.md');
  assert.equal(rebasePattern('/x', 'a'), '/a/x');
  assert.equal(rebasePattern('x/y', 'a'), '/a/x/y');
  assert.equal(rebasePattern('!keep/', 'a'), '!/a/**/keep/');
  assert.equal(rebasePattern('**/z', 'a'), '/a/**/z');
  assert.equal(rebasePattern('x', 'we[i]rd*'), '/we\\[i\\]rd\\*/**/x');
  // rules from above the root (the root is sub/pkg of the file's folder)
  assert.equal(rebaseFromAbove('*.log', 'sub/pkg'), '*.log');
  assert.equal(rebaseFromAbove('/sub/pkg/gen/', 'sub/pkg'), '/gen/');
  assert.equal(rebaseFromAbove('/sub/*/gen', 'sub/pkg'), '/gen');
  assert.equal(rebaseFromAbove('/other/gen', 'sub/pkg'), undefined);
  assert.equal(rebaseFromAbove('sub/**/tmp', 'sub/pkg'), '/**/tmp');
});

test('rules from above the root apply, unless they exclude the root itself', { skip: !hasGit }, async () => {
  const dir = tempDir('above');
  try {
    writeTree(dir, {
      '.gitignore': '*.log.txt\n/pkgs/app/secret-plan.md\nnode_modules/\n',
      'pkgs/app/a.ts': 'x\n',
      'pkgs/app/debug.log.txt': 'x\n',
      'pkgs/app/secret-plan.md': 'x\n',
      'node_modules/lib/index.js': 'x\n',
    });
    git(dir, ['init', '-q']);
    const w = await walkRepository([join(dir, 'pkgs', 'app')]);
    assert.deepEqual(paths(w), ['a.ts']);
    assert.deepEqual(reasons(w), { 'debug.log.txt': 'gitignore', 'secret-plan.md': 'gitignore' });
    const lib = await walkRepository([join(dir, 'node_modules', 'lib')]);
    assert.deepEqual(paths(lib), ['index.js']);
    assert.match(lib.roots[0].notes[0], /root is itself excluded by \.\.\/\.\.\/\.gitignore:3/);
  } finally {
    remove(dir);
  }
});

test('binaries, encodings, line endings', async () => {
  const dir = tempDir('enc');
  try {
    writeTree(dir, {
      'img.png': new Uint8Array([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a, 0, 0, 0, 13]),
      'ctrl.bin': new Uint8Array(Array.from({ length: 100 }, (_, i) => (i % 3 === 0 ? 1 : 65))),
      'latin1.c': new Uint8Array([...Buffer.from('/* caf'), 0xe9, ...Buffer.from(' */\r\nint x;\r\n')]),
      'utf16.txt': new Uint8Array([0xff, 0xfe, ...Buffer.from('hi\r\n', 'utf16le')]),
      'bom.ts': new Uint8Array([0xef, 0xbb, 0xbf, ...Buffer.from('a\rb\n\n\n')]),
      'empty.py': '',
      'ansi.log.txt': 'plain \u001b[31mred\u001b[0m\n',
    });
    const w = await walkRepository([dir], { git: false });
    const f = Object.fromEntries(w.files.map((x) => [x.path, x]));
    assert.deepEqual(paths(w), ['ansi.log.txt', 'bom.ts', 'empty.py', 'latin1.c', 'utf16.txt']);
    assert.equal(f['latin1.c'].text, '/* café */\nint x;\n');
    assert.equal(f['latin1.c'].encoding, 'windows-1252');
    assert.equal(f['utf16.txt'].text, 'hi\n');
    assert.equal(f['utf16.txt'].encoding, 'utf-16le');
    assert.equal(f['bom.ts'].text, 'a\nb\n');
    assert.equal(f['empty.py'].text, '');
    const ex = Object.fromEntries(w.excluded.map((e) => [e.path, `${e.reason}: ${e.detail}`]));
    assert.equal(ex['img.png'], 'binary: NUL byte');
    assert.equal(ex['ctrl.bin'], 'binary: 34% control characters');
  } finally {
    remove(dir);
  }
});

test('symlinks: loops, outside the root, duplicates, broken, linked ignored folders', async () => {
  const dir = tempDir('links');
  const outside = tempDir('outside');
  try {
    writeTree(dir, {
      'src/a.ts': 'a\n',
      'src/nested/b.ts': 'b\n',
      'build/docs/guide.md': '# guide\n',
      '.ssh/id': 'x\n',
      'cfg/.env': 'X=1\n',
    });
    writeTree(outside, { 'o.ts': 'o\n' });
    symlinkSync('.', join(dir, 'self'));
    symlinkSync('..', join(dir, 'src', 'nested', 'up'));
    symlinkSync('../src', join(dir, 'cfg', 'src-again'));
    symlinkSync(outside, join(dir, 'elsewhere'));
    symlinkSync(join(outside, 'o.ts'), join(dir, 'o-link.ts'));
    symlinkSync('src/a.ts', join(dir, 'a-link.ts'));
    symlinkSync('missing.ts', join(dir, 'broken.ts'));
    symlinkSync('build/docs', join(dir, 'docs'));
    symlinkSync('.ssh', join(dir, 'keys'));
    symlinkSync('cfg/.env', join(dir, 'settings.txt'));
    const w = await walkRepository([dir], { git: false });
    assert.deepEqual(paths(w), ['docs/guide.md', 'src/a.ts', 'src/nested/b.ts']);
    const ex = Object.fromEntries(w.excluded.map((e) => [e.path, `${e.reason}`]));
    assert.deepEqual(ex, {
      '.ssh/': 'secret-name',
      'a-link.ts': 'symlink-duplicate',
      'broken.ts': 'broken-symlink',
      'build/': 'default-excluded',
      'cfg/.env': 'secret-name',
      'cfg/src-again/': 'symlink-duplicate',
      'keys/': 'secret-name',
      'o-link.ts': 'symlink-outside-root',
      'elsewhere/': 'symlink-outside-root',
      'self/': 'symlink-loop',
      'settings.txt': 'secret-name',
      'src/nested/up/': 'symlink-loop',
    });
  } finally {
    remove(dir);
    remove(outside);
  }
});

test('a 50 MB file is left out unread; FIFOs and unreadable entries are reported, not fatal', async () => {
  const dir = tempDir('big');
  try {
    writeTree(dir, { 'small.ts': 'x\n', 'dir/ok.ts': 'y\n' });
    const fd = openSync(join(dir, 'huge.sql'), 'w');
    ftruncateSync(fd, 50 * 1024 * 1024); // sparse: no 50 MB written to disk
    closeSync(fd);
    const fifo = spawnSync('mkfifo', [join(dir, 'pipe')]).status === 0;
    mkdirSync(join(dir, 'locked'));
    writeTree(dir, { 'locked/x.ts': 'x\n', 'nope.ts': 'n\n' });
    chmodSync(join(dir, 'locked'), 0o000);
    chmodSync(join(dir, 'nope.ts'), 0o000);
    const root = process.getuid?.() === 0; // root reads everything: the permission part cannot show here
    const w = await walkRepository([dir], { git: false });
    chmodSync(join(dir, 'locked'), 0o755);
    const ex = Object.fromEntries(w.excluded.map((e) => [e.path, e]));
    assert.equal(ex['huge.sql'].reason, 'too-large');
    assert.equal(ex['huge.sql'].size, 50 * 1024 * 1024);
    assert.ok(w.stats.bytesRead < 1024, `read ${w.stats.bytesRead} bytes`);
    if (fifo) assert.equal(ex['pipe'].reason, 'not-regular');
    if (!root) {
      assert.equal(ex['locked/'].reason, 'unreadable');
      assert.equal(ex['nope.ts'].reason, 'unreadable');
    }
    assert.ok(paths(w).includes('small.ts') && paths(w).includes('dir/ok.ts'));
    const lower = await walkRepository([dir], { git: false, maxFileBytes: 1 });
    assert.equal(lower.excluded.find((e) => e.path === 'small.ts')?.reason, 'too-large');
    const few = await walkRepository([dir], { git: false, maxFiles: 1 });
    assert.deepEqual(paths(few), ['dir/ok.ts']); // walk order: sorted names, depth first
    assert.ok(few.excluded.some((e) => e.reason === 'too-many-files'));
  } finally {
    remove(dir);
  }
});

test('multi-root: names prefix the paths, equal basenames are told apart', async () => {
  const a = tempDir('mr');
  const b = tempDir('mr');
  try {
    writeTree(a, { 'app/x.ts': 'x\n', 'app/.gitignore': 'skip.ts\n', 'app/skip.ts': 's\n' });
    writeTree(b, { 'app/y.ts': 'y\n' });
    const w = await walkRepository([join(a, 'app'), join(b, 'app')], { git: false });
    const [na, nb] = w.roots.map((r) => r.name);
    assert.notEqual(na, nb);
    assert.ok(na.endsWith('/app') && nb.endsWith('/app'));
    assert.deepEqual(paths(w), [`${na}/.gitignore`, `${na}/x.ts`, `${nb}/y.ts`].sort());
    assert.deepEqual(w.excluded.map((e) => e.path), [`${na}/skip.ts`]);
    await assert.rejects(walkRepository([join(a, 'nope')]), /cannot index .*nope: no such folder/);
    await assert.rejects(walkRepository([join(a, 'app', 'x.ts')]), /not a folder/);
  } finally {
    remove(a);
    remove(b);
  }
});
