// Sparse prefill on the WebGPU backend (issue 8): MInference's patterns (engine/attention/sparse/
// patterns.ts is the reference of every step) computed entirely on the GPU, recorded into the step's
// compute pass after the slice's kv_write, with no host round-trip: estimation, top-k, index
// conversion and the sparse flash kernel all read and write one scratch buffer (SP) per batch of query
// heads. kernels/sparse_*.wgsl hold the passes; their headers say what each does.
//
// Per sequence slice of ≥ SPARSE_MIN_ROWS rows with AttentionParams.sparse set:
//   heads are ordered by pattern kind into "slots" (so each estimation dispatch covers one contiguous
//   run of slots), cut into batches whose scratch fits one storage binding (and `scratchBytes`), and
//   for each batch:
//     sparse_init                                  header + (head, kind, budgets) into SP
//     VS slots: vs_rowstats, vs_rowmerge, vs_scores, topk (TOPK_VS)    Â stats, column/diagonal sums,
//                                                  top-k_v columns and top-k_s offsets
//     BS slots: bs_pool, bs_scores, topk (TOPK_BS)  pooled blocks, block scores, top-k blocks per q block
//     sparse_index                                 ranges + columns per 64-row query block, kept entries
//     sparse_flash                                 (out, lse) over the index
//     sparse_lse, sparse_stats                     lse rows into the batch's lse; kept entries counter
//   A call whose heads are all 'dense' takes the dense flash kernel (same result, faster).
//
// Stats: calls and causal entries are counted on the host when recorded; kept entries are summed on
// the GPU into a 64-bit counter that `sync` reads (the backend calls it after each read of results), so
// SparseStats.keptEntries lags until the next read. estimateMs / attentionMs stay 0 here: the passes
// share the step's single compute pass, so there is no per-pass time without splitting it (the
// benchmark sparse-bench.ts times them by synchronizing instead).

import type { AttentionParams, SeqSlice, SparseStats } from '../../model/backend.js';
import type { SparsePattern } from '../../attention/sparse/patterns.js';
import type { KeySelection } from '../../attention/cpu-attention.js';
import type { Defines } from './kernels.js';

type Binding = GPUBuffer | GPUBufferBinding;

/** What the sparse runner needs from the backend (WebGPUBackend.sparseHost()). */
export interface SparseHost {
  readonly device: GPUDevice;
  /** Effective byte limit of one storage binding. */
  readonly maxBinding: number;
  dispatch(file: string, entry: string, defines: Defines, params: number[], bindings: Record<number, Binding>, grid: [number, number?, number?]): void;
  acquire(bytes: number, label?: string): GPUBuffer;
  recycle(b: GPUBuffer): void;
  /** A buffer holding `data` for this step's dispatches. */
  upload(data: ArrayBufferView): GPUBuffer;
  readRange(buf: GPUBuffer, offset: number, bytes: number): Promise<ArrayBuffer>;
  flushRecorded(): void;
}

/** Where one sequence's K/V live, as attentionWithLse resolved them. */
export interface SparseKV {
  paged: boolean;
  f16: boolean;
  /** Paged: {14: page table, 20 + i: arena i}; contiguous: {6: K, 7: V} (this layer). */
  read: Record<number, Binding>;
  /** Paged: (pages per arena, values per page, this layer's offset in a page); contiguous: zeros. */
  paging: [number, number, number];
  /** Paged: PAGE and AR2..AR8. */
  defines: Defines;
}

export interface SparseCall {
  q: GPUBufferBinding;
  out: GPUBufferBinding;
  lse: GPUBufferBinding;
  /** Rows of the batch (the lse buffer's row stride). */
  rows: number;
  s: SeqSlice;
  p: AttentionParams;
  kv: SparseKV;
}

export const KIND: Record<SparsePattern['kind'], number> = { dense: 0, 'a-shape': 1, 'vertical-slash': 2, 'block-sparse': 3 };
const HEADER_WORDS = 32;
const SLOT_HEAD_WORDS = 4;
/** Keys per vs_rowstats workgroup (one split of the last-64-query softmax statistics). */
export const VS_SPLIT = 1024;
/** Default cap on one batch's scratch buffer. */
export const DEFAULT_SCRATCH_BYTES = 256 * 2 ** 20;

