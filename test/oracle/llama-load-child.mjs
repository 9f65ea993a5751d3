// Loads GGUF files with llama.cpp (node-llama-cpp, prebuilt CPU binaries) and evaluates a few tokens of
// each, in its own process (node-llama-cpp forks a probe at start-up that does not survive the test
// runner's flags). Input: argv[2] = JSON { models: string[], tokens: number[] }.
// Output: one JSON line { results: [{ model, ok, error?, trainContext, nProbs, probSum, entropy, maxProb, top, next }] }.
import { getLlama, LlamaLogLevel } from 'node-llama-cpp';

const req = JSON.parse(process.argv[2]);
const llama = await getLlama({ gpu: false, build: 'never', logLevel: LlamaLogLevel.error });
const results = [];
for (const path of req.models) {
  let model;
  let context;
  try {
    model = await llama.loadModel({ modelPath: path, useMmap: true });
    context = await model.createContext({ contextSize: 256, batchSize: 64, threads: 1, sequences: 1 });
    const seq = context.getSequence();
    const tokens = req.tokens;
    const input = tokens.slice(0, -1);
    input.push([tokens[tokens.length - 1], { generateNext: { probabilities: true, options: { temperature: 1, topK: 0, topP: 1, minP: 0 } } }]);
    const res = await seq.controlledEvaluate(input);
    const probs = res[tokens.length - 1]?.next?.probabilities;
    let entropy = 0;
    let maxProb = 0;
    let best = -1;
    let total = 0;
    for (const [tok, p] of probs ?? []) {
      total += p;
      if (p > 0) entropy -= p * Math.log(p);
      if (p > maxProb) {
        maxProb = p;
        best = tok;
      }
    }
    // Two greedy steps more: decoding after the prompt works too.
    const r1 = await seq.controlledEvaluate([[best, { generateNext: { token: true, options: { temperature: 0 } } }]]);
    const next = r1[0]?.next?.token;
    results.push({
      model: path,
      ok: true,
      trainContext: model.trainContextSize,
      nProbs: probs?.size ?? 0,
      probSum: total,
      entropy,
      maxProb,
      top: best,
      next: next ?? null,
    });
  } catch (e) {
    results.push({ model: path, ok: false, error: String(e?.message ?? e) });
  } finally {
    await context?.dispose();
    await model?.dispose();
  }
}
console.log(JSON.stringify({ results }));
await llama.dispose();
