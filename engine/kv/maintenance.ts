// Whole-cache maintenance behind `repokv cache stats|gc|purge`: works on a cache root (one folder per
// model fingerprint) without loading any model. Safe to run beside a live engine (SQLite locking).
import { existsSync, readFileSync, rmSync } from 'node:fs';
import { basename, join, resolve } from 'node:path';
import { CODEC_NAME, type PageShape } from './codec.js';
import { checksum, DB_FILE, MODEL_FILE, readMeta, sqlite, STORE_FORMAT, type DB } from './disk-schema.js';
import { listStores, storeFileBytes } from './disk-store.js';

export interface StoreSummary {
  id: string;
  dir: string;
  model: string | null;
  arch: string | null;
  format: number;
  codec: string;
  pages: number;
  tokens: number;
  payloadBytes: number;
  fileBytes: number;
  /** File bytes per cached token, and the theoretical KV bytes per token of the store's codec. */
  bytesPerToken: number | null;
  kvBytesPerToken: number | null;
  meanRelError: number;
  lastUsed: string | null;
  problem?: string;
}

function modelInfo(dir: string): Record<string, unknown> {
  try {
    return JSON.parse(readFileSync(join(dir, MODEL_FILE), 'utf8')) as Record<string, unknown>;
  } catch {
    return {};
  }
}

export function summarize(dir: string): StoreSummary {
  const info = modelInfo(dir);
  const base: StoreSummary = {
    id: basename(dir),
    dir,
    model: (info.model as string) ?? null,
    arch: (info.arch as string) ?? null,
    format: -1,
    codec: '?',
    pages: 0,
    tokens: 0,
    payloadBytes: 0,
    fileBytes: storeFileBytes(dir),
    bytesPerToken: null,
    kvBytesPerToken: null,
    meanRelError: 0,
    lastUsed: null,
  };
  let db: DB | null = null;
  try {
    db = new (sqlite())(join(dir, DB_FILE), { readonly: true, fileMustExist: true, timeout: 10_000 });
    const meta = readMeta(db);
    const r = db.prepare('SELECT COUNT(*) AS n, COALESCE(SUM(nbytes), 0) AS b, COALESCE(AVG(rel_error), 0) AS e, MAX(last_used) AS t FROM pages').get() as { n: number; b: number; e: number; t: number | null };
    const tokens = r.n * meta.pageSize;
    const shape = info as Partial<PageShape>;
    const kv = shape.nLayers && shape.nKVHeads && shape.headDim ? 2 * shape.nLayers * shape.nKVHeads * shape.headDim * (meta.codec === 'int8' ? 1 : 2) : null;
    return {
      ...base,
      format: meta.format,
      codec: meta.codec,
      pages: r.n,
      tokens,
      payloadBytes: r.b,
      bytesPerToken: tokens ? base.fileBytes / tokens : null,
      kvBytesPerToken: kv,
      meanRelError: r.e,
      lastUsed: r.t ? new Date(r.t).toISOString() : null,
    };
  } catch (e) {
    return { ...base, problem: (e as Error).message };
  } finally {
    db?.close();
  }
}

export function cacheStats(root: string): StoreSummary[] {
  return listStores(root).map(summarize);
}

export interface GcResult {
  id: string;
  removedPages: number;
  removedBytes: number;
  badPages: number;
  orphanPages: number;
  fileBytesBefore: number;
  fileBytesAfter: number;
  deleted?: string;
}

/**
 * Per store: drops pages that fail their checksum (with `verify`), pages no lookup can reach (their
 * parent is gone), then least recently used pages (a chain's tail first) until the payload is within
 * `maxBytes`; returns the freed space to the file system. A store of another format or one SQLite
 * cannot open is deleted whole.
 */
