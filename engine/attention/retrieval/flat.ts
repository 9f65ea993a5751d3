// Exact flat scan: every indexed key's inner product with the query, top-k kept in a heap.
// The recall oracle for the other indexes, and what SCBench's RetrievalAttention port runs
// (seed_systems.md §2.4: papyfaiss.FlatIndex).
import { ByteReader, ByteWriter } from './binary.js';
import type { RetrievalIndex, SearchResult } from './types.js';
import { dot, KeyStore, TopK } from './vectors.js';

export class FlatIndex implements RetrievalIndex {
  readonly kind = 'flat' as const;

  constructor(
    readonly keys: KeyStore,
    readonly base: number,
  ) {}

  static build(keys: Float32Array, d: number, base: number): FlatIndex {
    return new FlatIndex(KeyStore.from(keys, d), base);
  }

  get d(): number {
    return this.keys.d;
  }
  get size(): number {
    return this.keys.size;
  }

  search(q: Float32Array, k: number): SearchResult {
    const { d, size } = this;
    const data = this.keys.data;
    const top = new TopK(Math.min(k, Math.max(1, size)));
    for (let j = 0; j < size; j++) {
      const s = dot(q, 0, data, j * d, d);
      if (s >= top.min()) top.push(s, j);
    }
    const ids = size ? top.sorted().ids : new Int32Array(0);
    for (let i = 0; i < ids.length; i++) ids[i] += this.base;
    return { ids, scanned: size };
  }

  append(keys: Float32Array): void {
    this.keys.append(keys);
  }

  serialize(): Uint8Array {
    const w = new ByteWriter();
    w.u32(this.base);
    w.u32(this.size);
    return w.finish();
  }

  static deserialize(body: Uint8Array, keys: KeyStore): FlatIndex {
    const r = new ByteReader(body);
    const base = r.u32();
    const size = r.u32();
    if (size !== keys.size) throw new Error(`flat index has ${size} rows, ${keys.size} keys given`);
    return new FlatIndex(keys, base);
  }

  structureBytes(): number {
    return 0;
  }
}
