// The KV cache manager: one per engine. It ties together
//   - the backend's page pool (device memory, or host memory for host backends) and its bookkeeping
//     (BlockManager: reference counts, free list, LRU of cached pages, hash → page),
//   - the prefix index over content-addressed pages (hash.ts, fingerprint.ts),
//   - the tiers below the pool: host memory (HostTier) and disk (DiskStore),
// and gives the engine a few operations on sequences: restore the longest cached prefix, prepare pages
// for a step (allocating, copying shared pages on write), publish pages that became full (and persist
// them in the background), fork, truncate, free.
//
// Tiers: a cached page leaves the pool only when the pool needs room (least recently used first);
// it then goes down to host memory, and from there it is dropped (it was persisted when it was
// computed). A hit in a lower tier moves the page back up into the pool.
import { UserError } from '../errors.js';
import type { KVPool } from '../model/backend.js';
import { BlockManager } from './block-manager.js';
import { DiskStore, type DiskStats } from './disk-store.js';
import type { StorageCodec } from './codec.js';
import type { ModelFingerprint } from './fingerprint.js';
import { pageHash, type PageHash } from './hash.js';
import { HostTier } from './host-tier.js';
import { PagedSequenceKV } from './paged-kv.js';

export interface KVCacheManagerOptions {
  pool: KVPool;
  fingerprint: ModelFingerprint;
  /** Host tier budget in bytes (0: no host tier). */
  hostBytes: number;
  /** Persistence; absent: memory only. */
  disk?: {
    root: string;
    capBytes: number;
    codec: StorageCodec;
    hardLimitBytes?: number;
    describe?: Record<string, unknown>;
  };
  /** Whether to look up and publish cached prefixes at all (paging without sharing when false). */
  prefixCaching?: boolean;
  onWarning: (message: string) => void;
}

export interface RestoreReport {
  /** Tokens the sequence holds after the restore. */
  covered: number;
  device: number;
  host: number;
  disk: number;
  /** Each restored page and the tier it came from. */
  pages: { index: number; tier: 'device' | 'host' | 'disk' }[];
}

export interface KVCacheStats {
  pool: { pages: number; used: number; cached: number; free: number; bytes: number; maxBytes: number | null; pageBytes: number };
  host: { pages: number; bytes: number; budget: number };
  disk: DiskStats | null;
  counters: typeof KVCacheManager.prototype.counters;
}

export class KVCacheManager {
  readonly bm: BlockManager;
  readonly host: HostTier;
  readonly disk: DiskStore | null;
  readonly pageSize: number;
  readonly root: PageHash;
  private readonly caching: boolean;
  private pendingReads = new Set<Promise<void>>();
  readonly counters = {
    /** Pages found in the pool / host memory / on disk by restore. */
    deviceHits: 0,
    hostHits: 0,
    diskHits: 0,
    /** Cached pages pushed out of the pool (to host memory). */
    evictions: 0,
    copyOnWrite: 0,
    /** Full pages found equal to an already cached one and shared instead. */
    deduplicated: 0,
    persisted: 0,
  };

  constructor(
    readonly pool: KVPool,
    private readonly opts: KVCacheManagerOptions,
  ) {
    this.bm = new BlockManager(pool.nPages);
    this.host = new HostTier(opts.hostBytes);
    this.pageSize = pool.opts.pageSize;
    this.root = opts.fingerprint.root;
    this.caching = opts.prefixCaching ?? true;
    this.disk =
      opts.disk && this.caching
        ? DiskStore.open({
            root: opts.disk.root,
            fingerprint: opts.fingerprint,
            shape: { nLayers: pool.opts.nLayers, nKVHeads: pool.opts.nKVHeads, headDim: pool.opts.headDim, pageSize: this.pageSize },
            codec: opts.disk.codec,
            capBytes: opts.disk.capBytes,
            hardLimitBytes: opts.disk.hardLimitBytes,
            describe: opts.disk.describe,
            onWarning: opts.onWarning,
          })
        : null;
  }

  createSequence(capacity: number): PagedSequenceKV {
    return new PagedSequenceKV(this, capacity);
  }

