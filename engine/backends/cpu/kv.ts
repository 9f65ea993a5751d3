// The CPU backend's KV memory: a contiguous per-sequence cache (`createKV`) and a page pool
// (`createKVPool`, engine/kv/README.md), both host memory, both laid out so that attention reads them
// through zero-copy views.
//
// Layout: memory comes in blocks (the contiguous cache is one block of `capacity` rows; the pool is
// arenas of up to 1 GiB of pages). In a block, each layer's K (and V) is one array, head-major:
// [nKVHeads][blockRows][headDim]. So the keys of one KV head over consecutive rows of a block are one
// contiguous slab, which the step graph takes as an input without a copy. A sequence maps its tokens to
// (block, row) in runs (`KVRun`): the contiguous cache is one run; a paged sequence has one run per
// stretch of consecutive page ids in one arena (one run in the common case: the block manager hands
// out the lowest free ids).
//
// Values: 'f16' (default) stores IEEE halves in Uint16Array — the graph casts them to f32 as it reads
// them and casts the new rows to f16 as it writes them, which measured no slower than f32 storage and
// faster at long contexts (half the bytes to stream; README "KV memory") — 'f32' stores f32 (exact).

import type { KVCache, KVCacheOptions, KVPool, KVPoolOptions, PagedKV } from '../../model/backend.js';
import { ContiguousKVCache, isPagedKV } from '../../model/backend.js';
import { f16ToF32Bits, f32BitsToF16, u16View } from '../../kv/f16.js';

export type KVPrecision = 'f16' | 'f32';
export type KVArray = Float32Array | Uint16Array;

/** Tokens t0 … t0+n−1 of a sequence, stored in rows row … row+n−1 of one block. */
export interface KVRun {
  t0: number;
  n: number;
  block: number;
  row: number;
}

/** What attention needs from KV memory: per block and layer, the head-major K and V arrays. */
export interface KVStore {
  readonly precision: KVPrecision;
  readonly nKVHeads: number;
  readonly headDim: number;
  /** Rows of a block (a head's slab is blockRows × headDim values). */
  blockRows(block: number): number;
  /** The layer's K (which 0) or V (which 1) array of a block: [nKVHeads][blockRows][headDim]. */
  array(block: number, layer: number, which: 0 | 1): KVArray;
}

export function newKVArray(precision: KVPrecision, n: number): KVArray {
  return precision === 'f16' ? new Uint16Array(n) : new Float32Array(n);
}

/** Bytes of one value in memory. */
export function kvValueBytes(precision: KVPrecision): number {
  return precision === 'f16' ? 2 : 4;
}

// ---- contiguous cache -------------------------------------------------------------------------------

export class CpuKVCache extends ContiguousKVCache implements KVStore {
  private k: (KVArray | null)[];
  private v: (KVArray | null)[];

  constructor(
    opts: KVCacheOptions,
    readonly precision: KVPrecision = 'f16',
  ) {
    super(opts);
    this.k = new Array(opts.nLayers).fill(null);
    this.v = new Array(opts.nLayers).fill(null);
  }

  get nKVHeads(): number {
    return this.opts.nKVHeads;
  }
  get headDim(): number {
    return this.opts.headDim;
  }

  /** Bytes allocated so far (layers are allocated on first use). */
  get bytes(): number {
    return this.k.reduce((s, a) => s + (a?.byteLength ?? 0), 0) * 2;
  }

  override free(): void {
    super.free();
    this.k.fill(null);
    this.v.fill(null);
  }

  blockRows(): number {
    return this.opts.capacity;
  }

  array(_block: number, layer: number, which: 0 | 1): KVArray {
    const arrs = which === 0 ? this.k : this.v;
    let a = arrs[layer];
    if (!a) {
      const { nKVHeads: G, capacity: cap, headDim: d } = this.opts;
      this.k[layer] = newKVArray(this.precision, G * cap * d);
      this.v[layer] = newKVArray(this.precision, G * cap * d);
      a = arrs[layer]!;
    }
    return a;
  }
}

// ---- page pool --------------------------------------------------------------------------------------

