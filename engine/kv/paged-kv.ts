// A sequence's KV as pages of the pool: the engine-side object behind `PagedKV` (model/backend.ts).
// It holds the page ids (`pages`), the hashes of its full pages (`hashes`, a prefix of them) and its
// length; every change of pages goes through the KVCacheManager that owns it (reference counts,
// copy-on-write, publishing).
//
// For backends that keep KV in host memory it also offers the CPU backend's cache surface —
// write(layer, k, v, row, n, pos), keys(layer), values(layer): per KV head, [tokens, headDim] arrays —
// so an attention written against a head-major host cache reads pages unchanged (README.md).
import type { KVPool, PagedKV } from '../model/backend.js';
import type { PageHash } from './hash.js';
import { HostKVPool } from './host-pool.js';
import type { KVCacheManager } from './manager.js';

export class PagedSequenceKV implements PagedKV {
  length = 0;
  /** Page id of each pageSize-token slice. */
  readonly pages: number[] = [];
  /** Chained hash of each full page, in order (hashes.length ≤ floor(length / pageSize)). */
  readonly hashes: PageHash[] = [];
  private table = new Int32Array(0);
  private tableVersion = 0;
  private builtVersion = -1;
  /** Rows the last `write` left readable (host attention surface). */
  private readable = 0;

  constructor(
    readonly manager: KVCacheManager,
    readonly capacity: number,
  ) {}

  get pool(): KVPool {
    return this.manager.pool;
  }
  get pageSize(): number {
    return this.manager.pageSize;
  }
  get pageTableVersion(): number {
    return this.tableVersion;
  }
  get pageTable(): Int32Array {
    if (this.builtVersion !== this.tableVersion) {
      if (this.table.length < this.pages.length) this.table = new Int32Array(Math.max(this.pages.length, 2 * this.table.length, 16));
      this.table.set(this.pages);
      this.builtVersion = this.tableVersion;
    }
    return this.table.subarray(0, this.pages.length);
  }

  /** Sets page i (i ≤ pages.length); reference counting is the manager's business. */
  setPage(i: number, id: number): void {
    this.pages[i] = id;
    this.tableVersion++;
  }
  /** Drops pages from index i on (already released by the manager). */
  cutPages(i: number): void {
    this.pages.length = i;
    this.tableVersion++;
  }

  truncate(n: number): void {
    this.manager.truncate(this, n);
  }

  commit(n: number): void {
    if (n < 0 || n > this.pages.length * this.pageSize) throw new Error(`cannot commit ${n} tokens: the sequence has pages for ${this.pages.length * this.pageSize}`);
    this.length = n;
  }

  free(): void {
    this.manager.truncate(this, 0);
  }

  // ---- host attention surface (HostKVPool only) ----

  private host(): HostKVPool {
    const p = this.manager.pool;
    if (!(p instanceof HostKVPool)) throw new Error('this backend reads paged KV through its own pool, not the host surface');
    return p;
  }

  write(layer: number, k: Float32Array, v: Float32Array, row: number, n: number, pos: number): void {
    if (Math.ceil((pos + n) / this.pageSize) > this.pages.length) throw new Error(`sequence needs ${pos + n} tokens of KV but has pages for ${this.pages.length * this.pageSize}`);
    this.host().writeRows(this.pageTable, layer, k, v, row, n, pos);
    this.readable = pos + n;
  }

  keys(layer: number): Float32Array[] {
    return this.host().heads(this.pageTable, layer, this.readable, 'k');
  }

  values(layer: number): Float32Array[] {
    return this.host().heads(this.pageTable, layer, this.readable, 'v');
  }
}
