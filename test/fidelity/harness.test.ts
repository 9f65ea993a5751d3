// The CI slice of the fidelity harness: 4K tokens, three needle depths, dense attention on the CPU
// backend, passkey and kv (both SCBench modes), and the heatmap written as SVG and PNG.
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, rmSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { tmpdir } from 'node:os';
import { GGUFFile } from '../../engine/gguf/reader.js';
import { Tokenizer } from '../../engine/text/tokenizer.js';
import { planInductionModel, writeInductionModel } from '../../engine/model/induction.js';
import { EngineMethod } from '../../engine/fidelity/methods.js';
import { runFidelity } from '../../engine/fidelity/harness.js';
import { writeHeatmap } from '../../engine/fidelity/chart.js';

const dir = join(tmpdir(), `repokv-fidelity-harness-${process.pid}`);
mkdirSync(dir, { recursive: true });
after(() => rmSync(dir, { recursive: true, force: true }));
const model = join(dir, 'induction.gguf');
writeInductionModel(model, planInductionModel({ seed: 1, contextLength: 8192 }));
const file = GGUFFile.open(model, { metadataOnly: true });
const tok = Tokenizer.fromGGUF(file);
file.close();

test('dense on the CPU backend: 100% at 4K, depths 0/50/100%, passkey and kv in both modes; heatmap', async () => {
  const dense = await EngineMethod.create({ model, backend: 'cpu', maxTokens: 4096 + 1024, threads: 2 });
  let result: Awaited<ReturnType<typeof runFidelity>>;
  try {
    result = await runFidelity(tok, { tasks: ['passkey', 'kv'], lengths: [4096], depths: [0, 0.5, 1], modes: ['multi-request', 'multi-turn'], kvQuestions: 6, seed: 2 }, [dense]);
  } finally {
    await dense.close();
  }
  const { records, cells } = result;
  assert.equal(records.length, 3 + 2);
  for (const r of records) assert.equal(r.accuracy, 1, `${r.task} ${r.mode} depth ${r.depth}: ${r.correct}/${r.total}`);
  // kv cells: every question binned to one of the three depths
  assert.deepEqual([...new Set(cells.filter((c) => c.task === 'kv').map((c) => c.depth))].sort((a, b) => a - b), [0, 50, 100]);
  const mr = records.find((r) => r.task === 'kv' && r.mode === 'multi-request')!;
  if (mr.prefixShared) {
    // one context prefill + 6 question prefills, far below 6 cold runs
    assert.ok(mr.totalComputedTokens < mr.contextComputedTokens + 6 * 128, `computed ${mr.totalComputedTokens}`);
    assert.ok(mr.coldComputedTokens > 5 * mr.contextComputedTokens);
  }
  const svg = join(dir, 'heat.svg');
  const png = join(dir, 'heat.png');
  await writeHeatmap(svg, cells);
  await writeHeatmap(png, cells);
  assert.match(readFileSync(svg, 'utf8'), /^<svg/);
  assert.deepEqual([...readFileSync(png).subarray(1, 4)], [...Buffer.from('PNG')]);
});
