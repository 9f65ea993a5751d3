// The WebGPU backend's KV page pool (engine/kv/README.md, "the backend contract").
//
// Layout: a page is pageSize tokens of every layer, K and V, stored as its own serialization —
// [layer][K rows, then V rows][token row][nKVHeads × headDim], head-major within a row — so readPage,
// writePage and copyPage each touch one contiguous range, and attention reads a token's row at
//   page base + layer × 2·pageSize·rowSize + (V ? pageSize·rowSize : 0) + (t mod pageSize)·rowSize.
//
// Element type: with dtype 'f16' (the engine's default) values are halves packed two to a u32 word,
// rounded to nearest-even by kv_write in integer arithmetic (kernels/attention.wgsl f16bits, bit-equal
// to the host's f32ToF16). Why packed halves rather than f32 holding rounded values: half the memory
// and bandwidth for the same exactness, the GPU bytes *are* the serialization (readPage is a copy, no
// conversion), and unpack2x16float needs no `shader-f16` feature, so every adapter runs it. With dtype
// 'f32' values are stored unrounded as f32 and converted to halves on readPage.
//
// Pages sit in arena buffers of at most one storage binding (maxStorageBufferBindingSize: 128 MiB on
// lavapipe), a whole number of pages each, so a page never straddles two; the attention kernels bind
// every arena (at most 8, within maxStorageBuffersPerShaderStage) and pick one per page. Arenas are
// allocated in order on first use (the engine hands out the lowest free page ids first). The pool
// offers fewer pages than asked when the budget (maxBytes) or the arena count says so.
//
// Page tables: one u32 storage buffer per sequence (PagedKV), re-written when its pageTableVersion
// changes (after submitting recorded work that may still read the old one).

import { UserError } from '../../errors.js';
import { f16ToF32Array, f32ToF16Array, u16View } from '../../kv/f16.js';
import type { KVPool, KVPoolOptions, PagedKV } from '../../model/backend.js';

/** What the pool needs from its backend (implemented by WebGPUBackend). */
export interface KVPoolHost {
  readonly device: GPUDevice;
  /** Effective byte limit of one storage binding. */
  readonly maxBinding: number;
  /** Submits recorded work (a queue.writeBuffer issued after it lands after that work). */
  flushRecorded(): void;
  /** Number of submits so far (a buffer last used before the current count is no longer pending). */
  readonly submits: number;
  /** Reads bytes of a buffer after all queued work. */
  readRange(buf: GPUBuffer, offset: number, bytes: number): Promise<ArrayBuffer>;
  /** Records a word copy (src and dst may be the same buffer: disjoint ranges). */
  recordCopyWords(src: GPUBuffer, srcWord: number, dst: GPUBuffer, dstWord: number, words: number): void;
}

/** Most arenas one dispatch binds (attention kernels declare A0..A7). */
export const MAX_ARENAS = 8;
/** Storage bindings of the attention kernels besides the arenas (q, out, lse, page table). */
export const ATTENTION_OTHER_BINDINGS = 4;

interface PageTableState {
  buf: GPUBuffer;
  /** Entries the buffer holds. */
  cap: number;
  version: number;
  /** host.submits when a recorded dispatch last bound it. */
  usedAt: number;
}

export class GpuKVPool implements KVPool {
  readonly nPages: number;
  readonly pageBytes: number;
  /** Bytes of one page in GPU memory (= pageBytes with f16, twice that with f32). */
  readonly gpuPageBytes: number;
  /** Values (K and V, every layer) in one page. */
  readonly pageVals: number;
  readonly pagesPerArena: number;
  readonly rowSize: number;
  readonly f16: boolean;
  readonly arenas: GPUBuffer[] = [];
  private readonly tables = new WeakMap<PagedKV, PageTableState>();
  private readonly tableBuffers = new Set<GPUBuffer>();
  private readonly finalizer = new FinalizationRegistry<GPUBuffer>((b) => {
    if (this.tableBuffers.delete(b)) b.destroy();
  });
  private disposed = false;

  constructor(
    readonly host: KVPoolHost,
    readonly opts: KVPoolOptions,
    maxArenas: number,
  ) {
    const { nLayers, nKVHeads, headDim, pageSize } = opts;
    if (headDim % 4 !== 0) throw new Error(`KV pool: head dim ${headDim} is not a multiple of 4`);
    this.f16 = opts.dtype === 'f16';
    this.rowSize = nKVHeads * headDim;
    this.pageVals = 2 * nLayers * pageSize * this.rowSize;
    this.pageBytes = this.pageVals * 2;
    this.gpuPageBytes = this.pageVals * (this.f16 ? 2 : 4);
    const binding = Math.floor(host.maxBinding / 4) * 4;
    if (this.gpuPageBytes > binding) {
      throw new UserError(
        `one KV page of this model (${pageSize} tokens of all ${nLayers} layers) needs ${mib(this.gpuPageBytes)}, above this GPU's storage binding limit of ${mib(binding)}; use the CPU backend (--backend cpu)`,
      );
    }
    this.pagesPerArena = Math.floor(binding / this.gpuPageBytes);
    const byBudget = opts.maxBytes === undefined ? Infinity : Math.floor(opts.maxBytes / this.gpuPageBytes);
    this.nPages = Math.max(0, Math.min(opts.nPages, byBudget, Math.max(1, maxArenas) * this.pagesPerArena));
  }