  /** A new sequence sharing every page of `kv` (copy-on-write from the first write on). */
  fork(kv: PagedSequenceKV, capacity = kv.capacity): PagedSequenceKV {
    if (capacity < kv.length) throw new Error(`a fork of ${kv.length} tokens needs a capacity of at least that`);
    const f = new PagedSequenceKV(this, capacity);
    kv.pages.forEach((id, i) => {
      this.bm.acquire(id);
      f.setPage(i, id);
    });
    f.hashes.push(...kv.hashes);
    f.length = kv.length;
    return f;
  }

  /** Keeps the first n tokens; pages past them are released, the sequence's tail first. */
  truncate(kv: PagedSequenceKV, n: number): void {
    if (n < 0 || n > kv.length) throw new Error(`cannot truncate a KV cache of ${kv.length} tokens to ${n}`);
    const keep = Math.ceil(n / this.pageSize);
    for (let i = kv.pages.length - 1; i >= keep; i--) this.bm.release(kv.pages[i]);
    kv.cutPages(Math.min(keep, kv.pages.length));
    kv.hashes.length = Math.min(kv.hashes.length, Math.floor(n / this.pageSize));
    kv.length = n;
  }

  /**
   * Takes the longest run of cached pages that continues `kv` along `tokens` (the sequence's tokens
   * followed by the new ones): from the pool, else host memory, else disk. Only full pages are cached;
   * a partial last page of `kv` is replaced when a cached page extends it.
   */
  async restore(kv: PagedSequenceKV, tokens: ArrayLike<number>): Promise<RestoreReport> {
    const ps = this.pageSize;
    const r: RestoreReport = { covered: kv.length, device: 0, host: 0, disk: 0, pages: [] };
    if (!this.caching) return r;
    let i = Math.floor(kv.length / ps);
    if (kv.hashes.length < i) return r; // full pages not yet published (never the case after a step)
    let parent = i === 0 ? this.root : kv.hashes[i - 1];
    for (; (i + 1) * ps <= tokens.length && (i + 1) * ps <= kv.capacity; i++) {
      const h = pageHash(parent, tokens, i * ps, (i + 1) * ps);
      let id = this.bm.lookup(h);
      let tier: 'device' | 'host' | 'disk' = 'device';
      if (id !== undefined) this.bm.acquire(id);
      else {
        let bytes = this.host.take(h);
        tier = 'host';
        if (!bytes && this.disk) {
          bytes = this.disk.get(h) ?? undefined;
          tier = 'disk';
        }
        if (!bytes) break;
        id = await this.allocatePage();
        this.pool.writePage(id, bytes);
        const got = this.bm.publish(id, h);
        if (got !== id) {
          // Cannot happen (the lookup above missed and nothing was published since); stay correct anyway.
          this.bm.acquire(got);
          this.bm.release(id);
          id = got;
        }
      }
      if (i < kv.pages.length) this.bm.release(kv.pages[i]);
      kv.setPage(i, id);
      kv.hashes[i] = h;
      parent = h;
      r.covered = (i + 1) * ps;
      r[tier] += ps;
      r.pages.push({ index: i, tier });
      if (tier === 'device') this.counters.deviceHits++;
      else if (tier === 'host') this.counters.hostHits++;
      else this.counters.diskHits++;
      if (tier !== 'disk') this.disk?.touch(h);
    }
    if (r.covered > kv.length) kv.length = r.covered;
    return r;
  }

  /** Moves the sequence's end back to n ≤ length without releasing pages (a restored last token to recompute). */
  rewind(kv: PagedSequenceKV, n: number): void {
    if (n > kv.length) throw new Error('rewind past the end');
    kv.length = n;
    kv.hashes.length = Math.min(kv.hashes.length, Math.floor(n / this.pageSize));
  }

