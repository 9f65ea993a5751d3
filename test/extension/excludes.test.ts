// files.exclude → the engine's ignore patterns: VS Code's defaults and brace groups keep the walk
// away from what the Explorer hides.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { expandBraces, filesExcludeToIgnore } from '../../extension/excludes.js';
import { walkRepository } from '../../engine/context/walk.js';

test('brace groups expand, false entries and when-clauses are not applied', () => {
  assert.deepEqual(expandBraces('**/*.{js,map}'), ['**/*.js', '**/*.map']);
  assert.deepEqual(expandBraces('a/{b,c/{d,e}}'), ['a/b', 'a/c/d', 'a/c/e']);
  assert.deepEqual(filesExcludeToIgnore({ '**/.git': true, '**/out': false, '**/*.js': { when: '$(basename).ts' }, '**/*.{tmp,bak}': true }), ['**/.git', '**/*.tmp', '**/*.bak']);
});

test('the walk leaves out what files.exclude hides', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'rkv-fx-'));
  try {
    mkdirSync(join(dir, 'generated'));
    writeFileSync(join(dir, 'keep.ts'), 'export const k = 1;\n');
    writeFileSync(join(dir, 'generated', 'x.ts'), 'export const x = 1;\n');
    writeFileSync(join(dir, 'notes.bak'), 'old\n');
    const w = await walkRepository([dir], { git: false, exclude: filesExcludeToIgnore({ '**/generated': true, '**/*.{bak,tmp}': true }) });
    assert.deepEqual(w.files.map((f) => f.path).sort(), ['keep.ts']);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
