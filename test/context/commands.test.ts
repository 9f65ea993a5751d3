// `repokv index` (--explain, --json, --print, errors) and `repokv bench context` on small trees.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { walkRepository } from '../../engine/context/walk.js';
import { buildDocument, documentText } from '../../engine/context/document.js';
import { randomString, remove, tempDir, writeTree } from './helpers.js';

const root = new URL('../..', import.meta.url).pathname;
function repokv(...args: string[]) {
  const r = spawnSync(process.execPath, [join(root, 'bin', 'repokv.js'), ...args], { encoding: 'utf8', timeout: 60_000 });
  return { code: r.status, out: r.stdout, err: r.stderr };
}

test('repokv index --explain / --json / --print', async () => {
  const dir = tempDir('cli');
  try {
    writeTree(dir, {
      'src/a.ts': 'export const a = 1;\n',
      'src/keys.ts': `export const k = '${'AK' + 'IA' + randomString(40, 16, 'ABCDEFGHIJKLMNOPQRSTUVWXYZ234567')}';\n`,
      'logo.png': new Uint8Array([0x89, 0x50, 0x4e, 0x47, 0, 0, 0, 0]),
      '.env': 'X=1\n',
      'node_modules/x/index.js': 'x\n',
    });
    const e = repokv('index', dir, '--explain', '--no-git');
    assert.equal(e.code, 0, e.err);
    assert.match(e.out, /: 1 files, /);
    assert.match(e.out, /left out: 4 files and folders \(/);
    assert.match(e.out, /secret-content\s+src\/keys\.ts  aws-access-key at line 1/);
    assert.match(e.out, /secret-name\s+\.env  /);
    assert.match(e.out, /binary\s+logo\.png  NUL byte/);
    assert.match(e.out, /default-excluded\s+node_modules\/  built-in: node_modules\//);
    assert.match(e.out, /reasons:\n(.|\n)*secret-content\s+contains a credential/);
    assert.ok(!e.out.includes('AKIA'), 'the secret itself is never printed');

    const j = repokv('index', dir, '--json', '--no-git', '--budget', '100000');
    assert.equal(j.code, 0, j.err);
    const o = JSON.parse(j.out);
    assert.deepEqual(o.files.map((f: { path: string }) => f.path), ['src/a.ts']);
    assert.deepEqual(o.excluded.map((x: { reason: string }) => x.reason).sort(), ['binary', 'default-excluded', 'secret-content', 'secret-name']);
    assert.equal(o.document.segments.length, 3);
    assert.equal(o.document.budgetTokens, 100000);

    const p = repokv('index', dir, '--print', '--no-git');
    assert.equal(p.code, 0, p.err);
    assert.equal(p.out, documentText(buildDocument(await walkRepository([dir], { git: false }))));

    const bad = repokv('index', join(dir, 'missing'));
    assert.equal(bad.code, 1);
    assert.match(bad.err, /^repokv: cannot index .*missing: no such folder\n$/);
    const noModel = repokv('index', dir, '--model', join(dir, 'missing.gguf'));
    assert.equal(noModel.code, 1);
    assert.match(noModel.err, /^repokv: .*missing\.gguf: cannot open model file \(no such file\)\n$/);
    const none = repokv('index');
    assert.equal(none.code, 1);
    assert.match(none.err, /give the folder to index/);
  } finally {
    remove(dir);
  }
});

test('repokv bench context --json on a small tree', () => {
  const dir = tempDir('bench');
  try {
    writeTree(dir, Object.fromEntries(Array.from({ length: 20 }, (_, i) => [`src/f${i}.ts`, `export function f${i}(x: number) {\n  return x + ${i};\n}\n`.repeat(10)])));
    const r = repokv('bench', 'context', '--tree', dir, '--threads', '1', '--json');
    assert.equal(r.code, 0, r.err);
    const rows = r.out.trim().split('\n').map((l) => JSON.parse(l));
    assert.deepEqual(rows.map((x) => x.what), ['walk', 'tokenize', 'tokenize', 'tokenize', 'document', 'edit-middle', 'edit-same-file-again', 'unchanged-tree']);
    const edit = rows.find((x) => x.what === 'edit-middle');
    assert.equal(edit.recomputed_tokens, edit.edited_file_tokens + edit.moved_tail_tokens + edit.footer_tokens);
    assert.ok(edit.recomputed_tokens < edit.total_tokens);
    const again = rows.find((x) => x.what === 'edit-same-file-again');
    assert.equal(again.moved_tail_tokens, 0);
    assert.equal(rows.at(-1).recomputed_tokens, 0);
    for (const x of rows.filter((x) => x.what === 'tokenize')) assert.ok(x.tokens_per_s > 0);
  } finally {
    remove(dir);
  }
});