// Arenas are zero-filled on allocation, which the OS commits only as pages are touched; a large arena
// keeps a long context in one run (zero-copy attention) at no resident cost.
const ARENA_BYTES = 2 ** 30;
const MAX_ARENA_PAGES = 4096;

interface Arena {
  pages: number;
  k: KVArray[];
  v: KVArray[];
}

/**
 * The CPU backend's KV page pool (engine/kv/README.md, "the backend contract"): pages of `pageSize`
 * tokens of every layer, in host memory, in arenas laid out as described at the top of this file.
 * `dtype: 'f16'` stores halves (2 bytes a value), 'f32' floats; `bytes` counts what is allocated.
 */
export class CpuKVPool implements KVPool, KVStore {
  readonly nPages: number;
  readonly pageBytes: number;
  /** Host memory per page. */
  readonly bytesPerPage: number;
  readonly arenaPages: number;
  readonly precision: KVPrecision;
  private readonly arenas: (Arena | null)[];
  private readonly rowSize: number;

  constructor(readonly opts: KVPoolOptions) {
    const { nLayers, nKVHeads, headDim, pageSize } = opts;
    this.precision = opts.dtype;
    this.rowSize = nKVHeads * headDim;
    this.pageBytes = 2 * nLayers * pageSize * this.rowSize * 2;
    this.bytesPerPage = 2 * nLayers * pageSize * this.rowSize * kvValueBytes(this.precision);
    const byBudget = opts.maxBytes === undefined ? Infinity : Math.floor(opts.maxBytes / this.bytesPerPage);
    this.nPages = Math.max(0, Math.min(opts.nPages, byBudget));
    this.arenaPages = Math.max(1, Math.min(this.nPages, MAX_ARENA_PAGES, Math.floor(ARENA_BYTES / this.bytesPerPage)));
    this.arenas = new Array(Math.ceil(this.nPages / this.arenaPages)).fill(null);
  }

  get nKVHeads(): number {
    return this.opts.nKVHeads;
  }
  get headDim(): number {
    return this.opts.headDim;
  }
  get pageSize(): number {
    return this.opts.pageSize;
  }

  get bytes(): number {
    return this.arenas.reduce((s, a) => s + (a ? a.pages * this.bytesPerPage : 0), 0);
  }

  private arena(i: number): Arena {
    let a = this.arenas[i];
    if (!a) {
      const pages = Math.min(this.arenaPages, this.nPages - i * this.arenaPages);
      const n = this.opts.nKVHeads * pages * this.opts.pageSize * this.opts.headDim;
      a = {
        pages,
        k: Array.from({ length: this.opts.nLayers }, () => newKVArray(this.precision, n)),
        v: Array.from({ length: this.opts.nLayers }, () => newKVArray(this.precision, n)),
      };
      this.arenas[i] = a;
    }
    return a;
  }

  blockRows(block: number): number {
    return this.arena(block).pages * this.opts.pageSize;
  }

  array(block: number, layer: number, which: 0 | 1): KVArray {
    const a = this.arena(block);
    return which === 0 ? a.k[layer] : a.v[layer];
  }

  private check(id: number): void {
    if (!(Number.isInteger(id) && id >= 0 && id < this.nPages)) throw new Error(`KV page ${id} is outside the pool of ${this.nPages} pages`);
  }

  /** The runs of tokens [t0, t1) of a sequence with page table `pt` (consecutive ids of one arena merge). */
  runs(pt: Int32Array, t0: number, t1: number): KVRun[] {
    const ps = this.opts.pageSize;
    const out: KVRun[] = [];
    for (let t = t0; t < t1; ) {
      const pi = Math.floor(t / ps);
      const id = pt[pi];
      this.check(id);
      const end = Math.min(t1, (pi + 1) * ps);
      const block = Math.floor(id / this.arenaPages);
      const row = (id % this.arenaPages) * ps + (t % ps);
      const last = out[out.length - 1];
      if (last && last.block === block && last.row + last.n === row) last.n += end - t;
      else out.push({ t0: t, n: end - t, block, row });
      t = end;
    }
    return out;
  }