/** One query head of a call, in slot order. */
export interface SlotHead {
  h: number;
  kind: number;
  a: number;
  b: number;
}

/** Word offsets of a slot's regions (relative to the slot's base) and the capacities (sparse_common.wgsl header). */
export interface SparseLayout {
  nQ: number;
  nK: number;
  pos: number;
  headDim: number;
  slotWords: number;
  part: number;
  row: number;
  keys: number;
  sel: number;
  kp: number;
  qp: number;
  bsk: number;
  bssel: number;
  idx: number;
  ranges: number;
  cols: number;
  lse: number;
  capV: number;
  capS: number;
  capR: number;
  capRLast: number;
  capC: number;
  capB: number;
  nSplits: number;
  nQB: number;
  nKB: number;
}

export function slotHead(pt: SparsePattern, h: number): SlotHead {
  switch (pt.kind) {
    case 'dense':
      return { h, kind: KIND.dense, a: 0, b: 0 };
    case 'a-shape':
      return { h, kind: KIND['a-shape'], a: pt.sink, b: pt.local };
    case 'vertical-slash':
      return { h, kind: KIND['vertical-slash'], a: pt.vertical, b: pt.slash };
    case 'block-sparse':
      return { h, kind: KIND['block-sparse'], a: pt.blocks, b: 0 };
  }
}

const u32c = (x: number) => Math.max(0, Math.min(0xffffffff, Math.floor(x)));

/**
 * The scratch layout for a call: every slot gets the regions of every kind present (sized for the
 * largest budget), so one layout serves all batches. Range capacity per query block of w rows: slash
 * ranges are w wide but for at most one clipped at key 0 and never touch, so a block has at most
 * 2 + ⌊(nK + 1)/(w + 1)⌋ of them (and at most k_s); A-shape 2; block-sparse one per chosen block.
 */
export function planLayout(slots: SlotHead[], nQ: number, pos: number, headDim: number): SparseLayout {
  const nK = pos + nQ;
  const nQB = Math.ceil(nQ / 64);
  const nKB = Math.ceil(nK / 64);
  const wLast = nQ - 64 * (nQB - 1);
  let capV = 0;
  let capS = 0;
  let capB = 0;
  let vs = false;
  let bs = false;
  for (const s of slots) {
    if (s.kind === KIND['vertical-slash']) {
      vs = true;
      capV = Math.max(capV, Math.min(nK, Math.max(s.a, 30)));
      capS = Math.max(capS, Math.min(nK, Math.max(s.b, 100)));
    } else if (s.kind === KIND['block-sparse']) {
      bs = true;
      capB = Math.max(capB, Math.min(nKB, Math.max(s.a, 3)));
    }
  }
  const vsRanges = (w: number) => (vs ? Math.min(capS, 2 + Math.floor((nK + 1) / (w + 1))) : 0);
  const capR = Math.max(2, capB, vsRanges(64));
  const capRLast = Math.max(2, capB, vsRanges(wLast));
  const capC = capV;
  const nSplits = vs ? Math.ceil(nK / VS_SPLIT) : 0;
  let w = SLOT_HEAD_WORDS;
  const take = (n: number) => {
    const at = w;
    w += n;
    return at;
  };
  const L = {
    nQ,
    nK,
    pos,
    headDim,
    part: take(vs ? nSplits * 64 * 2 : 0),
    row: take(vs ? 64 * 2 : 0),
    keys: take(vs ? 2 * nK : 0),
    sel: take(vs ? 2 + capV + capS : 0),
    kp: take(bs ? nKB * headDim : 0),
    qp: take(bs ? nQB * headDim : 0),
    bsk: take(bs ? nQB * nKB : 0),
    bssel: take(bs ? nQB * (capB + 1) : 0),
    idx: take(nQB * 4),
    ranges: take(((nQB - 1) * capR + capRLast) * 2),
    cols: take(nQB * capC),
    lse: take(nQ),
    capV,
    capS,
    capR,
    capRLast,
    capC,
    capB,
    nSplits,
    nQB,
    nKB,
    slotWords: 0,
  };
  L.slotWords = w;
  return L;
}

