// Sparse prefill through the fidelity harness on the constructed induction model (reference backend):
// vertical-slash with small budgets keeps the needle (layer 1's vertical column, found online) and the
// previous-token diagonals (layer 0, inside the forced local window), so every answer stays correct and
// recall is reported per layer/head; A-shape with the same local window drops the needle column.
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { tmpdir } from 'node:os';
import { GGUFFile } from '../../engine/gguf/reader.js';
import { Tokenizer } from '../../engine/text/tokenizer.js';
import { planInductionModel, writeInductionModel } from '../../engine/model/induction.js';
import { passkeyTask } from '../../engine/fidelity/tasks.js';
import { EngineMethod } from '../../engine/fidelity/methods.js';
import { SparsePrefillPlugin } from '../../engine/attention/sparse/plugin.js';
import type { SparsePattern } from '../../engine/attention/sparse/patterns.js';

const dir = join(tmpdir(), `repokv-sparse-plugin-${process.pid}`);
mkdirSync(dir, { recursive: true });
after(() => rmSync(dir, { recursive: true, force: true }));
const model = join(dir, 'induction.gguf');
writeInductionModel(model, planInductionModel({ seed: 1 }));
const file = GGUFFile.open(model, { metadataOnly: true });
const tok = Tokenizer.fromGGUF(file);
file.close();

async function runWith(p: SparsePattern, depths: number[]) {
  // minRows 2: every prefill chunk is sparse, the question's own chunk too (estimated from its own last
  // queries, as chunked prefill does); decode steps (1 row) stay dense.
  const plugin = new SparsePrefillPlugin({ patterns: (_l, nHeads) => Array.from({ length: nHeads }, () => p), minRows: 2, name: p.kind });
  const m = await EngineMethod.create({ model, backend: 'reference', maxTokens: 800, attention: plugin });
  try {
    const rs = [];
    for (const depth of depths) rs.push(await m.run(passkeyTask(tok, { length: 600, depth, seed: 4 }), 'multi-request'));
    return { rs, density: plugin.density() };
  } finally {
    await m.close();
  }
}

test('induction model, vertical-slash (40, 100): needles found at 10/60% depth, recall per layer/head', async (t) => {
  const { rs, density } = await runWith({ kind: 'vertical-slash', vertical: 40, slash: 100 }, [0.1, 0.6]);
  for (const r of rs) {
    assert.ok(r.recall, 'recall reported');
    t.diagnostic(`depth ${r.questions[0].depth.toFixed(2)}: correct ${r.questions.every((q) => q.correct)}, margin ${r.questions[0].margin?.toFixed(1)}, recall per layer/head ${JSON.stringify(r.recall!.perLayerHead.map((l) => l.map((x) => +x.toFixed(4))))}`);
    assert.ok(r.questions.every((q) => q.correct), `depth ${r.questions[0].depth}: ${r.questions.map((q) => q.generated)}`);
    // Layer 0's previous-token heads live on diagonals 1 and 2: inside the forced local window.
    for (const x of r.recall!.perLayerHead[0]) assert.ok(x > 0.999, `layer 0 recall ${x}`);
  }
  t.diagnostic(`density of the sparse rows ${density.toFixed(3)}`);
});

test('induction model, A-shape (30, 100): the needle column is dropped and the answer with it', async (t) => {
  const { rs } = await runWith({ kind: 'a-shape', sink: 30, local: 100 }, [0.5]);
  const r = rs[0];
  t.diagnostic(`correct ${r.questions.every((q) => q.correct)}, recall ${JSON.stringify(r.recall!.perLayerHead.map((l) => l.map((x) => +x.toFixed(4))))}`);
  assert.ok(!r.questions.every((q) => q.correct));
});