  /** Where a page's rows are: its arena, its first row, and the head stride (values). */
  private where(id: number): { a: Arena; base: number; headStride: number } {
    this.check(id);
    const a = this.arena(Math.floor(id / this.arenaPages));
    const ps = this.opts.pageSize;
    const d = this.opts.headDim;
    return { a, base: (id % this.arenaPages) * ps * d, headStride: a.pages * ps * d };
  }

  async readPage(id: number): Promise<Uint8Array> {
    return this.readPageSync(id);
  }

  /** The page in the fixed serialization (f16; per layer its K rows then its V rows, token-major). */
  readPageSync(id: number): Uint8Array {
    const { nLayers: L, pageSize: ps, headDim: d, nKVHeads: G } = this.opts;
    const { a, base, headStride } = this.where(id);
    const out = new Uint16Array(this.pageBytes / 2);
    const rs = this.rowSize;
    let o = 0;
    for (let l = 0; l < L; l++) {
      for (const arr of [a.k[l], a.v[l]]) {
        if (arr instanceof Uint16Array) {
          for (let r = 0; r < ps; r++) {
            for (let h = 0; h < G; h++) {
              const s = base + h * headStride + r * d;
              out.set(arr.subarray(s, s + d), o + h * d);
            }
            o += rs;
          }
        } else {
          const u = new Uint32Array(arr.buffer, arr.byteOffset, arr.length);
          for (let r = 0; r < ps; r++) {
            for (let h = 0; h < G; h++) f32BitsToF16(arr, u, out, d, base + h * headStride + r * d, o + h * d);
            o += rs;
          }
        }
      }
    }
    return new Uint8Array(out.buffer);
  }

  writePage(id: number, bytes: Uint8Array): void {
    if (bytes.byteLength !== this.pageBytes) throw new Error(`a KV page is ${this.pageBytes} bytes, got ${bytes.byteLength}`);
    const { nLayers: L, pageSize: ps, headDim: d, nKVHeads: G } = this.opts;
    const { a, base, headStride } = this.where(id);
    const src = u16View(bytes);
    const rs = this.rowSize;
    let o = 0;
    for (let l = 0; l < L; l++) {
      for (const arr of [a.k[l], a.v[l]]) {
        if (arr instanceof Uint16Array) {
          for (let r = 0; r < ps; r++) {
            for (let h = 0; h < G; h++) {
              const t = base + h * headStride + r * d;
              arr.set(src.subarray(o + h * d, o + (h + 1) * d), t);
            }
            o += rs;
          }
        } else {
          const u = new Uint32Array(arr.buffer, arr.byteOffset, arr.length);
          for (let r = 0; r < ps; r++) {
            for (let h = 0; h < G; h++) f16ToF32Bits(src, u, d, o + h * d, base + h * headStride + r * d);
            o += rs;
          }
        }
      }
    }
  }

  copyPage(src: number, dst: number): void {
    const { nLayers: L, pageSize: ps, headDim: d, nKVHeads: G } = this.opts;
    const s = this.where(src);
    const t = this.where(dst);
    const n = ps * d;
    for (let l = 0; l < L; l++) {
      for (let h = 0; h < G; h++) {
        const so = s.base + h * s.headStride;
        const to = t.base + h * t.headStride;
        (t.a.k[l] as Float32Array).set(s.a.k[l].subarray(so, so + n) as Float32Array, to);
        (t.a.v[l] as Float32Array).set(s.a.v[l].subarray(so, so + n) as Float32Array, to);
      }
    }
  }

  dispose(): void {
    this.arenas.fill(null);
  }
}

/** The store and token runs of a sequence's KV (contiguous cache or a page of this backend's pool). */
export function kvStoreOf(kv: KVCache): KVStore | null {
  if (kv instanceof CpuKVCache) return kv;
  if (isPagedKV(kv) && kv.pool instanceof CpuKVPool) return kv.pool;
  return null;
}

/** Runs of tokens [t0, t1) of `kv` in its store. */
export function kvRuns(kv: KVCache, t0: number, t1: number): KVRun[] {
  if (t1 <= t0) return [];
  if (kv instanceof CpuKVCache) return [{ t0, n: t1 - t0, block: 0, row: t0 }];
  const p = kv as PagedKV;
  return (p.pool as CpuKVPool).runs(p.pageTable, t0, t1);
}