/** The 32 header words of sparse_common.wgsl. */
export function headerWords(L: SparseLayout): Uint32Array {
  const h = new Uint32Array(HEADER_WORDS);
  h.set([L.slotWords, L.part, L.row, L.keys, L.sel, L.kp, L.qp, L.bsk, L.bssel, L.idx, L.ranges, L.cols, L.lse, L.capV, L.capS, L.capR, L.capRLast, L.capC, L.capB, L.nSplits, 0, L.nQB, L.nKB, L.headDim]);
  return h;
}

/** A batch's scratch kept for inspection (tests): its words decode with `decodeSlot`. */
export interface SparseCapture {
  sp: GPUBuffer;
  bytes: number;
  layout: SparseLayout;
  slots: SlotHead[];
}

/** Σ over rows i of a slice of min(nK, pos + i + 1): the dense causal entries of one head. */
export function causalEntries(nQ: number, pos: number): number {
  return nQ * pos + (nQ * (nQ + 1)) / 2;
}

export class SparseRunner {
  /** When set, each batch's scratch is kept (not recycled) and pushed here. */
  debug?: SparseCapture[];
  /** Benchmarks: record only the estimation and index passes (no sparse flash, out/lse untouched). */
  indexOnly = false;
  /** Calls that fell back to dense attention because one head's scratch exceeds a storage binding. */
  denseFallbacks = 0;
  /** Kept entries counted on the GPU but not yet added to SparseStats. */
  dirty = false;
  private counter?: GPUBuffer;
  private counted = 0;

  constructor(
    private readonly host: SparseHost,
    private readonly opts: { scratchBytes?: number; workgroupBytes: number },
  ) {}

