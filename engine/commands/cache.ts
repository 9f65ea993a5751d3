// repokv cache stats|gc|purge [--dir D] [--json]
//   stats                      the KV cache per model fingerprint: pages, tokens, bytes on disk
//   gc [--max-gb N] [--verify] drop unreachable (and, with --verify, damaged) pages, then least
//                              recently used ones beyond the size; give the space back
//   purge [--model F | --id X] delete the whole cache, or one model's part of it
// The cache lives in <platform cache dir>/kv (e.g. ~/.cache/repokv/kv); --dir points elsewhere (the
// extension keeps it in its global storage folder).
import { join } from 'node:path';
import { UserError } from '../errors.js';
import { cacheStats, gcCache, purgeCache } from '../kv/maintenance.js';
import { cacheDir } from '../paths.js';
import { flagNumber, flagString, parseArgs } from './args.js';

export function defaultKVCacheDir(): string {
  return join(cacheDir(), 'kv');
}

const mib = (n: number) => `${(n / 2 ** 20).toFixed(1)} MiB`;

export async function run(args: string[]): Promise<number> {
  const [what, ...rest] = args;
  const p = parseArgs(rest, ['json', 'verify']);
  const root = flagString(p, 'dir') ?? defaultKVCacheDir();
  const json = p.flags.has('json');
  switch (what) {
    case 'stats': {
      const stores = cacheStats(root);
      if (json) {
        console.log(JSON.stringify({ dir: root, stores, fileBytes: stores.reduce((s, x) => s + x.fileBytes, 0) }));
        return 0;
      }
      if (stores.length === 0) {
        console.log(`${root}: no KV cache yet`);
        return 0;
      }
      console.log(`${root}: ${stores.length} model cache${stores.length > 1 ? 's' : ''}, ${mib(stores.reduce((s, x) => s + x.fileBytes, 0))}`);
      for (const s of stores) {
        if (s.problem) {
          console.log(`  ${s.id}  unreadable (${s.problem}); \`repokv cache gc\` removes it`);
          continue;
        }
        const per = s.bytesPerToken ? `${s.bytesPerToken.toFixed(0)} B/token on disk` : '';
        const ideal = s.kvBytesPerToken ? ` (KV itself ${s.kvBytesPerToken} B/token)` : '';
        const err = s.codec === 'int8' ? `, int8 relative error ${(s.meanRelError * 100).toFixed(2)}%` : '';
        console.log(`  ${s.id}  ${s.model ?? '?'} (${s.arch ?? '?'})`);
        console.log(`      ${s.pages} pages = ${s.tokens} tokens, ${mib(s.fileBytes)}, ${s.codec}${err}; ${per}${ideal}; last used ${s.lastUsed ?? 'never'}`);
      }
      return 0;
    }
    case 'gc': {
      const maxBytes = p.flags.has('max-bytes') ? flagNumber(p, 'max-bytes', 0) : p.flags.has('max-gb') ? flagNumber(p, 'max-gb', 0) * 2 ** 30 : undefined;
      const res = gcCache(root, { maxBytes, verify: p.flags.has('verify') });
      if (json) console.log(JSON.stringify({ dir: root, stores: res }));
      else if (res.length === 0) console.log(`${root}: no KV cache yet`);
      else
        for (const r of res) {
          if (r.deleted) console.log(`  ${r.id}: removed (${r.deleted})`);
          else console.log(`  ${r.id}: removed ${r.removedPages} pages (${r.badPages} damaged, ${r.orphanPages} unreachable), ${mib(r.fileBytesBefore)} → ${mib(r.fileBytesAfter)}`);
        }
      return 0;
    }
    case 'purge': {
      const model = flagString(p, 'model');
      const id = flagString(p, 'id');
      const removed = purgeCache(root, { model, ids: id ? [id] : undefined });
      if (json) console.log(JSON.stringify({ dir: root, removed }));
      else console.log(removed.length ? `removed ${removed.length} model cache${removed.length > 1 ? 's' : ''} from ${root}` : `nothing to remove in ${root}`);
      return 0;
    }
    default:
      throw new UserError(`unknown cache command "${what ?? ''}" (use: repokv cache stats|gc|purge [--dir D] [--json])`);
  }
}
