// llama.cpp (node-llama-cpp, CPU build) side of `repokv bench fidelity`, in its own process. Reads one
// JSON request on stdin (prompts of 100K+ tokens do not fit in argv):
//   { model, threads, batchSize, flashAttention, jobs: [{ mode, context, questions: [{ tokens, answer }] }] }
// Per job, one context: the shared context is evaluated once; each question is evaluated after it,
// answered greedily (answer.length tokens), then either erased again (multi-request: the next
// question reuses the context's KV) or kept with the golden answer appended (multi-turn).
// Prints one JSON line: { jobs: [{ contextMs, contextTokens, questions: [{ generated, margin, ms, computedTokens }] }], version }.
import { getLlama, LlamaLogLevel } from 'node-llama-cpp';
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';

const req = JSON.parse(readFileSync(0, 'utf8'));
const llama = await getLlama({ gpu: false, build: 'never', logLevel: LlamaLogLevel.error });
const model = await llama.loadModel({ modelPath: req.model, useMmap: true });
const greedy = { temperature: 1, topK: 0, topP: 1, minP: 0 };

/** Top-1 token and its log-probability lead over the runner-up (= the logit margin). */
function best(probs) {
  let t1 = -1, p1 = -1, p2 = 0;
  for (const [tok, p] of probs) {
    if (p > p1 || (p === p1 && tok < t1)) {
      p2 = p1 > p2 ? p1 : p2;
      t1 = tok;
      p1 = p;
    } else if (p > p2) p2 = p;
  }
  return { token: t1, margin: p2 > 0 ? Math.log(p1) - Math.log(p2) : null };
}

const jobs = [];
for (const job of req.jobs) {
  let total = job.context.length;
  if (job.mode === 'multi-turn') for (const q of job.questions) total += q.tokens.length + q.answer.length;
  else total += Math.max(...job.questions.map((q) => q.tokens.length + q.answer.length));
  const context = await model.createContext({
    contextSize: total + 16,
    batchSize: req.batchSize ?? 512,
    threads: req.threads,
    sequences: 1,
    flashAttention: req.flashAttention ?? false,
  });
  const seq = context.getSequence();
  const a = performance.now();
  await seq.evaluateWithoutGeneratingNewTokens(job.context);
  const contextMs = performance.now() - a;
  const out = [];
  for (const q of job.questions) {
    const t0 = performance.now();
    const before = seq.nextTokenIndex;
    const input = q.tokens.slice(0, -1);
    input.push([q.tokens[q.tokens.length - 1], { generateNext: { probabilities: true, options: greedy } }]);
    const res = await seq.controlledEvaluate(input);
    let { token, margin } = best(res[res.length - 1].next.probabilities);
    const generated = [token];
    let minMargin = margin;
    for (let i = 1; i < q.answer.length; i++) {
      const r = await seq.controlledEvaluate([[token, { generateNext: { probabilities: true, options: greedy } }]]);
      ({ token, margin } = best(r[0].next.probabilities));
      generated.push(token);
      if (margin !== null && (minMargin === null || margin < minMargin)) minMargin = margin;
    }
    let computedTokens = seq.nextTokenIndex - before;
    if (job.mode === 'multi-turn') {
      // Keep the golden answer in the history: drop the generated tokens and evaluate the answer.
      await seq.eraseContextTokenRanges([{ start: before + q.tokens.length, end: seq.nextTokenIndex }]);
      await seq.evaluateWithoutGeneratingNewTokens(q.answer);
      computedTokens += q.answer.length;
    } else {
      await seq.eraseContextTokenRanges([{ start: before, end: seq.nextTokenIndex }]);
    }
    out.push({ generated, margin: minMargin, ms: performance.now() - t0, computedTokens });
  }
  jobs.push({ contextMs, contextTokens: job.context.length, questions: out });
  await context.dispose();
}
let version = 'unknown';
try {
  const require = createRequire(import.meta.url);
  version = JSON.parse(readFileSync(require.resolve('node-llama-cpp/package.json'), 'utf8')).version;
} catch {
  // keep unknown
}
console.log(JSON.stringify({ jobs, version }));
await model.dispose();
await llama.dispose();
