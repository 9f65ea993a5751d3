// The disk tier: a SQLite page store per model fingerprint (disk-schema.ts), read on the engine's
// thread, written by a worker (disk-writer.ts). Reads verify every page's checksum; a bad page is
// dropped (and recomputed by the caller). A full disk, a damaged or incompatible store, or a worker
// that cannot start each end in one warning, after which the engine keeps working from memory.
import { existsSync, mkdirSync, readdirSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Worker } from 'node:worker_threads';
import { decodePage, encodedBytes, CODEC_NAME, type PageShape, type StorageCodec } from './codec.js';
import { checksum, DB_FILE, isCorruptStore, MODEL_FILE, openStore, STORE_FORMAT, StoreMismatch, type DB, type StoreMeta } from './disk-schema.js';
import type { WriterConfig, WriterMessage, WriterReply } from './disk-writer.js';
import type { ModelFingerprint } from './fingerprint.js';
import type { PageHash } from './hash.js';

export interface DiskStoreOptions {
  /** The cache root; this model's pages go to <root>/<fingerprint id>/. */
  root: string;
  fingerprint: ModelFingerprint;
  shape: PageShape;
  codec: StorageCodec;
  /** Size cap of the payload, in bytes: the writer collects least recently used pages beyond it. */
  capBytes: number;
  /** Makes SQLite fail writes past this size, as a full disk would (tests). */
  hardLimitBytes?: number;
  /** Written to model.json (model path, architecture …). */
  describe?: Record<string, unknown>;
  onWarning: (message: string) => void;
}

export interface DiskStats {
  dir: string;
  pages: number;
  payloadBytes: number;
  fileBytes: number;
  corruptPages: number;
  writable: boolean;
  meanRelError: number;
  maxRelError: number;
}

type PageRow = { codec: number; nbytes: number; checksum: Buffer; data: Buffer };

export class DiskStore {
  private worker: Worker | null = null;
  private flushes = new Map<number, () => void>();
  private nextFlush = 1;
  private warned = false;
  private writable = true;
  private touched: Buffer[] = [];
  corruptPages = 0;
  readonly pageBytes: number;
  private readonly st: { get: ReturnType<DB['prepare']>; has: ReturnType<DB['prepare']> };

  private constructor(
    private readonly db: DB,
    readonly dir: string,
    private readonly opts: DiskStoreOptions,
  ) {
    this.pageBytes = 2 * opts.shape.nLayers * opts.shape.pageSize * opts.shape.nKVHeads * opts.shape.headDim * 2;
    this.st = {
      get: db.prepare('SELECT p.codec, p.nbytes, p.checksum, b.data FROM pages p JOIN blobs b ON b.id = p.blob_id WHERE p.hash = ?'),
      has: db.prepare('SELECT 1 FROM pages WHERE hash = ?').pluck(),
    };
  }

  /** Opens this model's store, creating or replacing it as needed; null (after a warning) if impossible. */
  static open(opts: DiskStoreOptions): DiskStore | null {
    const dir = join(opts.root, opts.fingerprint.id);
    const path = join(dir, DB_FILE);
    const meta: StoreMeta = {
      format: STORE_FORMAT,
      fingerprint: opts.fingerprint.hex,
      codec: opts.codec,
      pageSize: opts.shape.pageSize,
      pageBytes: encodedBytes(opts.codec, opts.shape),
    };
    let db: DB;
    try {
      mkdirSync(dir, { recursive: true });
      try {
        db = openStore(path, meta, { create: true });
      } catch (e) {
        if (!(e instanceof StoreMismatch) && !isCorruptStore(e)) throw e;
        // An older format or a damaged file: it is only a cache, start a new one.
        opts.onWarning(`repokv: the KV cache in ${dir} could not be used (${(e as Error).message}); starting a new one`);
        for (const f of [DB_FILE, `${DB_FILE}-wal`, `${DB_FILE}-shm`]) rmSync(join(dir, f), { force: true });
        db = openStore(path, meta, { create: true });
      }
      writeAtomic(join(dir, MODEL_FILE), JSON.stringify({ fingerprint: opts.fingerprint.hex, ...opts.fingerprint.describe, ...opts.describe }, null, 2) + '\n');
    } catch (e) {
      opts.onWarning(`repokv: cannot open the KV cache in ${dir} (${(e as Error).message}); continuing without a disk cache`);
      return null;
    }
    const store = new DiskStore(db, dir, opts);
    store.startWriter(path, meta);
    return store;
  }

