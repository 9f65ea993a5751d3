// llama.cpp (node-llama-cpp, CPU build) side of `repokv bench engine`, in its own process so that its
// memory and threads are its own. Input (argv[2], JSON): { model, prompts: number[][], nGen, threads,
// batchSize }. For each prompt: a fresh context, prefill (logits of the last token), then nGen greedy
// decode steps. Prints one JSON line: { results: [{ n, prefillMs, decodeMs, nGen }], loadMs, peakRssMb, version }.
import { getLlama, LlamaLogLevel } from 'node-llama-cpp';
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';

// A long prompt does not fit the argument list: `@FILE` reads the request from a file.
const arg = process.argv[2];
const req = JSON.parse(arg.startsWith('@') ? readFileSync(arg.slice(1), 'utf8') : arg);
const t0 = performance.now();
const llama = await getLlama({ gpu: false, build: 'never', logLevel: LlamaLogLevel.error });
const model = await llama.loadModel({ modelPath: req.model, useMmap: true });
const loadMs = performance.now() - t0;
const results = [];
for (const prompt of req.prompts) {
  const context = await model.createContext({
    contextSize: prompt.length + req.nGen + 16,
    batchSize: req.batchSize ?? 512,
    threads: req.threads,
    sequences: 1,
  });
  const seq = context.getSequence();
  const input = prompt.slice(0, -1);
  input.push([prompt[prompt.length - 1], { generateNext: { token: true, options: { temperature: 0 } } }]);
  const a = performance.now();
  const res = await seq.controlledEvaluate(input);
  const b = performance.now();
  let next = res[prompt.length - 1]?.next?.token;
  const c = performance.now();
  let steps = 0;
  for (let i = 0; i < req.nGen && next !== undefined; i++) {
    const r = await seq.controlledEvaluate([[next, { generateNext: { token: true, options: { temperature: 0 } } }]]);
    next = r[0]?.next?.token;
    steps++;
  }
  const d = performance.now();
  results.push({ n: prompt.length, prefillMs: b - a, decodeMs: d - c, nGen: steps });
  await context.dispose();
}
let version = 'unknown';
try {
  const require = createRequire(import.meta.url);
  version = JSON.parse(readFileSync(require.resolve('node-llama-cpp/package.json'), 'utf8')).version;
} catch {
  // keep unknown
}
console.log(JSON.stringify({ results, loadMs, peakRssMb: process.resourceUsage().maxRSS / 1024, version }));
await model.dispose();
await llama.dispose();
