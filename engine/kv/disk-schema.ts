// The on-disk page store's schema, shared by the reader (main thread) and the writer (a worker).
//
//   <root>/<fingerprint id>/kv.sqlite    SQLite in WAL mode (better-sqlite3)
//   <root>/<fingerprint id>/model.json   what the fingerprint was computed from (for `cache stats`)
//
// Tables:
//   meta(key, value)       format version, fingerprint, page shape, codec
//   pages(hash PRIMARY KEY, parent, page_index, codec, nbytes, checksum, rel_error, last_used, blob_id)
//   blobs(id, data)        page payloads, apart from the manifest so that updating last_used never
//                          rewrites a payload (SQLite rewrites a whole row on UPDATE)
// Every page row and its blob are written in one transaction (atomic: a crash leaves both or
// neither). The checksum is SHA-256(hash ‖ codec ‖ payload) truncated to 16 bytes: it binds the payload
// to its page name, so a torn, flipped or misattributed payload is detected on read and the page
// recomputed. `synchronous=NORMAL` in WAL mode keeps the database consistent after a crash (the last
// commits may be lost, which a cache can afford).
import { createHash } from 'node:crypto';
import { createRequire } from 'node:module';
import type Database from 'better-sqlite3';

let loaded: typeof Database | null = null;

/**
 * better-sqlite3, loaded on first use: a missing or mismatched native module then costs the disk
 * tier (one warning, DiskStore.open), never the engine.
 */
export function sqlite(): typeof Database {
  loaded ??= createRequire(import.meta.url)('better-sqlite3') as typeof Database;
  return loaded;
}

/** Bump when the schema or the payload encoding changes; an older store is discarded, not migrated. */
export const STORE_FORMAT = 1;
export const DB_FILE = 'kv.sqlite';
export const MODEL_FILE = 'model.json';

export type DB = Database.Database;

export function checksum(hash: Uint8Array, codec: number, data: Uint8Array): Buffer {
  return createHash('sha256').update(hash).update(Uint8Array.of(codec)).update(data).digest().subarray(0, 16);
}

/**
 * SQLite page size that stores payloads of `payload` bytes with the least waste: a blob spills into
 * overflow pages of (U−4) bytes, and what does not fill the last one stays in the leaf when it fits
 * (sqlite's btree cell rules: max local X = U−35, min local M = (U−12)·32/255−23).
 */
export function bestPageSize(payload: number): number {
  let best = 4096;
  let bestCost = Infinity;
  for (const U of [4096, 8192, 16384, 32768, 65536]) {
    const X = U - 35;
    const M = Math.floor(((U - 12) * 32) / 255) - 23;
    let local = payload;
    let overflow = 0;
    if (payload > X) {
      const K = M + ((payload - M) % (U - 4));
      local = K <= X ? K : M;
      overflow = Math.ceil((payload - local) / (U - 4));
    }
    const cellsPerLeaf = Math.max(1, Math.floor((U - 8) / (local + 16)));
    const cost = overflow * U + U / cellsPerLeaf;
    if (cost < bestCost) {
      bestCost = cost;
      best = U;
    }
  }
  return best;
}

export interface StoreMeta {
  format: number;
  fingerprint: string;
  codec: string;
  pageSize: number;
  pageBytes: number;
}

/** Opens (creating if needed) a store; throws if it belongs to another format or fingerprint. */
export function openStore(path: string, meta: StoreMeta, opts: { create: boolean; readonly?: boolean }): DB {
  const db = new (sqlite())(path, { fileMustExist: !opts.create, readonly: opts.readonly ?? false, timeout: 10_000 });
  try {
    if (!opts.readonly) {
      const fresh = (db.pragma('page_count', { simple: true }) as number) === 0;
      if (fresh) {
        db.pragma(`page_size = ${bestPageSize(meta.pageBytes + 64)}`);
        db.pragma('auto_vacuum = INCREMENTAL');
      }
      db.pragma('journal_mode = WAL');
      db.pragma('synchronous = NORMAL');
      db.pragma('journal_size_limit = 67108864');
      if (fresh || !hasTable(db, 'meta')) createSchema(db, meta);
    }
    const got = readMeta(db);
    if (got.format !== meta.format) throw new StoreMismatch(`cache format ${got.format}, this engine writes format ${meta.format}`);
    if (got.fingerprint !== meta.fingerprint) throw new StoreMismatch('the cache belongs to another model fingerprint');
    return db;
  } catch (e) {
    db.close();
    throw e;
  }
}

export class StoreMismatch extends Error {}

function hasTable(db: DB, name: string): boolean {
  return db.prepare(`SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?`).get(name) !== undefined;
}

function createSchema(db: DB, meta: StoreMeta): void {
  db.transaction(() => {
    db.exec(`
      CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
      CREATE TABLE IF NOT EXISTS pages(
        hash BLOB PRIMARY KEY,
        parent BLOB NOT NULL,
        page_index INTEGER NOT NULL,
        codec INTEGER NOT NULL,
        nbytes INTEGER NOT NULL,
        checksum BLOB NOT NULL,
        rel_error REAL NOT NULL,
        last_used INTEGER NOT NULL,
        blob_id INTEGER NOT NULL
      ) WITHOUT ROWID;
      CREATE INDEX IF NOT EXISTS pages_parent ON pages(parent);
      CREATE TABLE IF NOT EXISTS blobs(id INTEGER PRIMARY KEY, data BLOB NOT NULL);
    `);
    const put = db.prepare('INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)');
    put.run('format', String(meta.format));
    put.run('fingerprint', meta.fingerprint);
    put.run('codec', meta.codec);
    put.run('page_size', String(meta.pageSize));
    put.run('page_bytes', String(meta.pageBytes));
    put.run('created', new Date().toISOString());
  })();
}

export function readMeta(db: DB): StoreMeta {
  const rows = db.prepare('SELECT key, value FROM meta').all() as { key: string; value: string }[];
  const m = new Map(rows.map((r) => [r.key, r.value]));
  return {
    format: Number(m.get('format') ?? -1),
    fingerprint: m.get('fingerprint') ?? '',
    codec: m.get('codec') ?? '',
    pageSize: Number(m.get('page_size') ?? 0),
    pageBytes: Number(m.get('page_bytes') ?? 0),
  };
}

/** SQLite and OS errors that mean "no room to write": the disk (or the store's hard limit) is full. */
export function isDiskFull(e: unknown): boolean {
  const code = (e as { code?: string })?.code ?? '';
  const msg = (e as Error)?.message ?? '';
  return code === 'SQLITE_FULL' || code === 'ENOSPC' || code === 'EDQUOT' || /ENOSPC|disk is full|database or disk is full/i.test(msg);
}

/** Errors that mean the file is not a usable database (damaged beyond what WAL recovery repairs). */
export function isCorruptStore(e: unknown): boolean {
  const code = (e as { code?: string })?.code ?? '';
  return code === 'SQLITE_CORRUPT' || code === 'SQLITE_NOTADB' || code.startsWith('SQLITE_CORRUPT');
}
