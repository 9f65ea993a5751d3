// The watcher: it never watches excluded trees, a burst of hundreds of writes arrives as one batch,
// writes inside excluded trees arrive not at all, and an ignore-file change is flagged.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { RepoWatcher, type ChangeBatch } from '../../engine/context/watch.js';
import { refreshWalk, walkRepository } from '../../engine/context/walk.js';
import { buildDocument, updateDocument } from '../../engine/context/document.js';
import { remove, tempDir, writeTree } from './helpers.js';

async function until(cond: () => boolean, ms: number): Promise<void> {
  const end = Date.now() + ms;
  while (!cond() && Date.now() < end) await sleep(20);
}

test('watcher: bounded, debounced, blind to excluded trees, flags rule changes', async () => {
  const dir = tempDir('watch');
  const tree: Record<string, string> = { '.gitignore': 'gen/\n', 'src/a.ts': 'a\n', 'gen/x.ts': 'x\n' };
  for (let i = 0; i < 50; i++) tree[`node_modules/p${i}/sub/index.js`] = 'x\n';
  writeTree(dir, tree);
  let w = await walkRepository([dir], { git: false });
  let doc = buildDocument(w);
  const batches: ChangeBatch[] = [];
  const watcher = await RepoWatcher.start(w, (b) => void batches.push(b), { debounceMs: 400, maxWaitMs: 4000 });
  try {
    // the root and src/ only: not node_modules' 100 folders, not gen/
    assert.ok(watcher.watchedDirs() <= 4, `watching ${watcher.watchedDirs()} folders`);

    // writes in excluded trees: nothing
    writeFileSync(join(dir, 'node_modules', 'p1', 'index.js'), 'y\n');
    writeFileSync(join(dir, 'gen', 'y.ts'), 'y\n');
    await sleep(700);
    assert.equal(batches.length, 0);

    // a burst of 300 files in new folders: one batch (two at most on a loaded machine)
    for (let d = 0; d < 10; d++) {
      mkdirSync(join(dir, 'src', `m${d}`));
      for (let i = 0; i < 30; i++) writeFileSync(join(dir, 'src', `m${d}`, `f${i}.ts`), `export const v = ${i};\n`);
    }
    await until(() => batches.reduce((s, b) => s + b.paths.filter((p) => p.endsWith('.ts')).length, 0) >= 300, 8000);
    await sleep(500);
    assert.ok(batches.length >= 1 && batches.length <= 2, `${batches.length} batches`);
    const paths = batches.flatMap((b) => b.paths);
    assert.equal(paths.filter((p) => p.endsWith('.ts')).length, 300);
    assert.ok(batches.every((b) => !b.rulesChanged));
    await watcher.idle();
    w = await refreshWalk(w, paths);
    const u = updateDocument(doc, w);
    doc = u.document;
    assert.equal(doc.segments.filter((s) => s.kind === 'file').length, 302);
    assert.equal(u.invalidation.path, 'src/m0/f0.ts'); // appended after the unchanged files

    // an ignore file changes: flagged, and the new rules are watched
    batches.length = 0;
    writeFileSync(join(dir, '.gitignore'), 'gen/\nsrc/m9/\n');
    await until(() => batches.length > 0, 5000);
    assert.equal(batches[0].rulesChanged, true);
    await watcher.idle();
    w = await refreshWalk(w, batches[0].paths);
    assert.equal(w.files.filter((f) => f.path.startsWith('src/m9/')).length, 0);
  } finally {
    await watcher.close();
    remove(dir);
  }
});

test('watcher: refuses to watch more folders than allowed, with a clear message', async () => {
  const dir = tempDir('watch2');
  try {
    writeTree(dir, Object.fromEntries(Array.from({ length: 12 }, (_, i) => [`d${i}/x.ts`, 'x\n'])));
    const w = await walkRepository([dir], { git: false });
    await assert.rejects(RepoWatcher.start(w, () => undefined, { maxDirs: 5 }), /too many folders to watch \(13, the limit is 5\)/);
  } finally {
    remove(dir);
  }
});
