// A separate engine process on the CPU backend for test/cpu/paging.test.ts (not a test itself): loads
// the model on a cache folder, prefills one prompt (optionally in the given pieces), prints the logits
// and the prefill report as one JSON line, and closes (pages reach the disk before it exits).
import { Engine } from '../../engine/engine.js';

const args = JSON.parse(process.argv[2]) as { model: string; cacheDir: string; prompt: number[]; precision?: 'int8' | 'f32' };
const engine = await Engine.load({ model: args.model, backend: 'cpu', threads: 1, kv: { cacheDir: args.cacheDir } });
const seq = engine.createSequence(args.prompt.length + 8);
const logits = await engine.prefill(seq, args.prompt);
await engine.flushCache();
await engine.close();
console.log(JSON.stringify({ logits: Buffer.from(logits.buffer, logits.byteOffset, logits.byteLength).toString('base64'), report: seq.lastPrefill }));