  private startWriter(path: string, meta: StoreMeta): void {
    const cfg: WriterConfig = { path, meta, codec: this.opts.codec, shape: this.opts.shape, capBytes: this.opts.capBytes, hardLimitBytes: this.opts.hardLimitBytes };
    const w = spawnModuleWorker(new URL('./disk-writer.js', import.meta.url), cfg);
    w.unref();
    w.on('message', (m: WriterReply) => {
      if (m.t === 'flushed') {
        this.flushes.get(m.id)?.();
        this.flushes.delete(m.id);
      } else if (m.t === 'warn') {
        this.writable = false;
        this.warnOnce(
          m.kind === 'full'
            ? `repokv: the disk holding the KV cache (${this.dir}) is full; new pages stay in memory only (free space or lower --cache-max)`
            : `repokv: writing the KV cache in ${this.dir} failed (${m.message}); new pages stay in memory only`,
        );
      }
    });
    w.on('error', (e) => {
      this.writable = false;
      this.worker = null;
      this.warnOnce(`repokv: the KV cache writer stopped (${e.message}); new pages stay in memory only`);
      this.resolveFlushes();
    });
    w.on('exit', () => {
      this.worker = null;
      this.resolveFlushes();
    });
    this.worker = w;
  }

  private resolveFlushes(): void {
    for (const f of this.flushes.values()) f();
    this.flushes.clear();
  }

  private warnOnce(msg: string): void {
    if (this.warned) return;
    this.warned = true;
    this.opts.onWarning(msg);
  }

  get isWritable(): boolean {
    return this.writable && this.worker !== null;
  }

  has(hash: PageHash): boolean {
    return this.st.has.get(hash) !== undefined;
  }

  /** A page's serialized (f16) bytes, or null when absent or damaged (then it is dropped). */
  get(hash: PageHash): Uint8Array | null {
    let row: PageRow | undefined;
    try {
      row = this.st.get.get(hash) as PageRow | undefined;
    } catch (e) {
      if (isCorruptStore(e)) return this.bad(hash);
      // Busy beyond the timeout, I/O error …: a miss (the page is computed), said once.
      this.warnOnce(`repokv: reading the KV cache in ${this.dir} failed (${(e as Error).message}); computing instead`);
      return null;
    }
    if (!row) return null;
    const data = new Uint8Array(row.data.buffer, row.data.byteOffset, row.data.byteLength);
    const codec = CODEC_NAME[row.codec];
    if (!codec || row.nbytes !== data.byteLength || data.byteLength !== encodedBytes(codec, this.opts.shape) || !checksum(hash, row.codec, data).equals(row.checksum)) {
      return this.bad(hash);
    }
    this.touched.push(Buffer.from(hash));
    return decodePage(codec, data, this.opts.shape);
  }

  /** Marks a page as used (it was hit in a higher tier), so the size cap collects it last. */
  touch(hash: PageHash): void {
    this.touched.push(Buffer.from(hash));
    if (this.touched.length >= 256) this.flushTouches();
  }

  private bad(hash: PageHash): null {
    this.corruptPages++;
    this.post({ t: 'drop', hash });
    return null;
  }

  /** Queues a page for writing (its bytes are handed over: the caller must not reuse them). */
  put(hash: PageHash, parent: PageHash, index: number, bytes: Uint8Array): void {
    if (!this.isWritable) return;
    this.flushTouches();
    const data = bytes.byteOffset === 0 && bytes.byteLength === bytes.buffer.byteLength ? bytes : bytes.slice();
    this.worker!.postMessage({ t: 'put', hash, parent, index, data } satisfies WriterMessage, [data.buffer as ArrayBuffer]);
  }

