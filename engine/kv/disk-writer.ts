// The disk store's writer, run in a worker thread so that encoding, checksumming and SQLite writes
// never hold up the engine's thread (decode steps keep going while pages persist). It owns the only
// writing connection; the engine thread reads through its own connection (WAL lets both proceed).
//
// Messages in: put (a serialized page; its ArrayBuffer is transferred), touch (pages were used), drop
// (a page failed its checksum), gc (enforce the size cap now), flush (reply when all earlier
// messages are committed), close (flush, then close the database and end). Messages out: flushed, warn (once: the disk is full / writing failed).
// Work that arrives together is committed in one transaction.
import { parentPort, workerData } from 'node:worker_threads';
import { checksum, isDiskFull, openStore, type StoreMeta } from './disk-schema.js';
import { CODEC_ID, encodePage, type PageShape, type StorageCodec } from './codec.js';

export interface WriterConfig {
  path: string;
  meta: StoreMeta;
  codec: StorageCodec;
  shape: PageShape;
  capBytes: number;
  /** Test hook and safety net: SQLite's max_page_count, so a write past it fails as a full disk. */
  hardLimitBytes?: number;
}

export type WriterMessage =
  | { t: 'put'; hash: Uint8Array; parent: Uint8Array; index: number; data: Uint8Array }
  | { t: 'touch'; hashes: Uint8Array[] }
  | { t: 'drop'; hash: Uint8Array }
  | { t: 'gc'; capBytes?: number }
  | { t: 'flush'; id: number }
  | { t: 'close'; id: number };

export type WriterReply = { t: 'flushed'; id: number; written: number; bytes: number } | { t: 'warn'; kind: 'full' | 'error'; message: string };

const cfg = workerData as WriterConfig;
const port = parentPort!;
const db = openStore(cfg.path, cfg.meta, { create: true });
const pageSizeDb = db.pragma('page_size', { simple: true }) as number;
if (cfg.hardLimitBytes) db.pragma(`max_page_count = ${Math.max(8, Math.floor(cfg.hardLimitBytes / pageSizeDb))}`);

const st = {
  exists: db.prepare('SELECT 1 FROM pages WHERE hash = ?').pluck(),
  blob: db.prepare('INSERT INTO blobs(data) VALUES (?)'),
  page: db.prepare(
    'INSERT INTO pages(hash, parent, page_index, codec, nbytes, checksum, rel_error, last_used, blob_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)',
  ),
  touch: db.prepare('UPDATE pages SET last_used = ? WHERE hash = ?'),
  find: db.prepare('SELECT blob_id FROM pages WHERE hash = ?').pluck(),
  delPage: db.prepare('DELETE FROM pages WHERE hash = ?'),
  delBlob: db.prepare('DELETE FROM blobs WHERE id = ?'),
  total: db.prepare('SELECT COALESCE(SUM(nbytes), 0) FROM pages').pluck(),
  lru: db.prepare('SELECT hash, nbytes, blob_id FROM pages ORDER BY last_used ASC, page_index DESC'),
};

let total = st.total.get() as number;
let written = 0;
let disabled = false;
let queue: WriterMessage[] = [];
let scheduled = false;

port.on('message', (m: WriterMessage) => {
  queue.push(m);
  if (!scheduled) {
    scheduled = true;
    setImmediate(drain);
  }
});

function warn(kind: 'full' | 'error', message: string): void {
  port.postMessage({ t: 'warn', kind, message } satisfies WriterReply);
}

function drain(): void {
  scheduled = false;
  const batch = queue;
  queue = [];
  const now = Date.now();
  const puts = batch.filter((m): m is Extract<WriterMessage, { t: 'put' }> => m.t === 'put');
  // Maintenance first (drops free room; touches keep hot pages from the collector), then new pages.
  try {
    db.transaction(() => {
      for (const m of batch) {
        if (m.t === 'drop') deletePage(Buffer.from(m.hash));
        else if (m.t === 'touch') for (const h of m.hashes) st.touch.run(now, Buffer.from(h));
      }
    })();
  } catch (e) {
    if (!isDiskFull(e)) warn('error', `updating the KV cache failed: ${(e as Error).message}`);
  }
  if (!disabled && puts.length) {
    try {
      writePages(puts, now);
    } catch (e) {
      // One transaction per page, so that what still fits is stored (in chain order), then stop.
      let failure: unknown = e;
      if (isDiskFull(e) && puts.length > 1) {
        failure = null;
        for (const m of puts) {
          try {
            writePages([m], now);
          } catch (e2) {
            failure = e2;
            break;
          }
        }
      }
      if (failure) {
        disabled = true;
        warn(isDiskFull(failure) ? 'full' : 'error', (failure as Error).message);
      }
    }
  }
  const gcs = batch.filter((m): m is Extract<WriterMessage, { t: 'gc' }> => m.t === 'gc');
  const cap = Math.min(cfg.capBytes, ...gcs.map((g) => g.capBytes ?? Infinity));
  if (total > cap || gcs.length) {
    try {
      collect(cap);
    } catch (e) {
      warn('error', `garbage collection of the KV cache failed: ${(e as Error).message}`);
    }
  }
  for (const m of batch) if (m.t === 'flush' || m.t === 'close') port.postMessage({ t: 'flushed', id: m.id, written, bytes: total } satisfies WriterReply);
  if (batch.some((m) => m.t === 'close')) {
    // Closing this connection (the engine thread closes its reader after) lets the last one fold the
    // WAL back into the database file.
    db.close();
    port.close();
  }
}

/** Stores pages not stored yet, in one transaction (all or none). */
function writePages(puts: Extract<WriterMessage, { t: 'put' }>[], now: number): void {
  let added = 0;
  let n = 0;
  // IMMEDIATE: take the write lock before checking what exists, so that another process writing
  // the same store (a second engine) cannot slip the same page in between.
  db.transaction(() => {
    for (const m of puts) {
      const hash = Buffer.from(m.hash);
      if (st.exists.get(hash)) continue;
      const { data, relError } = encodePage(cfg.codec, m.data, cfg.shape);
      const codec = CODEC_ID[cfg.codec];
      const blobId = st.blob.run(data).lastInsertRowid;
      st.page.run(hash, Buffer.from(m.parent), m.index, codec, data.byteLength, checksum(hash, codec, data), relError, now, blobId);
      added += data.byteLength;
      n++;
    }
  }).immediate();
  total += added;
  written += n;
}

function deletePage(hash: Buffer): void {
  const blobId = st.find.get(hash) as number | bigint | undefined;
  if (blobId === undefined) return;
  const n = (db.prepare('SELECT nbytes FROM pages WHERE hash = ?').pluck().get(hash) as number) ?? 0;
  st.delPage.run(hash);
  st.delBlob.run(blobId);
  total -= n;
}

/** Least recently used pages (a chain's tail first) until the payload is within 90% of the cap. */
function collect(cap: number): void {
  const target = Math.floor(cap * 0.9);
  if (total > cap) {
    db.transaction(() => {
      const victims: { hash: Buffer; nbytes: number; blob_id: number }[] = [];
      let t = total;
      for (const r of st.lru.iterate() as Iterable<{ hash: Buffer; nbytes: number; blob_id: number }>) {
        if (t <= target) break;
        victims.push(r);
        t -= r.nbytes;
      }
      for (const v of victims) {
        st.delPage.run(v.hash);
        st.delBlob.run(v.blob_id);
        total -= v.nbytes;
      }
    })();
  }
  db.pragma('incremental_vacuum');
}
