// The host-memory tier: serialized pages (KVPool.readPage bytes) that were evicted from the device
// pool, keyed by page hash, least recently used first out, within a byte budget. A hit moves the page
// back up into the pool (and out of here).
import { hashKey, type PageHash } from './hash.js';

export class HostTier {
  private readonly pages = new Map<string, { hash: PageHash; bytes: Uint8Array }>();
  private used = 0;

  constructor(readonly budgetBytes: number) {}

  get bytes(): number {
    return this.used;
  }
  get size(): number {
    return this.pages.size;
  }

  has(h: PageHash | string): boolean {
    return this.pages.has(typeof h === 'string' ? h : hashKey(h));
  }

  /** Keeps a page, dropping the least recently used ones to stay within budget. */
  put(hash: PageHash, bytes: Uint8Array): void {
    const k = hashKey(hash);
    const old = this.pages.get(k);
    if (old) {
      this.pages.delete(k);
      this.used -= old.bytes.byteLength;
    }
    if (bytes.byteLength > this.budgetBytes) return;
    while (this.used + bytes.byteLength > this.budgetBytes) {
      const [oldest, v] = this.pages.entries().next().value as [string, { bytes: Uint8Array }];
      this.pages.delete(oldest);
      this.used -= v.bytes.byteLength;
    }
    this.pages.set(k, { hash, bytes });
    this.used += bytes.byteLength;
  }

  /** Removes and returns a page (it moves up to the device pool). */
  take(h: PageHash | string): Uint8Array | undefined {
    const k = typeof h === 'string' ? h : hashKey(h);
    const v = this.pages.get(k);
    if (!v) return undefined;
    this.pages.delete(k);
    this.used -= v.bytes.byteLength;
    return v.bytes;
  }

  clear(): void {
    this.pages.clear();
    this.used = 0;
  }
}
