// A separate engine process for the KV cache tests (not a test file itself).
//   prefill:      load the engine on a cache folder, prefill one prompt, print logits + report, close.
//   persist-loop: prefill prompt after prompt (each a new sequence) so pages keep being persisted,
//                 printing {"started": i} before each; runs until it is killed.
import { Engine, type KVOptions } from '../../engine/engine.js';
import { randomTokens } from '../helpers/models.js';

const args = JSON.parse(process.argv[2]) as {
  mode: 'prefill' | 'persist-loop';
  model: string;
  cacheDir: string;
  prompt?: number[];
  kv?: KVOptions;
  seed?: number;
  n?: number;
};
const warnings: string[] = [];
const engine = await Engine.load({
  model: args.model,
  backend: 'reference',
  prefillChunk: 256,
  kv: { ...args.kv, cacheDir: args.cacheDir, onWarning: (m) => warnings.push(m) },
});
if (args.mode === 'prefill') {
  const seq = engine.createSequence(args.prompt!.length + 8);
  const logits = await engine.prefill(seq, args.prompt!);
  await engine.flushCache();
  const stats = engine.cacheStats();
  await engine.close();
  console.log(JSON.stringify({ logits: Buffer.from(logits.buffer, logits.byteOffset, logits.byteLength).toString('base64'), report: seq.lastPrefill, warnings, stats }));
} else {
  for (let i = 0; ; i++) {
    console.log(JSON.stringify({ started: i }));
    const seq = engine.createSequence(args.n! + 8);
    await engine.prefill(seq, randomTokens(args.n!, 300, 4000, args.seed! + i));
    engine.freeSequence(seq);
  }
}
