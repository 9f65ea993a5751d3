// A KV page pool in host memory, for backends whose attention runs on the CPU side (the reference
// backend; the onnxruntime CPU backend adopts it with one method, see README.md). Values are kept as
// f32 (rounded to f16 on write when dtype is 'f16'), which is what MLAS and the reference attention
// read directly; memory is accounted at 4 bytes per value.
//
// Layout: pages are grouped into arenas of up to ARENA_BYTES (1 GiB), allocated on first use; in an arena,
// each layer's K (and V) is head-major [nKVHeads][arenaPages·pageSize][headDim]. So the keys of one KV
// head over consecutive pages of one arena are one contiguous slab: a sequence whose pages are
// consecutive (the common case: the block manager hands out the lowest free ids) is attended through
// zero-copy views; otherwise its rows are gathered into a scratch buffer.
import type { KVPool, KVPoolOptions } from '../model/backend.js';
import { f16ToF32Bits, f32BitsToF16, roundF16InPlace, u16View } from './f16.js';

// Arenas are zero-filled on allocation, which the OS commits only as pages are touched; a large arena
// keeps a long context in one contiguous run (zero-copy attention) at no resident cost.
const ARENA_BYTES = 2 ** 30;
const MAX_ARENA_PAGES = 4096;

interface Arena {
  pages: number;
  k: Float32Array[];
  v: Float32Array[];
  /** The same memory as bits (page (de)serialization converts f16 ↔ f32 on bit patterns). */
  k32: Uint32Array[];
  v32: Uint32Array[];
}

export class HostKVPool implements KVPool {
  readonly nPages: number;
  readonly pageBytes: number;
  /** Host memory per page (f32 values). */
  readonly bytesPerPage: number;
  readonly arenaPages: number;
  private readonly arenas: (Arena | null)[];
  private readonly rowSize: number;
  private scratch: Float32Array[] = [];

  constructor(readonly opts: KVPoolOptions) {
    const { nLayers, nKVHeads, headDim, pageSize } = opts;
    this.rowSize = nKVHeads * headDim;
    this.pageBytes = 2 * nLayers * pageSize * this.rowSize * 2;
    this.bytesPerPage = 2 * nLayers * pageSize * this.rowSize * 4;
    const byBudget = opts.maxBytes === undefined ? Infinity : Math.floor(opts.maxBytes / this.bytesPerPage);
    this.nPages = Math.max(0, Math.min(opts.nPages, byBudget));
    this.arenaPages = Math.max(1, Math.min(this.nPages, MAX_ARENA_PAGES, Math.floor(ARENA_BYTES / this.bytesPerPage)));
    this.arenas = new Array(Math.ceil(this.nPages / this.arenaPages)).fill(null);
  }

  get bytes(): number {
    return this.arenas.reduce((s, a) => s + (a ? a.pages * this.bytesPerPage : 0), 0);
  }

  private arena(id: number): Arena {
    if (!(id >= 0 && id < this.nPages)) throw new Error(`KV page ${id} is outside the pool of ${this.nPages} pages`);
    const i = Math.floor(id / this.arenaPages);
    let a = this.arenas[i];
    if (!a) {
      const pages = Math.min(this.arenaPages, this.nPages - i * this.arenaPages);
      const n = this.opts.nKVHeads * pages * this.opts.pageSize * this.opts.headDim;
      const k = Array.from({ length: this.opts.nLayers }, () => new Float32Array(n));
      const v = Array.from({ length: this.opts.nLayers }, () => new Float32Array(n));
      a = { pages, k, v, k32: k.map((x) => new Uint32Array(x.buffer)), v32: v.map((x) => new Uint32Array(x.buffer)) };
      this.arenas[i] = a;
    }
    return a;
  }

  /** Offset of (page, row 0, head 0) in its arena's arrays and the arena's head stride. */
  private where(id: number): { a: Arena; base: number; headStride: number } {
    const a = this.arena(id);
    const ps = this.opts.pageSize;
    const d = this.opts.headDim;
    return { a, base: (id % this.arenaPages) * ps * d, headStride: a.pages * ps * d };
  }

  /**
   * Writes n token rows of K and V (token-major [rows, nKVHeads·headDim], starting at row `srcRow`)
   * for tokens pos … pos+n−1 of the sequence whose page table is `pt`.
   */
  writeRows(pt: Int32Array, layer: number, k: Float32Array, v: Float32Array, srcRow: number, n: number, pos: number): void {
    const { pageSize: ps, headDim: d, nKVHeads: G } = this.opts;
    const rs = this.rowSize;
    const round = this.opts.dtype === 'f16';
    for (let i = 0; i < n; i++) {
      const t = pos + i;
      const page = pt[Math.floor(t / ps)];
      const { a, base, headStride } = this.where(page);
      const K = a.k[layer];
      const V = a.v[layer];
      const row = base + (t % ps) * d;
      const src = (srcRow + i) * rs;
      for (let h = 0; h < G; h++) {
        const dst = row + h * headStride;
        K.set(k.subarray(src + h * d, src + (h + 1) * d), dst);
        V.set(v.subarray(src + h * d, src + (h + 1) * d), dst);
        if (round) {
          roundF16InPlace(K, dst, d);
          roundF16InPlace(V, dst, d);
        }
      }
    }
  }