  get bytes(): number {
    return this.arenas.reduce((s, b) => s + b.size, 0);
  }

  /** Arenas allocated (the attention kernels bind this many). */
  get arenaCount(): number {
    return this.arenas.length;
  }

  private check(id: number): void {
    if (this.disposed) throw new Error('KV pool was disposed');
    if (!(Number.isInteger(id) && id >= 0 && id < this.nPages)) throw new Error(`KV page ${id} is outside the pool of ${this.nPages} pages`);
  }

  /** Allocates every arena up to the one holding page `id`. */
  ensure(id: number): void {
    this.check(id);
    const a = Math.floor(id / this.pagesPerArena);
    while (this.arenas.length <= a) {
      const i = this.arenas.length;
      const pages = Math.min(this.pagesPerArena, this.nPages - i * this.pagesPerArena);
      this.arenas.push(
        this.host.device.createBuffer({
          size: pages * this.gpuPageBytes,
          usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC | GPUBufferUsage.COPY_DST,
          label: `kv arena ${i}`,
        }),
      );
    }
  }

  /** The arena buffer of page `id` and the page's first byte in it. */
  where(id: number): { buf: GPUBuffer; offset: number } {
    this.ensure(id);
    return { buf: this.arenas[Math.floor(id / this.pagesPerArena)], offset: (id % this.pagesPerArena) * this.gpuPageBytes };
  }

  /**
   * The sequence's page table on the GPU, uploaded again when its version changed; allocates the
   * arenas its pages need. Marks it used by the dispatches about to be recorded.
   */
  pageTable(kv: PagedKV): GPUBuffer {
    let st = this.tables.get(kv);
    const version = kv.pageTableVersion;
    if (!st || st.version !== version) {
      const pt = kv.pageTable;
      let max = -1;
      for (const id of pt) {
        this.check(id);
        if (id > max) max = id;
      }
      if (max >= 0) this.ensure(max);
      // Recorded dispatches may still read the old contents: submit them before overwriting.
      if (st && st.usedAt === this.host.submits) this.host.flushRecorded();
      if (!st || st.cap < pt.length) {
        if (st) this.dropTable(st.buf);
        const cap = Math.max(16, 2 ** Math.ceil(Math.log2(Math.max(1, pt.length))));
        const buf = this.host.device.createBuffer({ size: cap * 4, usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_DST, label: 'kv page table' });
        this.tableBuffers.add(buf);
        this.finalizer.register(kv, buf, buf);
        st = { buf, cap, version, usedAt: -1 };
        this.tables.set(kv, st);
      }
      if (pt.length > 0) this.host.device.queue.writeBuffer(st.buf, 0, pt.buffer, pt.byteOffset, pt.byteLength);
      st.version = version;
    }
    st.usedAt = this.host.submits;
    return st.buf;
  }

  private dropTable(buf: GPUBuffer): void {
    this.finalizer.unregister(buf);
    if (this.tableBuffers.delete(buf)) buf.destroy();
  }

  async readPage(id: number): Promise<Uint8Array> {
    const { buf, offset } = this.where(id);
    const raw = await this.host.readRange(buf, offset, this.gpuPageBytes);
    if (this.f16) return new Uint8Array(raw);
    const out = new Uint16Array(this.pageVals);
    f32ToF16Array(new Float32Array(raw), out);
    return new Uint8Array(out.buffer);
  }

  writePage(id: number, bytes: Uint8Array): void {
    if (bytes.byteLength !== this.pageBytes) throw new Error(`a KV page is ${this.pageBytes} bytes, got ${bytes.byteLength}`);
    const { buf, offset } = this.where(id);
    // Ops issued before this call must see the old page: submit them first (writeBuffer lands
    // before the next submit).
    this.host.flushRecorded();
    if (this.f16) {
      this.host.device.queue.writeBuffer(buf, offset, bytes.buffer, bytes.byteOffset, bytes.byteLength);
    } else {
      const f = new Float32Array(this.pageVals);
      f16ToF32Array(u16View(bytes), f);
      this.host.device.queue.writeBuffer(buf, offset, f.buffer, 0, f.byteLength);
    }
  }

  copyPage(src: number, dst: number): void {
    if (src === dst) {
      this.check(src);
      return;
    }
    const s = this.where(src);
    const d = this.where(dst);
    this.host.recordCopyWords(s.buf, s.offset / 4, d.buf, d.offset / 4, this.gpuPageBytes / 4);
  }

  dispose(): void {
    if (this.disposed) return;
    this.disposed = true;
    for (const b of this.arenas) b.destroy();
    this.arenas.length = 0;
    for (const b of this.tableBuffers) b.destroy();
    this.tableBuffers.clear();
  }
}

function mib(bytes: number): string {
  return bytes >= 2 ** 20 ? `${(bytes / 2 ** 20).toFixed(0)} MiB` : `${(bytes / 1024).toFixed(0)} KiB`;
}