  /**
   * Records sparse attention for one slice (its K/V already written). Returns false when the caller
   * should run dense attention instead (every head 'dense', or a scratch that cannot fit).
   */
  run(c: SparseCall, stats: SparseStats): boolean {
    const { s, p, kv } = c;
    const patterns = p.sparse!;
    const H = p.nHeads;
    const HD = p.headDim;
    if (patterns.length !== H) throw new Error(`sparse attention: ${patterns.length} patterns for ${H} query heads`);
    const nQ = s.n;
    const nK = s.pos + s.n;
    const causal = causalEntries(nQ, s.pos);
    if (patterns.every((x) => x.kind === 'dense')) {
      stats.calls++;
      stats.keptEntries += causal * H;
      stats.causalEntries += causal * H;
      return false;
    }
    const slots = patterns.map(slotHead).sort((x, y) => x.kind - y.kind || x.h - y.h);
    const L = planLayout(slots, nQ, s.pos, HD);
    const budget = Math.min(this.host.maxBinding, this.opts.scratchBytes ?? DEFAULT_SCRATCH_BYTES);
    const perBatch = Math.floor((budget - HEADER_WORDS * 4) / (L.slotWords * 4));
    if (perBatch < 1) {
      this.denseFallbacks++;
      return false;
    }
    stats.calls++;
    stats.causalEntries += causal * H;
    this.dirty = true;
    const counter = this.statsCounter();
    const header = headerWords(L);
    const wg = this.opts.workgroupBytes;
    let BK = 32;
    while (BK > 4 && (BK * HD + 16 * BK * 4 + 3 * BK + 1) * 4 > wg) BK /= 2;
    let EBK = 32;
    while (EBK > 4 && EBK * HD * 4 > wg) EBK /= 2;
    const QR = Math.max(1, Math.min(64, Math.floor(2048 / HD)));
    const kvDefs: Defines = { HD, KVACCESS: true, KVF16: kv.f16, ...(kv.paged ? { PAGED: true } : {}), ...kv.defines };
    const kRead: Record<number, Binding> = kv.paged ? kv.read : { 6: kv.read[6] };
    const kvRead: Record<number, Binding> = kv.read;
    const maxDim = this.host.device.limits.maxComputeWorkgroupsPerDimension;
    const fold = (n: number) => {
      const gx = Math.max(1, Math.min(n, maxDim));
      return { gx, gy: Math.max(1, Math.ceil(n / gx)) };
    };
    const params = (slot0: number, gridX: number, aux: number) => [
      nQ,
      s.row,
      H * HD,
      p.nKVHeads * HD,
      H / p.nKVHeads,
      s.pos,
      nK,
      f32bits(p.scale),
      c.rows,
      H,
      slot0,
      gridX,
      ...kv.paging,
      aux,
    ];
    for (let b0 = 0; b0 < slots.length; b0 += perBatch) {
      const batch = slots.slice(b0, b0 + perBatch);
      const nb = batch.length;
      const u = new Uint32Array(HEADER_WORDS + nb * SLOT_HEAD_WORDS);
      u.set(header);
      batch.forEach((x, i) => u.set([x.h, x.kind, u32c(x.a), u32c(x.b)], HEADER_WORDS + i * SLOT_HEAD_WORDS));
      const bytes = (HEADER_WORDS + nb * L.slotWords) * 4;
      const sp = this.host.acquire(bytes, 'sparse scratch');
      const SP = { buffer: sp, offset: 0, size: Math.ceil(bytes / 4) * 4 };
      const d = this.host.dispatch.bind(this.host);
      d('sparse_index.wgsl', 'sparse_init', {}, params(0, 1, nb), { 1: SP, 3: this.host.upload(u) }, [1]);
      const run = (kind: number) => {
        const i0 = batch.findIndex((x) => x.kind === kind);
        if (i0 < 0) return null;
        let i1 = i0;
        while (i1 < nb && batch[i1].kind === kind) i1++;
        return { slot0: i0, n: i1 - i0 };
      };
      const vs = run(KIND['vertical-slash']);
      if (vs) {
        const g = fold(L.nSplits);
        d('sparse_estimate.wgsl', 'vs_rowstats', { ...kvDefs, EBK, QR }, params(vs.slot0, g.gx, VS_SPLIT), { 1: SP, 5: c.q, ...kRead }, [g.gx, g.gy, vs.n]);
        d('sparse_index.wgsl', 'vs_rowmerge', {}, params(vs.slot0, 1, VS_SPLIT), { 1: SP }, [1, 1, vs.n]);
        const gs = fold(Math.ceil(nK / 64));
        d('sparse_estimate.wgsl', 'vs_scores', { ...kvDefs, EBK, QR }, params(vs.slot0, gs.gx, 0), { 1: SP, 5: c.q, ...kRead }, [gs.gx, gs.gy, vs.n]);
        d('sparse_topk.wgsl', 'topk', { TOPK_VS: true }, params(vs.slot0, 1, 0), { 1: SP }, [2, 1, vs.n]);
      }
      const bs = run(KIND['block-sparse']);
      if (bs) {
        const gp = fold(L.nKB + L.nQB);
        d('sparse_estimate.wgsl', 'bs_pool', { ...kvDefs, EBK, QR }, params(bs.slot0, gp.gx, 0), { 1: SP, 5: c.q, ...kRead }, [gp.gx, gp.gy, bs.n]);
        const gq = fold(L.nQB);
        d('sparse_index.wgsl', 'bs_scores', {}, params(bs.slot0, gq.gx, 0), { 1: SP }, [gq.gx, gq.gy, bs.n]);
        d('sparse_topk.wgsl', 'topk', { TOPK_BS: true }, params(bs.slot0, gq.gx, 0), { 1: SP }, [gq.gx, gq.gy, bs.n]);
      }
      const gi = fold(Math.ceil(L.nQB / 64));
      d('sparse_index.wgsl', 'sparse_index', {}, params(0, gi.gx, 0), { 1: SP }, [gi.gx, gi.gy, nb]);
      if (this.indexOnly) {
        this.host.recycle(sp);
        continue;
      }
      const gf = fold(Math.ceil(nQ / 16));
      d('sparse_attention.wgsl', 'sparse_flash', { ...kvDefs, BK }, params(0, gf.gx, 0), { 1: SP, 5: c.q, ...kvRead, 8: c.out }, [gf.gx, gf.gy, nb]);
      const gl = fold(Math.ceil(nQ / 64));
      d('sparse_index.wgsl', 'sparse_lse', {}, params(0, gl.gx, 0), { 1: SP, 9: c.lse }, [gl.gx, gl.gy, nb]);
      d('sparse_index.wgsl', 'sparse_stats', {}, params(0, 1, nb), { 1: SP, 4: counter }, [1]);
      if (this.debug) this.debug.push({ sp, bytes, layout: L, slots: batch });
      else this.host.recycle(sp);
    }
    return true;
  }

