// Sparse prefill end to end on the WebGPU backend: a tiny synthetic llama (4 layers, 4 query heads over
// 2 KV heads, head dim 64) prefilled with Batch.sparse — per layer a mix of vertical-slash, A-shape,
// block-sparse and dense heads — gives the logits of the reference backend (engine/backends/reference,
// tokenMajorSparse → attentionRef keep) with the same patterns, within f32 tolerance (1e-4 of the
// largest logit, the bound of test/webgpu/parity.test.ts): in one chunk, in two chunks (the second
// after a cached prefix), and through a paged f16 KV pool (scattered pages) against the reference's
// host pool. 'dense' patterns give exactly the dense path; full budgets through the sparse kernels
// give it within f32 rounding. SparseStats agree with the reference's.

import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { GGUFFile } from '../../engine/gguf/reader.js';
import type { Backend, KVCache, KVPool } from '../../engine/model/backend.js';
import { loadTransformerConfig } from '../../engine/model/config.js';
import { Transformer } from '../../engine/model/transformer.js';
import { ReferenceBackend } from '../../engine/backends/reference/index.js';
import type { WebGPUBackend } from '../../engine/backends/webgpu/index.js';
import type { SparsePattern } from '../../engine/attention/sparse/patterns.js';
import { randomTokens, testModel } from '../helpers/models.js';
import { compare, ErrorLog, openBackend } from './util.js';
import { TablePagedKV } from '../../engine/kv/table-kv.js';

let gpu: WebGPUBackend;
const log = new ErrorLog();
before(async () => {
  gpu = await openBackend();
});
after(() => {
  log.print('webgpu sparse prefill: whole-model logits vs the reference backend');
  gpu.dispose();
});

const VS = (vertical: number, slash: number): SparsePattern => ({ kind: 'vertical-slash', vertical, slash });
const AS = (sink: number, local: number): SparsePattern => ({ kind: 'a-shape', sink, local });
const BS = (blocks: number): SparsePattern => ({ kind: 'block-sparse', blocks });
const DENSE: SparsePattern = { kind: 'dense' };

/** Layer l's heads: the mix rotated by l, so every kind meets every head position and both KV groups. */
const MIX = [VS(30, 100), AS(4, 64), BS(2), VS(48, 110)];
const mixed = (l: number): SparsePattern[] => MIX.map((_, h) => (h === 3 && l % 2 === 1 ? DENSE : MIX[(h + l) % MIX.length]));


/**
 * Prefills `tokens` in chunks (sizes given) with `sparse` patterns, returning the logits of every row of
 * the last chunk. `paged`: the KV in the backend's pool, pages in descending order.
 */
async function prefill(path: string, backend: Backend, tokens: number[], sparse: ((l: number) => SparsePattern[] | null) | undefined, chunks = [tokens.length], paged = false): Promise<Float32Array> {
  const file = GGUFFile.open(path);
  const cfg = loadTransformerConfig(file);
  const model = new Transformer(cfg, backend);
  model.load(file);
  file.close();
  let kv: KVCache;
  let pool: KVPool | undefined;
  if (paged) {
    const pages = Math.ceil(tokens.length / 64);
    pool = backend.createKVPool!({ nLayers: cfg.nLayers, nKVHeads: cfg.nKVHeads, headDim: cfg.headDim, pageSize: 64, nPages: pages + 3, dtype: 'f16' });
    kv = new TablePagedKV(pool, Array.from({ length: pages }, (_, i) => pages + 2 - i));
  } else {
    kv = model.createKV(tokens.length);
  }
  let pos = 0;
  let out: Float32Array = new Float32Array(0);
  for (const n of chunks) {
    out = await model.forward({
      tokens: Int32Array.from(tokens.slice(pos, pos + n)),
      positions: Int32Array.from({ length: n }, (_, i) => pos + i),
      seqs: [{ kv, row: 0, n, pos }],
      logitRows: Array.from({ length: n }, (_, i) => i),
      sparse,
    });
    pos += n;
  }
  kv.free();
  pool?.dispose();
  return out;
}

const PATH = () => testModel('llama', 'f32');
const PROMPT = randomTokens(300, 300, 4000, 17);

test('one sparse chunk of 300 tokens (VS, A-shape, block-sparse, dense heads): logits = the reference backend; stats agree', async () => {
  const ref = new ReferenceBackend();
  gpu.sparseStats = { calls: 0, keptEntries: 0, causalEntries: 0, estimateMs: 0, attentionMs: 0 };
  const want = await prefill(PATH(), ref, PROMPT, mixed);
  const got = await prefill(PATH(), gpu, PROMPT, mixed);
  log.check('one chunk of 300', got, want, 1e-4);
  const dense = await prefill(PATH(), gpu, PROMPT, undefined);
  const moved = compare(dense, want).maxRel;
  assert.ok(moved > 1e-3, `sparse logits should differ from dense ones (max rel ${moved})`);
  const rs = ref.sparseStats;
  const gs = gpu.sparseStats;
  assert.equal(gs.calls, rs.calls);
  assert.equal(gs.causalEntries, rs.causalEntries);
  assert.equal(gs.keptEntries, rs.keptEntries);
  assert.ok(gs.keptEntries < gs.causalEntries);
});

test('two sparse chunks (130 then 170 tokens after the cached prefix): logits of the second = the reference backend', async () => {
  const want = await prefill(PATH(), new ReferenceBackend(), PROMPT, mixed, [130, 170]);
  const got = await prefill(PATH(), gpu, PROMPT, mixed, [130, 170]);
  log.check('chunk 2 of 130 + 170', got, want, 1e-4);
});

test('paged f16 KV pool (scattered pages) = the reference host pool, sparse in two chunks (100 + 200)', async () => {
  const want = await prefill(PATH(), new ReferenceBackend(), PROMPT, mixed, [100, 200], true);
  const got = await prefill(PATH(), gpu, PROMPT, mixed, [100, 200], true);
  log.check('paged f16, chunk 2 of 100 + 200', got, want, 1e-4);
});

test("'dense' patterns = the dense path exactly; full budgets through the sparse kernels = dense within f32 rounding", async () => {
  const dense = await prefill(PATH(), gpu, PROMPT, undefined);
  const allDense = await prefill(PATH(), gpu, PROMPT, () => [DENSE, DENSE, DENSE, DENSE]);
  assert.ok(
    dense.every((x, i) => x === allDense[i]),
    "'dense' patterns changed the logits",
  );
  const full = await prefill(PATH(), gpu, PROMPT, () => [VS(1e6, 1e6), AS(1e6, 1e6), BS(1e6), DENSE]);
  log.check('full budgets = dense', full, dense, 1e-5);
});
