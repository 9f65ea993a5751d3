// Bookkeeping of a KV page pool, in the spirit of vLLM v1's KV cache manager (seed_systems.md §4.2):
// a reference count per page, a free list, an LRU list of unreferenced pages that still hold a cached
// (hashed) page, and a map hash → page. It never touches page contents: the pool (backend memory)
// and the tiers (host, disk) are driven by the KVCacheManager around it.
//
// Page states:
//   free     ref 0, no hash      — in the free heap (lowest id first, so a pool that allocates its
//                                 memory lazily grows only as far as the peak use)
//   cached   ref 0, hashed       — in the LRU list, findable by hash, evicted oldest first
//   used     ref ≥ 1             — in some sequence's page table (maybe also hashed = shared/immutable)
// A hashed page is immutable: a sequence that must write into one copies it first (copy-on-write).
// Releasing a sequence's pages in reverse order puts its tail pages at the front of the LRU list, so a
// request's most specific pages are evicted before the prefix others are likely to share (vLLM's rule).
import { hashKey, type PageHash } from './hash.js';

export class BlockManager {
  private readonly ref: Int32Array;
  private readonly hashes: (PageHash | null)[];
  private readonly byHash = new Map<string, number>();
  // LRU of cached pages: a doubly linked list through prev/next (−1 = none), oldest at head.
  private readonly prev: Int32Array;
  private readonly next: Int32Array;
  private readonly inLru: Uint8Array;
  private head = -1;
  private tail = -1;
  private lruCount = 0;
  // Free pages as a binary min-heap.
  private readonly heap: Int32Array;
  private heapSize = 0;

  constructor(readonly nPages: number) {
    this.ref = new Int32Array(nPages);
    this.hashes = new Array(nPages).fill(null);
    this.prev = new Int32Array(nPages).fill(-1);
    this.next = new Int32Array(nPages).fill(-1);
    this.inLru = new Uint8Array(nPages);
    this.heap = new Int32Array(nPages);
    for (let i = 0; i < nPages; i++) this.heap[i] = i; // sorted: already a heap
    this.heapSize = nPages;
  }

  get freePages(): number {
    return this.heapSize;
  }
  /** Unreferenced pages still holding a cached page. */
  get cachedPages(): number {
    return this.lruCount;
  }
  /** Pages referenced by at least one sequence. */
  get usedPages(): number {
    return this.nPages - this.heapSize - this.lruCount;
  }
  /** Pages that hold a hash (used or not). */
  get hashedPages(): number {
    return this.byHash.size;
  }

  refCount(id: number): number {
    return this.ref[id];
  }
  hashOf(id: number): PageHash | null {
    return this.hashes[id];
  }
  /** A page a sequence may write into in place: only it refers to it and it names no cached content. */
  isWritable(id: number): boolean {
    return this.ref[id] === 1 && this.hashes[id] === null;
  }

  lookup(h: PageHash | string): number | undefined {
    return this.byHash.get(typeof h === 'string' ? h : hashKey(h));
  }

  /**
   * A page for new content, with ref 1: the lowest free page, else the least recently used cached
   * page, whose hash is forgotten and returned as `evicted` (its contents are intact until the caller
   * writes, so they can be saved to a lower tier first). null when every page is in use.
   */
  allocate(): { id: number; evicted: PageHash | null } | null {
    if (this.heapSize > 0) {
      const id = this.heapPop();
      this.ref[id] = 1;
      return { id, evicted: null };
    }
    if (this.head < 0) return null;
    const id = this.head;
    this.lruRemove(id);
    const h = this.hashes[id]!;
    this.byHash.delete(hashKey(h));
    this.hashes[id] = null;
    this.ref[id] = 1;
    return { id, evicted: h };
  }

  /** One more reference (a sequence takes a cached or shared page). */
  acquire(id: number): void {
    if (this.ref[id] === 0) {
      if (this.inLru[id]) this.lruRemove(id);
      else throw new Error(`page ${id} is free; it cannot be acquired`);
    }
    this.ref[id]++;
  }

  release(id: number): void {
    if (this.ref[id] <= 0) throw new Error(`page ${id} released more often than acquired`);
    if (--this.ref[id] > 0) return;
    if (this.hashes[id]) this.lruAppend(id);
    else this.heapPush(id);
  }

  /**
   * Names a full page's content. Returns the page that holds the hash afterwards: `id`, or an older
   * page that already holds the same content (the caller then switches to it and releases `id`).
   */
  publish(id: number, h: PageHash): number {
    if (this.ref[id] <= 0) throw new Error(`page ${id} is not in use; only a sequence's page can be published`);
    const k = hashKey(h);
    const have = this.byHash.get(k);
    if (have !== undefined) return have;
    if (this.hashes[id]) throw new Error(`page ${id} already holds a cached page`);
    this.hashes[id] = h;
    this.byHash.set(k, id);
    return id;
  }

  /** Forgets the hash of an unreferenced cached page and frees it (e.g. its content is found bad). */
  drop(id: number): void {
    if (this.ref[id] !== 0 || !this.inLru[id]) throw new Error(`page ${id} is not an unreferenced cached page`);
    this.lruRemove(id);
    this.byHash.delete(hashKey(this.hashes[id]!));
    this.hashes[id] = null;
    this.heapPush(id);
  }

  /** Cached pages, least recently used first (for tests and stats). */
  lruOrder(): number[] {
    const out: number[] = [];
    for (let i = this.head; i >= 0; i = this.next[i]) out.push(i);
    return out;
  }

  private lruAppend(id: number): void {
    this.prev[id] = this.tail;
    this.next[id] = -1;
    if (this.tail >= 0) this.next[this.tail] = id;
    else this.head = id;
    this.tail = id;
    this.inLru[id] = 1;
    this.lruCount++;
  }

  private lruRemove(id: number): void {
    const p = this.prev[id];
    const n = this.next[id];
    if (p >= 0) this.next[p] = n;
    else this.head = n;
    if (n >= 0) this.prev[n] = p;
    else this.tail = p;
    this.prev[id] = this.next[id] = -1;
    this.inLru[id] = 0;
    this.lruCount--;
  }

  private heapPush(id: number): void {
    const h = this.heap;
    let i = this.heapSize++;
    h[i] = id;
    while (i > 0) {
      const p = (i - 1) >> 1;
      if (h[p] <= h[i]) break;
      [h[p], h[i]] = [h[i], h[p]];
      i = p;
    }
  }

  private heapPop(): number {
    const h = this.heap;
    const top = h[0];
    h[0] = h[--this.heapSize];
    let i = 0;
    for (;;) {
      const l = 2 * i + 1;
      const r = l + 1;
      let m = i;
      if (l < this.heapSize && h[l] < h[m]) m = l;
      if (r < this.heapSize && h[r] < h[m]) m = r;
      if (m === i) break;
      [h[m], h[i]] = [h[i], h[m]];
      i = m;
    }
    return top;
  }
}