  /**
   * Makes rows [kv.length, upto) writable: the page holding row kv.length is copied first if it is
   * shared or cached (copy-on-write), and missing pages are allocated.
   */
  async prepareWrite(kv: PagedSequenceKV, upto: number): Promise<void> {
    if (upto > kv.capacity) throw new UserError(`the sequence needs ${upto} tokens of context but holds ${kv.capacity}; raise the context size or shorten the input`);
    const ps = this.pageSize;
    for (let i = Math.floor(kv.length / ps); i < kv.pages.length && i * ps < upto; i++) {
      const id = kv.pages[i];
      if (this.bm.isWritable(id)) continue;
      const copy = await this.allocatePage();
      this.pool.copyPage(id, copy);
      this.bm.release(id);
      kv.setPage(i, copy);
      this.counters.copyOnWrite++;
    }
    const need = Math.ceil(upto / ps);
    while (kv.pages.length < need) kv.setPage(kv.pages.length, await this.allocatePage());
  }

  /**
   * Names the pages that became full (tokens = the sequence's tokens), shares a page that is already
   * cached, and persists new ones in the background.
   */
  publish(kv: PagedSequenceKV, tokens: ArrayLike<number>): void {
    if (!this.caching) return;
    const ps = this.pageSize;
    const full = Math.floor(kv.length / ps);
    for (let i = kv.hashes.length; i < full; i++) {
      const parent = i === 0 ? this.root : kv.hashes[i - 1];
      const h = pageHash(parent, tokens, i * ps, (i + 1) * ps);
      kv.hashes[i] = h;
      const id = kv.pages[i];
      if (this.bm.hashOf(id)) continue;
      const got = this.bm.publish(id, h);
      if (got !== id) {
        this.bm.acquire(got);
        this.bm.release(id);
        kv.setPage(i, got);
        this.counters.deduplicated++;
      } else this.persist(id, h, parent, i);
    }
  }

  private persist(id: number, hash: PageHash, parent: PageHash, index: number): void {
    const disk = this.disk;
    if (!disk || !disk.isWritable) return;
    // Pin the page until its bytes are read (a cached page is immutable, but could be evicted).
    this.bm.acquire(id);
    const p: Promise<void> = this.pool
      .readPage(id)
      .then((bytes) => {
        disk.put(hash, parent, index, bytes);
        this.counters.persisted++;
      })
      .catch((e: Error) => this.opts.onWarning(`repokv: reading a KV page for the disk cache failed (${e.message})`))
      .finally(() => {
        this.bm.release(id);
        this.pendingReads.delete(p);
      });
    this.pendingReads.add(p);
  }

  private async allocatePage(): Promise<number> {
    let a = this.bm.allocate();
    // Pages being read for the disk cache are pinned until their read completes; on a GPU backend that
    // is a readback still in flight, so wait for those before calling the budget taken.
    while (!a && this.pendingReads.size > 0) {
      await Promise.allSettled([...this.pendingReads]);
      a = this.bm.allocate();
    }
    if (!a) {
      const mib = (this.pool.nPages * this.pool.pageBytes) / 2 ** 20;
      throw new UserError(
        `the KV memory budget (${this.pool.nPages} pages of ${this.pageSize} tokens, ~${mib.toFixed(0)} MiB) is taken by live sequences; raise the KV memory budget (--kv-memory) or end some sessions`,
      );
    }
    if (a.evicted) {
      this.counters.evictions++;
      if (this.host.budgetBytes > 0) this.host.put(a.evicted, await this.pool.readPage(a.id));
    }
    return a.id;
  }

  /** Waits until every page published so far is on disk (or the disk tier gave up). */
  async flush(): Promise<void> {
    while (this.pendingReads.size) await Promise.all([...this.pendingReads]);
    await this.disk?.flush();
  }

  stats(): KVCacheStats {
    return {
      pool: {
        pages: this.pool.nPages,
        used: this.bm.usedPages,
        cached: this.bm.cachedPages,
        free: this.bm.freePages,
        bytes: this.pool.bytes,
        maxBytes: this.pool.opts.maxBytes ?? null,
        pageBytes: this.pool.pageBytes,
      },
      host: { pages: this.host.size, bytes: this.host.bytes, budget: this.host.budgetBytes },
      disk: this.disk?.stats() ?? null,
      counters: { ...this.counters },
    };
  }

  async close(): Promise<void> {
    await this.flush();
    await this.disk?.close();
    this.dispose();
  }

  dispose(): void {
    this.disk?.dispose();
    this.host.clear();
    this.pool.dispose();
  }
}
