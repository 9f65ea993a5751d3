// `repokv bench cache`: what the persistent prefix cache buys, per context length, on one backend.
// Prints one JSON object per context length (--json) or a line of text.
//
// Protocol, per context length N (a fresh cache folder each time; prompts are seeded random tokens,
// the "repository" of N tokens followed by turns of --turn tokens):
//   cold         prefill N tokens into an empty cache (all computed); then wait for the background
//                writer to persist every full page (persistMs, not part of the prefill)
//   follow-up    the same session appends a turn: time to first token (prefill of the turn + first
//                greedy token) against prefilling only those new tokens in an empty sequence —
//                the goal is within 1.2×; attention over the N cached tokens is the gap
//   shared       a second session with the same N-token prefix and another turn (pages shared)
//   re-ask       the same N tokens in a new session: all full pages from the pool, one token computed
//   disk         a new engine on the same cache folder (empty pool and host tier): prefill the same N
//                tokens — every full page read from disk, checksummed and written into the pool, one
//                token computed — against the cold recompute (ratio)
//   bytes        the store's files after a clean close, per cached token, against the KV itself:
//                2 × layers × KV heads × head dim × 2 bytes (goal: ≤ 1% overhead)
// The CPU backend has no page pool of its own yet: the bench then pages its KV in host memory
// (kv.paging 'host', engine/kv/README.md).
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Engine, type BackendChoice } from '../engine.js';
import { flagNumber, flagString, parseArgs } from '../commands/args.js';
import { argmax } from '../model/sampler.js';
import { resolveModel, BUILTIN_MODEL_NOTICE } from '../model/default-model.js';
import { storeFileBytes } from '../kv/disk-store.js';
import type { StorageCodec } from '../kv/codec.js';
import type { KVCacheStats } from '../kv/manager.js';

const USAGE = `usage: repokv bench cache [options]
  --model FILE       GGUF model (default: the built-in synthetic model)
  --backend B        cpu | webgpu | reference (default cpu)
  --threads N        CPU threads (default: the machine's cores)
  --contexts N,N..   context lengths in tokens (default 4096,16384)
  --turn N           tokens of a follow-up turn (default 32)
  --storage S        f16 | int8 page storage on disk (default f16)
  --repeat R         repeat the short measurements R times and keep the best (default 3; shared machines)
  --dir D            where the temporary cache folders go (default: the OS temp dir)
  --json             one JSON object per context length`;

function tokens(n: number, seed: number, vocab: number): number[] {
  let s = seed >>> 0;
  const out: number[] = [];
  const lo = Math.min(300, vocab - 1);
  for (let i = 0; i < n; i++) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    out.push(lo + (s % (vocab - lo)));
  }
  return out;
}

async function timed<T>(f: () => Promise<T>): Promise<[T, number]> {
  const t = performance.now();
  const r = await f();
  return [r, performance.now() - t];
}

