// Proof that llama.cpp loads what make-model writes: every architecture x weight type (tiny size), the
// Q4_K_M mix, tied and untied embeddings, both tokenizer families, each loaded by node-llama-cpp and
// evaluated on a few tokens. Also checks that the weights give plausible next-token distributions:
// neither uniform (activations vanished) nor one-hot / NaN (activations exploded).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { presetShape, syntheticModel, writeSyntheticModel, type SyntheticArch, type SyntheticTokenizer, type WeightTypeName } from '../../engine/model/synthetic.js';

interface LoadResult {
  model: string;
  ok: boolean;
  error?: string;
  nProbs?: number;
  probSum?: number;
  entropy?: number;
  maxProb?: number;
  top?: number;
  next?: number | null;
}

const child = fileURLToPath(new URL('./llama-load-child.mjs', import.meta.url));

function loadWithLlamaCpp(models: string[], tokens: number[]): Promise<LoadResult[]> {
  return new Promise((resolve, reject) => {
    execFile(process.execPath, [child, JSON.stringify({ models, tokens })], { maxBuffer: 16 << 20, timeout: 300_000 }, (err, stdout, stderr) => {
      if (err) return reject(new Error(`node-llama-cpp could not run: ${err.message}\n${stderr}`));
      try {
        resolve((JSON.parse(stdout.trim().split('\n').pop() ?? '') as { results: LoadResult[] }).results);
      } catch {
        reject(new Error(`node-llama-cpp printed no JSON:\n${stdout}\n${stderr}`));
      }
    });
  });
}

test('llama.cpp loads and runs every synthetic arch x type', { timeout: 600_000 }, async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'repokv-llama-load-'));
  try {
    const cases: { arch: SyntheticArch; type: WeightTypeName; q4km?: boolean; tokenizer?: SyntheticTokenizer; tied?: boolean; vocab: number }[] = [];
    const types: WeightTypeName[] = ['f32', 'f16', 'bf16', 'q8_0', 'q4_0', 'q4_k', 'q6_k'];
    for (const arch of ['llama', 'qwen2', 'qwen3'] as const) {
      for (const type of types) cases.push({ arch, type, vocab: 0 });
      cases.push({ arch, type: 'q4_k', q4km: true, vocab: 0 });
    }
    cases.push({ arch: 'llama', type: 'f16', tokenizer: 'spm', vocab: 0 }); // SentencePiece vocabulary
    cases.push({ arch: 'llama', type: 'q8_0', tied: true, vocab: 0 }); // tied llama (as Llama 3.2 1B)
    const paths: string[] = [];
    const started = performance.now();
    for (const c of cases) {
      const shape = { ...presetShape(c.arch, 'tiny'), ...(c.tied !== undefined ? { tied: c.tied } : {}) };
      const plan = syntheticModel({ arch: c.arch, shape, type: c.type, q4km: c.q4km, seed: 1, ...(c.tokenizer ? { tokenizer: c.tokenizer } : {}) });
      c.vocab = plan.nVocab;
      const p = join(dir, `${c.arch}-${c.q4km ? 'q4_k_m' : c.type}${c.tokenizer ? `-${c.tokenizer}` : ''}${c.tied ? '-tied' : ''}.gguf`);
      writeSyntheticModel(p, plan);
      paths.push(p);
    }
    t.diagnostic(`wrote ${paths.length} models in ${((performance.now() - started) / 1000).toFixed(1)} s`);
    const results = await loadWithLlamaCpp(paths, [1, 50, 300, 1000, 7, 42]);
    assert.equal(results.length, cases.length);
    const failures: string[] = [];
    results.forEach((r, i) => {
      const c = cases[i];
      const name = r.model.split('/').pop();
      if (!r.ok) return failures.push(`${name}: llama.cpp failed: ${r.error}`);
      t.diagnostic(`${name}: entropy ${r.entropy!.toFixed(2)} nats (uniform ${Math.log(c.vocab).toFixed(2)}), top p ${r.maxProb!.toFixed(3)}`);
      if (r.nProbs !== c.vocab) failures.push(`${name}: ${r.nProbs} probabilities, vocabulary is ${c.vocab}`);
      if (!(Math.abs(r.probSum! - 1) < 1e-3)) failures.push(`${name}: probabilities sum to ${r.probSum}`);
      // Plausible scale: clearly below uniform entropy, clearly above a one-hot distribution.
      if (!(r.entropy! > 0.5 && r.entropy! < Math.log(c.vocab) - 0.5)) failures.push(`${name}: entropy ${r.entropy} is implausible`);
      if (!(r.maxProb! < 0.95)) failures.push(`${name}: top probability ${r.maxProb}`);
      if (typeof r.next !== 'number') failures.push(`${name}: no greedy token after the prompt`);
    });
    assert.deepEqual(failures, []);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