export function gcCache(root: string, opts: { maxBytes?: number; verify?: boolean } = {}): GcResult[] {
  const out: GcResult[] = [];
  for (const dir of listStores(root)) {
    const before = storeFileBytes(dir);
    const res: GcResult = { id: basename(dir), removedPages: 0, removedBytes: 0, badPages: 0, orphanPages: 0, fileBytesBefore: before, fileBytesAfter: before };
    let db: DB | null = null;
    try {
      db = new (sqlite())(join(dir, DB_FILE), { fileMustExist: true, timeout: 10_000 });
      const meta = readMeta(db);
      if (meta.format !== STORE_FORMAT) throw new Error(`format ${meta.format}, not ${STORE_FORMAT}`);
      const d = db;
      const del = (hash: Buffer, blobId: number, nbytes: number) => {
        d.prepare('DELETE FROM pages WHERE hash = ?').run(hash);
        d.prepare('DELETE FROM blobs WHERE id = ?').run(blobId);
        res.removedPages++;
        res.removedBytes += nbytes;
      };
      if (opts.verify) {
        const rows = d.prepare('SELECT p.hash, p.codec, p.nbytes, p.checksum, p.blob_id, b.data FROM pages p LEFT JOIN blobs b ON b.id = p.blob_id').all() as {
          hash: Buffer;
          codec: number;
          nbytes: number;
          checksum: Buffer;
          blob_id: number;
          data: Buffer | null;
        }[];
        d.transaction(() => {
          for (const r of rows) {
            if (!r.data || !CODEC_NAME[r.codec] || r.data.byteLength !== r.nbytes || !checksum(r.hash, r.codec, r.data).equals(r.checksum)) {
              del(r.hash, r.blob_id, r.nbytes);
              res.badPages++;
            }
          }
        })();
      }
      // Unreachable pages: not descended from the root through pages that exist.
      const rootHash = Buffer.from(meta.fingerprint, 'hex');
      const orphans = d
        .prepare(
          `WITH RECURSIVE reach(h) AS (SELECT hash FROM pages WHERE parent = ? UNION SELECT p.hash FROM pages p JOIN reach r ON p.parent = r.h)
           SELECT hash, blob_id, nbytes FROM pages WHERE hash NOT IN (SELECT h FROM reach)`,
        )
        .all(rootHash) as { hash: Buffer; blob_id: number; nbytes: number }[];
      d.transaction(() => {
        for (const o of orphans) del(o.hash, o.blob_id, o.nbytes);
      })();
      res.orphanPages = orphans.length;
      if (opts.maxBytes !== undefined) {
        let total = d.prepare('SELECT COALESCE(SUM(nbytes), 0) FROM pages').pluck().get() as number;
        const lru = d.prepare('SELECT hash, blob_id, nbytes FROM pages ORDER BY last_used ASC, page_index DESC').all() as { hash: Buffer; blob_id: number; nbytes: number }[];
        d.transaction(() => {
          for (const r of lru) {
            if (total <= opts.maxBytes!) break;
            del(r.hash, r.blob_id, r.nbytes);
            total -= r.nbytes;
          }
        })();
      }
      d.pragma('incremental_vacuum');
      d.pragma('wal_checkpoint(TRUNCATE)');
      db.close();
      db = null;
      res.fileBytesAfter = storeFileBytes(dir);
    } catch (e) {
      db?.close();
      rmSync(dir, { recursive: true, force: true });
      res.deleted = (e as Error).message;
      res.fileBytesAfter = 0;
    }
    out.push(res);
  }
  return out;
}

/** Deletes the whole cache root, or only the stores of one model file (by its path) or ids. */
export function purgeCache(root: string, opts: { model?: string; ids?: string[] } = {}): string[] {
  const removed: string[] = [];
  for (const dir of listStores(root)) {
    const info = modelInfo(dir);
    const match =
      (!opts.model && !opts.ids) ||
      (opts.model !== undefined && typeof info.model === 'string' && resolve(info.model) === resolve(opts.model)) ||
      (opts.ids ?? []).some((id) => basename(dir).startsWith(id));
    if (match) {
      rmSync(dir, { recursive: true, force: true });
      removed.push(dir);
    }
  }
  if (!opts.model && !opts.ids && existsSync(root)) rmSync(root, { recursive: true, force: true });
  return removed;
}
