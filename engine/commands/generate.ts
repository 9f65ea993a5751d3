// repokv generate [--model F] --prompt P [--chat] [--system S] [--max-tokens N] [--temperature T]
//   [--top-k K] [--top-p P] [--seed N] [--stop S] [--backend auto|cpu|webgpu|reference] [--json]
//   [--cache-dir D | --no-cache] [--kv-memory MiB] [--cache-max-gb N] [--kv-storage f16|int8]
//   [--kv-paging auto|host|off]
// Streams the completion to stdout; with --json prints one JSON object with tokens and timings.
// The prompt's KV is looked up in, and added to, the persistent KV cache (engine/kv/README.md); how
// many prompt tokens came from it and how many were computed goes to stderr (and into --json).

import { readFileSync } from 'node:fs';
import { Engine, type BackendChoice } from '../engine.js';
import { UserError } from '../errors.js';
import { flagNumber, flagString, parseArgs } from './args.js';
import { BUILTIN_MODEL_NOTICE, resolveModel } from '../model/default-model.js';
import { defaultKVCacheDir } from './cache.js';

export async function run(args: string[]): Promise<number> {
  const p = parseArgs(args, ['chat', 'json', 'no-bos', 'no-cache']);
  const resolved = resolveModel(flagString(p, 'model'));
  const model = resolved.path;
  if (resolved.builtin) console.error(BUILTIN_MODEL_NOTICE);
  let prompt = flagString(p, 'prompt') ?? p.positional.join(' ');
  const promptFile = flagString(p, 'prompt-file');
  if (promptFile) prompt = readFileSync(promptFile, 'utf8');
  if (!prompt) throw new UserError('generate needs --prompt <text> (or --prompt-file <path>)');
  const json = p.flags.has('json');
  const t0 = performance.now();
  const engine = await Engine.load({
    model,
    backend: (flagString(p, 'backend') ?? 'auto') as BackendChoice,
    contextSize: flagNumber(p, 'ctx', 4096),
    threads: p.flags.has('threads') ? flagNumber(p, 'threads', 1) : undefined,
    kv: {
      paging: (flagString(p, 'kv-paging') ?? 'auto') as 'auto' | 'host' | 'off',
      cacheDir: p.flags.has('no-cache') ? undefined : (flagString(p, 'cache-dir') ?? defaultKVCacheDir()),
      memoryBytes: p.flags.has('kv-memory') ? flagNumber(p, 'kv-memory', 0) * 2 ** 20 : undefined,
      maxDiskBytes: p.flags.has('cache-max-gb') ? flagNumber(p, 'cache-max-gb', 0) * 2 ** 30 : undefined,
      storage: (flagString(p, 'kv-storage') ?? 'f16') as 'f16' | 'int8',
    },
  });
  try {
    const tLoad = performance.now();
    let ids: number[];
    if (p.flags.has('chat')) {
      const system = flagString(p, 'system');
      ids = engine.chatTokens([...(system ? [{ role: 'system', content: system }] : []), { role: 'user', content: prompt }]);
    } else {
      ids = Array.from(engine.tokenizer.encode(prompt, { addSpecial: !p.flags.has('no-bos'), parseSpecial: false }));
    }
    const seq = engine.createSequence(Math.min(engine.contextSize, Math.max(ids.length + flagNumber(p, 'max-tokens', 128) + 1, 64)));
    const ac = new AbortController();
    process.once('SIGINT', () => ac.abort());
    const logits = await engine.prefill(seq, ids, { signal: ac.signal });
    const tPrefill = performance.now();
    const rep = seq.lastPrefill!;
    if (!json) {
      if (engine.kvCache) {
        const tiers = [['device', rep.fromDevice], ['host', rep.fromHost], ['disk', rep.fromDisk]].filter(([, n]) => n).map(([k, n]) => `${k} ${n}`);
        console.error(`repokv: prompt ${ids.length} tokens: ${rep.cachedTokens} from cache${tiers.length ? ` (${tiers.join(', ')})` : ''}, ${rep.computedTokens} computed`);
      } else console.error(`repokv: prompt ${ids.length} tokens, all computed (the ${engine.backend.info.name} backend has no KV page pool yet, so no prefix cache)`);
    }
    const gen = engine.generate(seq, logits, {
      maxTokens: flagNumber(p, 'max-tokens', 128),
      temperature: flagNumber(p, 'temperature', 0),
      topK: flagNumber(p, 'top-k', 40),
      topP: flagNumber(p, 'top-p', 0.95),
      seed: flagNumber(p, 'seed', 0),
      stop: p.flags.has('stop') ? [flagString(p, 'stop')!] : [],
      signal: ac.signal,
    });
    let r = await gen.next();
    let tFirst = 0;
    while (!r.done) {
      if (!tFirst) tFirst = performance.now();
      if (!json) process.stdout.write(r.value.text);
      r = await gen.next();
    }
    const tEnd = performance.now();
    const res = r.value;
    if (json) {
      console.log(
        JSON.stringify({
          backend: engine.backend.info.name,
          device: engine.backend.info.device,
          promptTokens: ids.length,
          cachedTokens: rep.cachedTokens,
          computedTokens: rep.computedTokens,
          cache: engine.kvCache ? { fromDevice: rep.fromDevice, fromHost: rep.fromHost, fromDisk: rep.fromDisk } : null,
          generatedTokens: res.tokens.length,
          tokens: res.tokens,
          text: res.text,
          stopReason: res.stopReason,
          loadMs: tLoad - t0,
          prefillTokensPerSecond: ids.length / ((tPrefill - tLoad) / 1000),
          decodeTokensPerSecond: res.tokens.length > 1 ? (res.tokens.length - 1) / ((tEnd - tFirst) / 1000) : null,
        }),
      );
    } else process.stdout.write('\n');
    return 0;
  } finally {
    await engine.close();
  }
}