  private statsCounter(): GPUBuffer {
    this.counter ??= this.host.device.createBuffer({ size: 16, usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC | GPUBufferUsage.COPY_DST, label: 'sparse kept counter' });
    return this.counter;
  }

  /** Adds the kept entries counted on the GPU since the last sync to `stats` (after all queued work). */
  async sync(stats: SparseStats): Promise<void> {
    if (!this.dirty || !this.counter) return;
    this.dirty = false;
    const w = new Uint32Array(await this.host.readRange(this.counter, 0, 8));
    const total = w[0] + w[1] * 2 ** 32;
    stats.keptEntries += total - this.counted;
    this.counted = total;
  }

  /** The vertical-slash index conversion alone for given selections (vsIndexOnGpu; tests). */
  vsIndex(sels: { columns: Int32Array; offsets: Int32Array }[], nQ: number, pos: number): Promise<{ index: KeySelection[]; kept: number[] }[]> {
    return vsIndexOnGpu(this.host, sels, nQ, pos);
  }

  /**
   * Top-k of each list on the GPU (kernels/sparse_topk.wgsl, table mode): the k largest scores, ties
   * toward the lower index, ascending — patterns.ts topK. For tests and benchmarks.
   */
  async topK(lists: { scores: Float32Array | Float64Array; k: number }[]): Promise<Int32Array[]> {
    let w = HEADER_WORDS + lists.length * 4;
    const at = lists.map((x) => {
      const keys = w;
      w += x.scores.length;
      const out = w;
      w += 1 + Math.min(x.k, x.scores.length);
      return { keys, out };
    });
    const words = new Uint32Array(w);
    lists.forEach((x, i) => {
      words.set([at[i].keys, x.scores.length, u32c(x.k), at[i].out], HEADER_WORDS + i * 4);
      for (let j = 0; j < x.scores.length; j++) words[at[i].keys + j] = orderKey(x.scores[j]);
    });
    this.host.flushRecorded();
    const sp = this.host.device.createBuffer({ size: Math.max(16, w * 4), usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC | GPUBufferUsage.COPY_DST, label: 'topk test' });
    this.host.device.queue.writeBuffer(sp, 0, words);
    this.host.dispatch('sparse_topk.wgsl', 'topk', {}, new Array(16).fill(0).map((_, i) => (i === 11 ? lists.length : 0)), { 1: sp }, [lists.length]);
    const back = new Uint32Array(await this.host.readRange(sp, 0, w * 4));
    sp.destroy();
    return lists.map((x, i) => {
      const n = x.scores.length ? back[at[i].out] : 0;
      return Int32Array.from(back.subarray(at[i].out + 1, at[i].out + 1 + n));
    });
  }
}

/**
 * The vertical-slash index conversion alone (sparse_index.wgsl) for given selections, one slot per
 * entry (ascending columns and offsets, as topK returns them): tests of Alg. 4 on arbitrary inputs.
 * Returns each slot's selections per query block and their kept entries.
 */
export async function vsIndexOnGpu(host: SparseHost, sels: { columns: Int32Array; offsets: Int32Array }[], nQ: number, pos: number): Promise<{ index: KeySelection[]; kept: number[] }[]> {
  const slots = sels.map((x, h) => ({ h, kind: KIND['vertical-slash'], a: x.columns.length, b: x.offsets.length }));
  const L = planLayout(slots, nQ, pos, 4);
  const words = new Uint32Array(HEADER_WORDS + slots.length * L.slotWords);
  words.set(headerWords(L));
  sels.forEach((x, i) => {
    const base = HEADER_WORDS + i * L.slotWords;
    words.set([i, slots[i].kind, slots[i].a, slots[i].b], base);
    words[base + L.sel] = x.columns.length;
    words.set(x.columns, base + L.sel + 1);
    words[base + L.sel + 1 + L.capV] = x.offsets.length;
    words.set(x.offsets, base + L.sel + 2 + L.capV);
  });
  host.flushRecorded();
  const sp = host.device.createBuffer({ size: words.byteLength, usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC | GPUBufferUsage.COPY_DST, label: 'vs index test' });
  host.device.queue.writeBuffer(sp, 0, words);
  const gx = Math.ceil(L.nQB / 64);
  host.dispatch('sparse_index.wgsl', 'sparse_index', {}, [nQ, 0, 0, 0, 1, pos, pos + nQ, 0, nQ, slots.length, 0, gx, 0, 0, 0, 0], { 1: sp }, [gx, 1, slots.length]);
  const back = new Uint32Array(await host.readRange(sp, 0, words.byteLength));
  sp.destroy();
  return slots.map((s, i) => decodeSlot(back, L, i, { ...s, kind: -1 }));
}

