// A sequence on a backend's page pool whose page table is set by hand: benchmarks and kernel tests
// that place pages themselves (contiguous, scattered, shared) without the engine's block manager.
import type { KVPool, PagedKV } from '../model/backend.js';

export class TablePagedKV implements PagedKV {
  length = 0;
  pageTableVersion = 0;
  pageTable: Int32Array;
  constructor(
    readonly pool: KVPool,
    pages: ArrayLike<number>,
  ) {
    this.pageTable = Int32Array.from(pages);
  }
  get pageSize(): number {
    return this.pool.opts.pageSize;
  }
  get capacity(): number {
    return this.pageTable.length * this.pageSize;
  }
  /** A new page table (the version changes, so a GPU backend uploads it again). */
  setPages(pages: ArrayLike<number>): void {
    this.pageTable = Int32Array.from(pages);
    this.pageTableVersion++;
  }
  truncate(n: number): void {
    this.length = n;
  }
  commit(n: number): void {
    this.length = n;
  }
  free(): void {}
}
