// A tight budget over many files: the footer that names what was left out is capped (summarized per
// folder past FOOTER_MAX_LINES), so the document as a whole stays within the budget.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { walkRepository } from '../../engine/context/walk.js';
import { buildDocument, estimateTokens, FOOTER_MAX_LINES } from '../../engine/context/document.js';
import { remove, tempDir, writeTree } from './helpers.js';

test('600 files into a 1500-token budget: the document fits, the footer summarizes by folder', async () => {
  const dir = tempDir('footer');
  try {
    const tree: Record<string, string> = {};
    for (let i = 0; i < 600; i++) tree[`pkg${i % 7}/module_${i}.ts`] = `export function f${i}(x: number): number {\n  return x * ${i};\n}\n`.repeat(3);
    writeTree(dir, tree);
    const w = await walkRepository([dir], { git: false });
    const d = buildDocument(w, { budgetTokens: 1500, countTokens: estimateTokens });
    assert.ok(d.totalTokens <= 1500, `document has ${d.totalTokens} tokens`);
    const footer = d.segments[d.segments.length - 1].text;
    assert.ok(footer.split('\n').length < 3 * FOOTER_MAX_LINES, 'footer is capped');
    assert.match(footer, /more under pkg\d\//);
    assert.ok(d.omitted.length > 500);
  } finally {
    remove(dir);
  }
});

test('an unchanged tree gives the same document again under the same budget (nothing offered back)', async () => {
  const { updateDocument, manifestOf } = await import('../../engine/context/document.js');
  const dir = tempDir('footer-stable');
  try {
    const tree: Record<string, string> = {};
    for (let i = 0; i < 120; i++) tree[`m${i}.ts`] = `export const v${i} = ${i};\n`.repeat(1 + (i % 17) * 5);
    writeTree(dir, tree);
    const w = await walkRepository([dir], { git: false });
    const first = buildDocument(w, { budgetTokens: 2000, countTokens: estimateTokens });
    assert.ok(first.omitted.length > 0);
    const again = updateDocument(manifestOf(first), w, { budgetTokens: 2000, countTokens: estimateTokens });
    assert.equal(again.invalidation.unchanged, true);
    assert.deepEqual(again.document.segments.map((s) => s.hash), first.segments.map((s) => s.hash));
  } finally {
    remove(dir);
  }
});