const f32v = new Float32Array(1);
const u32v = new Uint32Array(f32v.buffer);
function f32bits(x: number): number {
  f32v[0] = x;
  return u32v[0];
}

/** okey of sparse_common.wgsl: the f32 as a u32 in float order (+∞ → INF_KEY). */
export function orderKey(x: number): number {
  f32v[0] = x === 0 ? 0 : x;
  const u = u32v[0];
  return (u & 0x80000000 ? ~u : u | 0x80000000) >>> 0;
}

/** The inverse of orderKey. */
export function keyValue(k: number): number {
  u32v[0] = k & 0x80000000 ? k & 0x7fffffff : ~k >>> 0;
  return f32v[0];
}

/** One slot of a capture, decoded (tests): every intermediate result the passes left in SP. */
export interface DecodedSlot {
  head: SlotHead;
  /** VS: (m, l) of each of the last L rows. */
  rowStats?: Float32Array;
  /** VS: vertical scores by column and slash scores by offset (Infinity where forced). */
  vertical?: Float32Array;
  slash?: Float32Array;
  columns?: Int32Array;
  offsets?: Int32Array;
  /** BS: per query block, the block scores (visible blocks) and the chosen blocks. */
  blockScores?: Float32Array[];
  blocks?: Int32Array[];
  /** The index: one selection per 64-row query block, and the entries each block computes. */
  index: KeySelection[];
  kept: number[];
  lse: Float32Array;
}

export function decodeSlot(words: Uint32Array, L: SparseLayout, slot: number, head: SlotHead): DecodedSlot {
  const base = HEADER_WORDS + slot * L.slotWords;
  const f = new Float32Array(words.buffer, words.byteOffset, words.length);
  const r: DecodedSlot = { head, index: [], kept: [], lse: Float32Array.from(f.subarray(base + L.lse, base + L.lse + L.nQ)) };
  const { nK } = L;
  if (head.kind === KIND['vertical-slash']) {
    const rows = Math.min(64, L.nQ);
    r.rowStats = Float32Array.from(f.subarray(base + L.row, base + L.row + rows * 2));
    r.vertical = Float32Array.from(words.subarray(base + L.keys, base + L.keys + nK), keyValue);
    r.slash = Float32Array.from(words.subarray(base + L.keys + nK, base + L.keys + 2 * nK), keyValue);
    const cv = base + L.sel;
    r.columns = Int32Array.from(words.subarray(cv + 1, cv + 1 + words[cv]));
    const cs = cv + 1 + L.capV;
    r.offsets = Int32Array.from(words.subarray(cs + 1, cs + 1 + words[cs]));
  }
  if (head.kind === KIND['block-sparse']) {
    r.blockScores = [];
    r.blocks = [];
    for (let b = 0; b < L.nQB; b++) {
      const horizon = Math.min(nK, L.pos + Math.min(L.nQ, (b + 1) * 64));
      const visible = Math.ceil(horizon / 64);
      const k0 = base + L.bsk + b * L.nKB;
      r.blockScores.push(Float32Array.from(words.subarray(k0, k0 + visible), keyValue));
      const c0 = base + L.bssel + b * (L.capB + 1);
      r.blocks.push(Int32Array.from(words.subarray(c0 + 1, c0 + 1 + words[c0])));
    }
  }
  for (let b = 0; b < L.nQB; b++) {
    const hdr = base + L.idx + b * 4;
    const nr = words[hdr];
    const nc = words[hdr + 1];
    const R = base + L.ranges + b * L.capR * 2;
    const ranges: [number, number][] = [];
    for (let i = 0; i < nr; i++) ranges.push([words[R + 2 * i], words[R + 2 * i + 1]]);
    const C = base + L.cols + b * L.capC;
    r.index.push({ ranges, columns: Int32Array.from(words.subarray(C, C + nc)) });
    r.kept.push(words[hdr + 2]);
  }
  return r;
}