export async function run(args: string[]): Promise<number> {
  const p = parseArgs(args, ['json', 'help']);
  if (p.flags.has('help')) {
    console.log(USAGE);
    return 0;
  }
  const resolved = resolveModel(flagString(p, 'model'));
  if (resolved.builtin) console.error(BUILTIN_MODEL_NOTICE);
  const backend = (flagString(p, 'backend') ?? 'cpu') as BackendChoice;
  const contexts = (flagString(p, 'contexts') ?? '4096,16384').split(',').map(Number);
  const turn = flagNumber(p, 'turn', 32);
  const storage = (flagString(p, 'storage') ?? 'f16') as StorageCodec;
  const threads = p.flags.has('threads') ? flagNumber(p, 'threads', 1) : undefined;
  const json = p.flags.has('json');
  const repeat = Math.max(1, flagNumber(p, 'repeat', 3));
  const best = async (f: (r: number) => Promise<number>) => {
    let m = Infinity;
    for (let r = 0; r < repeat; r++) m = Math.min(m, await f(r));
    return m;
  };
  const base = flagString(p, 'dir') ?? tmpdir();

  for (const N of contexts) {
    const dir = mkdtempSync(join(base, 'repokv-bench-cache-'));
    const ctx = N + 4 * turn + 8;
    const load = async () => {
      const probe = await Engine.load({ model: resolved.path, backend, threads, contextSize: ctx, kv: { paging: 'off' } });
      const hasPool = !!probe.backend.createKVPool;
      const c = probe.config;
      probe.dispose();
      // Room for one context plus the tails and copies of a few sessions, at 4 bytes a value.
      const memoryBytes = Math.ceil(1.5 * ctx * 2 * c.nLayers * c.nKVHeads * c.headDim * 4) + 64 * 2 ** 20;
      const e = await Engine.load({
        model: resolved.path,
        backend,
        threads,
        contextSize: ctx,
        kv: { paging: hasPool ? 'auto' : 'host', cacheDir: dir, memoryBytes, storage, onWarning: (m) => console.error(m) },
      });
      // Warm-up (graph compilation, first allocations) on tokens no measurement uses; no full page.
      const w = e.createSequence(ctx);
      await e.prefill(w, tokens(Math.min(turn, 63), 99, e.config.nVocab));
      await e.decodeStep([w], [300]);
      e.freeSequence(w);
      return e;
    };
    try {
      const a = await load();
      const vocab = a.config.nVocab;
      const repo = tokens(N, 1, vocab);
      const s1 = a.createSequence(ctx);
      const [coldLogits, coldMs] = await timed(() => a.prefill(s1, repo));
      const [, persistMs] = await timed(() => a.flushCache());
      const q1 = tokens(turn, 2, vocab);
      const followMs = await best(async () => {
        s1.truncate(N);
        return (await timed(async () => argmax(await a.prefill(s1, q1))))[1];
      });
      const newOnlyMs = await best(async (r) => {
        const fresh = a.createSequence(ctx);
        const [, ms] = await timed(async () => argmax(await a.prefill(fresh, tokens(turn, 3 + 10 * r, vocab))));
        a.freeSequence(fresh);
        return ms;
      });
      // The same prompt again in a new session: every full page from the pool, the last token computed.
      let devLogits: Float32Array = new Float32Array(0);
      const deviceHitMs = await best(async () => {
        const sDev = a.createSequence(ctx);
        const [l, ms] = await timed(() => a.prefill(sDev, repo));
        devLogits = l;
        a.freeSequence(sDev);
        return ms;
      });
      const s2 = a.createSequence(ctx);
      const [, sharedMs] = await timed(async () => argmax(await a.prefill(s2, [...repo, ...tokens(turn, 4, vocab)])));
      const shared = s2.lastPrefill!;
      const poolAfterShared = a.cacheStats()!.pool;
      await a.close();
      const fileBytes = storeFileBytes(join(dir, (await import('node:fs')).readdirSync(dir)[0]));

      let diskLogits: Float32Array = new Float32Array(0);
      let restored = s1.lastPrefill!;
      let st = null as KVCacheStats | null;
      const restoreMs = await best(async () => {
        const b = await load();
        const s3 = b.createSequence(ctx);
        const [l, ms] = await timed(() => b.prefill(s3, repo));
        diskLogits = l;
        restored = s3.lastPrefill!;
        st = b.cacheStats()!;
        await b.close();
        return ms;
      });

      const c = a.config;
      const kvBytesPerToken = 2 * c.nLayers * c.nKVHeads * c.headDim * (storage === 'int8' ? 1 : 2);
      const diskTokens = (st?.disk?.pages ?? 0) * 64;
      let maxDiff = 0;
      for (let i = 0; i < coldLogits.length; i++) maxDiff = Math.max(maxDiff, Math.abs(coldLogits[i] - diskLogits[i]));
      let same = diskLogits.length === devLogits.length;
      for (let i = 0; same && i < devLogits.length; i++) same = Object.is(diskLogits[i], devLogits[i]);
      const r = {
        bench: 'cache',
        model: resolved.path,
        backend: a.backend.info.name,
        device: a.backend.info.device,
        paging: a.backend.createKVPool ? 'backend pool' : 'host pool',
        contextTokens: N,
        turnTokens: turn,
        storage,
        coldPrefillMs: round(coldMs),
        coldTokensPerSecond: round(N / (coldMs / 1000)),
        persistMs: round(persistMs),
        followupTtftMs: round(followMs),
        newTokensOnlyMs: round(newOnlyMs),
        followupVsNewOnly: round(followMs / newOnlyMs, 2),
        sharedPrefixTtftMs: round(sharedMs),
        sharedPrefixCachedTokens: shared.cachedTokens,
        poolPagesUsedBy2Sessions: poolAfterShared.used,
        deviceHitTtftMs: round(deviceHitMs),
        restoreFromDiskMs: round(restoreMs),
        restoredTokens: restored.fromDisk,
        recomputeMs: round(coldMs),
        restoreSpeedup: round(coldMs / restoreMs, 1),
        // Disk-restored pages give exactly the logits of pool-resident pages (same last-token compute);
        // against the cold prefill they differ only by the backend's batch-size numerics.
        restoredEqualsPoolHit: same,
        restoredVsColdMaxAbsDiff: maxDiff,
        diskFileBytes: fileBytes,
        diskTokens,
        bytesPerToken: diskTokens ? round(fileBytes / diskTokens, 1) : null,
        kvBytesPerToken,
        diskOverheadPct: diskTokens ? round((100 * (fileBytes / diskTokens - kvBytesPerToken)) / kvBytesPerToken, 2) : null,
        int8MeanRelError: storage === 'int8' ? st?.disk?.meanRelError ?? null : undefined,
      };
      if (json) console.log(JSON.stringify(r));
      else
        console.log(
          `${N} tokens (${r.backend}, ${r.paging}): cold ${r.coldPrefillMs} ms; follow-up TTFT ${r.followupTtftMs} ms vs ${r.newTokensOnlyMs} ms for the new tokens alone (${r.followupVsNewOnly}×); ` +
            `restore from disk ${r.restoreFromDiskMs} ms (${r.restoreSpeedup}× faster than recompute); ${r.bytesPerToken} B/token on disk vs ${kvBytesPerToken} (${r.diskOverheadPct}% overhead)`,
        );
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  }
  return 0;
}

function round(x: number, digits = 1): number {
  const f = 10 ** digits;
  return Math.round(x * f) / f;
}
