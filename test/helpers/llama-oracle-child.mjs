// Runs llama.cpp (node-llama-cpp, CPU build) on one model in its own process and prints JSON.
// node-llama-cpp forks a probe process at start-up that does not survive Node's test runner flags,
// so tests call this script through llama-oracle.ts instead of importing node-llama-cpp directly.
// Input (argv[2], JSON): { model, prompt: number[], nGen, threads, contextSize, topLogprobs }
// Output: { generated: number[], lastLogprobs: [id, logprob][], timings }
import { getLlama, LlamaLogLevel } from 'node-llama-cpp';

const req = JSON.parse(process.argv[2]);
const llama = await getLlama({ gpu: false, build: 'never', logLevel: LlamaLogLevel.error });
const model = await llama.loadModel({ modelPath: req.model, useMmap: true });
const context = await model.createContext({
  contextSize: req.contextSize ?? 2048,
  batchSize: req.batchSize ?? 512,
  threads: req.threads ?? 1,
  sequences: 1,
  flashAttention: req.flashAttention ?? false,
  ...(req.kvType ? { experimentalKvCacheKeyType: req.kvType, experimentalKvCacheValueType: req.kvType } : {}),
});
const seq = context.getSequence();
const prompt = req.prompt;
const t0 = performance.now();
// Prefill all but the last prompt token, then ask for the distribution after the last one.
const input = prompt.slice(0, -1);
input.push([prompt[prompt.length - 1], { generateNext: { probabilities: true, options: { temperature: 1, topK: 0, topP: 1, minP: 0 } } }]);
const res = await seq.controlledEvaluate(input);
const t1 = performance.now();
const probs = res[prompt.length - 1]?.next?.probabilities;
const lastLogprobs = [];
if (probs) {
  let i = 0;
  for (const [tok, p] of probs) {
    if (i++ >= (req.topLogprobs ?? 20)) break;
    lastLogprobs.push([tok, Math.log(p)]);
  }
}
// Greedy continuation: evaluate token by token from the state after the prompt.
const generated = [];
let next = probs ? [...probs.entries()].reduce((a, b) => (b[1] > a[1] || (b[1] === a[1] && b[0] < a[0]) ? b : a))[0] : undefined;
const t2 = performance.now();
for (let i = 0; i < (req.nGen ?? 0) && next !== undefined; i++) {
  generated.push(next);
  if (i + 1 === req.nGen) break;
  const r = await seq.controlledEvaluate([[next, { generateNext: { token: true, options: { temperature: 0 } } }]]);
  next = r[0]?.next?.token ?? undefined;
}
const t3 = performance.now();
console.log(JSON.stringify({ generated, lastLogprobs, nProbs: probs?.size ?? 0, timings: { prefillMs: t1 - t0, decodeMs: t3 - t2 } }));
await context.dispose();
await model.dispose();
await llama.dispose();