  /**
   * Per KV head, the layer's keys and values of tokens [0, nK) as [nK, headDim] arrays: views into
   * the pool when the pages are consecutive in one arena, else gathered (valid until the next call).
   */
  headViews(pt: Int32Array, layer: number, nK: number): { k: Float32Array[]; v: Float32Array[] } {
    return { k: this.heads(pt, layer, nK, 'k'), v: this.heads(pt, layer, nK, 'v') };
  }

  heads(pt: Int32Array, layer: number, nK: number, which: 'k' | 'v'): Float32Array[] {
    const { pageSize: ps, headDim: d, nKVHeads: G } = this.opts;
    const nP = Math.ceil(nK / ps);
    const out: Float32Array[] = [];
    if (nP === 0) return Array.from({ length: G }, () => new Float32Array(0));
    let contiguous = Math.floor(pt[0] / this.arenaPages) === Math.floor(pt[nP - 1] / this.arenaPages);
    for (let i = 1; contiguous && i < nP; i++) contiguous = pt[i] === pt[0] + i;
    if (contiguous) {
      const { a, base, headStride } = this.where(pt[0]);
      const arr = which === 'k' ? a.k[layer] : a.v[layer];
      for (let h = 0; h < G; h++) out.push(arr.subarray(base + h * headStride, base + h * headStride + nK * d));
      return out;
    }
    const slot = which === 'k' ? 0 : G;
    for (let h = 0; h < G; h++) {
      let s = this.scratch[slot + h];
      if (!s || s.length < nK * d) s = this.scratch[slot + h] = new Float32Array(Math.max(nK * d, 2 * (s?.length ?? 0)));
      for (let i = 0; i < nP; i++) {
        const { a, base, headStride } = this.where(pt[i]);
        const arr = which === 'k' ? a.k[layer] : a.v[layer];
        const rows = Math.min(ps, nK - i * ps);
        s.set(arr.subarray(base + h * headStride, base + h * headStride + rows * d), i * ps * d);
      }
      out.push(s.subarray(0, nK * d));
    }
    return out;
  }

  /** The layer's keys and values of tokens [0, nK), token-major [nK, nKVHeads·headDim] (fresh arrays). */
  tokenMajor(pt: Int32Array, layer: number, nK: number): { k: Float32Array; v: Float32Array } {
    const { pageSize: ps, headDim: d, nKVHeads: G } = this.opts;
    const rs = this.rowSize;
    const k = new Float32Array(nK * rs);
    const v = new Float32Array(nK * rs);
    for (let t0 = 0; t0 < nK; t0 += ps) {
      const { a, base, headStride } = this.where(pt[t0 / ps]);
      const K = a.k[layer];
      const V = a.v[layer];
      const rows = Math.min(ps, nK - t0);
      for (let r = 0; r < rows; r++) {
        for (let h = 0; h < G; h++) {
          const src = base + h * headStride + r * d;
          const dst = (t0 + r) * rs + h * d;
          k.set(K.subarray(src, src + d), dst);
          v.set(V.subarray(src, src + d), dst);
        }
      }
    }
    return { k, v };
  }

  async readPage(id: number): Promise<Uint8Array> {
    return this.readPageSync(id);
  }

  readPageSync(id: number): Uint8Array {
    const { nLayers: L, pageSize: ps, headDim: d, nKVHeads: G } = this.opts;
    const { a, base, headStride } = this.where(id);
    const out = new Uint16Array(this.pageBytes / 2);
    const rs = this.rowSize;
    let o = 0;
    for (let l = 0; l < L; l++) {
      for (const [f, u] of [
        [a.k[l], a.k32[l]],
        [a.v[l], a.v32[l]],
      ] as const) {
        for (let r = 0; r < ps; r++) {
          for (let h = 0; h < G; h++) f32BitsToF16(f, u, out, d, base + h * headStride + r * d, o + h * d);
          o += rs;
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
      for (const u of [a.k32[l], a.v32[l]]) {
        for (let r = 0; r < ps; r++) {
          for (let h = 0; h < G; h++) f16ToF32Bits(src, u, d, o + h * d, base + h * headStride + r * d);
          o += rs;
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
        t.a.k[l].set(s.a.k[l].subarray(so, so + n), to);
        t.a.v[l].set(s.a.v[l].subarray(so, so + n), to);
      }
    }
  }

  dispose(): void {
    this.arenas.fill(null);
    this.scratch = [];
  }
}