  private flushTouches(): void {
    if (this.touched.length && this.worker) {
      this.worker.postMessage({ t: 'touch', hashes: this.touched } satisfies WriterMessage);
      this.touched = [];
    }
  }

  private post(m: WriterMessage): void {
    this.worker?.postMessage(m);
  }

  /** Resolves when everything queued so far is committed (or the writer is gone). */
  flush(): Promise<void> {
    this.flushTouches();
    const w = this.worker;
    if (!w) return Promise.resolve();
    const id = this.nextFlush++;
    return new Promise<void>((resolve) => {
      this.flushes.set(id, resolve);
      w.ref();
      w.postMessage({ t: 'flush', id } satisfies WriterMessage);
    }).then(() => {
      this.worker?.unref();
    });
  }

  /** Enforces the size cap now (or a smaller one). */
  async gc(capBytes?: number): Promise<void> {
    this.post({ t: 'gc', capBytes });
    await this.flush();
  }

  stats(): DiskStats {
    if (!this.db.open) throw new Error('the KV disk cache is closed');
    const r = this.db.prepare('SELECT COUNT(*) AS n, COALESCE(SUM(nbytes), 0) AS b, COALESCE(AVG(rel_error), 0) AS e, COALESCE(MAX(rel_error), 0) AS m FROM pages').get() as {
      n: number;
      b: number;
      e: number;
      m: number;
    };
    return {
      dir: this.dir,
      pages: r.n,
      payloadBytes: r.b,
      fileBytes: storeFileBytes(this.dir),
      corruptPages: this.corruptPages,
      writable: this.isWritable,
      meanRelError: r.e,
      maxRelError: r.m,
    };
  }

  /** Finishes pending writes, then closes the writer's connection and the store (WAL folded back). */
  async close(): Promise<void> {
    this.flushTouches();
    const w = this.worker;
    if (w) {
      const id = this.nextFlush++;
      await new Promise<void>((resolve) => {
        this.flushes.set(id, resolve);
        w.ref();
        w.postMessage({ t: 'close', id } satisfies WriterMessage);
      });
      await new Promise<void>((resolve) => {
        if (!this.worker) return resolve();
        w.once('exit', () => resolve());
      });
    }
    this.dispose();
  }

  /** Stops at once: pending writes are lost (atomically: a page is stored whole or not at all). */
  dispose(): void {
    const w = this.worker;
    this.worker = null;
    if (w) void w.terminate();
    this.resolveFlushes();
    if (this.db.open) this.db.close();
  }
}

/** Bytes of a store's files (database, WAL, shared memory). */
export function storeFileBytes(dir: string): number {
  let n = 0;
  for (const f of [DB_FILE, `${DB_FILE}-wal`, `${DB_FILE}-shm`]) {
    const p = join(dir, f);
    if (existsSync(p)) n += statSync(p).size;
  }
  return n;
}

/** Fingerprint folders under a cache root. */
export function listStores(root: string): string[] {
  if (!existsSync(root)) return [];
  return readdirSync(root)
    .filter((d) => existsSync(join(root, d, DB_FILE)))
    .map((d) => join(root, d));
}

function writeAtomic(path: string, text: string): void {
  const tmp = `${path}.${process.pid}.tmp`;
  writeFileSync(tmp, text);
  renameSync(tmp, path);
}

/**
 * Starts a worker on a module of this package: the compiled .js next to this file, or — in a source
 * checkout run through tsx — the .ts, with tsx registered inside the worker first.
 */
export function spawnModuleWorker(url: URL, workerData: unknown): Worker {
  if (!import.meta.url.endsWith('.ts')) return new Worker(url, { workerData });
  const ts = new URL(url.href.replace(/\.js$/, '.ts'));
  const tsx = import.meta.resolve('tsx/esm/api');
  const boot = `import(${JSON.stringify(tsx)}).then((m) => { m.register(); return import(${JSON.stringify(ts.href)}); });`;
  return new Worker(boot, { eval: true, workerData });
}
