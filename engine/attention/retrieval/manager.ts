// Retrieval indexes of one sequence, per (layer, KV head): the hooks the engine calls.
//
//   prefill   observePrefillQueries(layer, kvHead, q, pos0, rows) — every query row the prefill computes
//             for the KV head's group; the manager keeps a sample (every `sampleEvery`-th position, plus
//             the last `lastQueries` positions: the sparse-prefill estimation queries), so keeping them
//             costs a copy of ~1/sampleEvery of the queries;
//   build     build(layer, kvHead, k, n) once the prefill's keys are in the cache (or lazily at the first
//             decode step): the index over positions [sink, n − window) from the kept queries, which are
//             then dropped;
//   decode    attend(layer, kvHead, input) — split attention (attention.ts); keys that left the recent
//             window are appended to the index a page (64) at a time, so the window is 512..575 keys;
//   persist   save(dir, address) / load(dir, address, keysOf) — one file per (layer, KV head), named and
//             checksummed by the caller's content address (the KV page hash of the covered prefix).
// Below `minContext` keys the caller should stay dense (`useRetrieval(n)`): at short contexts the
// static window is most of the keys and an index does not pay for itself.
import { existsSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { retrievalAttention, RETRIEVAL_DEFAULTS, type RetrievalInput, type RetrievalOptions, type RetrievalResult } from './attention.js';
import { FlatIndex } from './flat.js';
import { GraphIndex, type GraphParams } from './graph.js';
import { IVFIndex, type IVFParams } from './ivf.js';
import { loadIndex, saveIndex } from './persist.js';
import type { IndexKind, RetrievalIndex, SearchOptions } from './types.js';

export interface RetrievalStore {
  dir: string;
  /** Content address of this sequence's first `end` tokens (a KV page hash), null off a page boundary. */
  addressAt(end: number): string | null;
  onBad?: (reason: string) => void;
}

export interface RetrievalShape {
  nLayers: number;
  nKVHeads: number;
  /** Query heads per KV head. */
  group: number;
  headDim: number;
}

export interface RetrievalConfig {
  sink: number;
  window: number;
  topK: number;
  kind: IndexKind;
  gqa: 'union' | 'per-head';
  /** Keep the prefill queries of every n-th position (all heads of the group; default 100 ≈ 1% of dense prefill attention's products). */
  sampleEvery: number;
  /** Also keep the last n prefill positions' queries (default 64). */
  lastQueries: number;
  /** Keys appended to the index per step of the window (default 64, a KV page). */
  appendChunk: number;
  /** Dense below this many keys (default 16384). */
  minContext: number;
  graph: GraphParams;
  ivf: IVFParams;
  search: SearchOptions;
}

export const DEFAULT_RETRIEVAL_CONFIG: RetrievalConfig = {
  ...RETRIEVAL_DEFAULTS,
  kind: 'graph',
  gqa: 'union',
  sampleEvery: 100,
  lastQueries: 64,
  appendChunk: 64,
  minContext: 16384,
  graph: {},
  ivf: {},
  search: {},
};

interface Slot {
  /** Kept query rows [rows, d] and their positions. */
  sampled: Float32Array[];
  /** The last `lastQueries` positions seen: ring of [group·d] rows. */
  tail: Map<number, Float32Array>;
  index: RetrievalIndex | null;
  buildMs: number;
}

export class RetrievalIndexManager {
  readonly cfg: RetrievalConfig;
  private slots: Slot[];
  /** A fork shares its parent's indexes read-only: it never appends (keys past them attend exactly). */
  private frozen = false;
  /**
   * Persistence (set by the engine for paged sequences with a disk cache): built indexes are saved
   * under the content address of the prefix they cover (the KV page hash at its end), and a slot
   * without an index first looks for a stored one at any page boundary of this sequence's prefix.
   */
  private store: RetrievalStore | null = null;
  /** Indexes loaded from disk and saved, for stats and tests. */
  loaded = 0;
  saved = 0;

  setStore(store: RetrievalStore | null): void {
    this.store = store;
  }

  constructor(
    readonly shape: RetrievalShape,
    cfg: Partial<RetrievalConfig> = {},
  ) {
    this.cfg = { ...DEFAULT_RETRIEVAL_CONFIG, ...cfg };
    this.slots = Array.from({ length: shape.nLayers * shape.nKVHeads }, () => ({ sampled: [], tail: new Map(), index: null, buildMs: 0 }));
  }

  private slot(layer: number, kvHead: number): Slot {
    const s = this.slots[layer * this.shape.nKVHeads + kvHead];
    if (!s) throw new Error(`no retrieval slot for layer ${layer}, KV head ${kvHead}`);
    return s;
  }

  useRetrieval(n: number): boolean {
    return n >= Math.max(this.cfg.minContext, this.cfg.sink + this.cfg.window + this.cfg.topK);
  }

  /**
   * Prefill hook: q [rows, group·d] holds the group's query heads for positions pos0 .. pos0+rows−1.
   * Copies the sampled rows (as [group, d] each); nothing else is retained.
   */
  observePrefillQueries(layer: number, kvHead: number, q: Float32Array, pos0: number, rows: number): void {
    const s = this.slot(layer, kvHead);
    const w = this.shape.group * this.shape.headDim;
    const every = Math.max(1, this.cfg.sampleEvery);
    for (let i = 0; i < rows; i++) {
      const p = pos0 + i;
      const row = q.subarray(i * w, (i + 1) * w);
      if ((p + 1) % every === 0) s.sampled.push(row.slice());
      else if (this.cfg.lastQueries > 0) {
        s.tail.set(p, row.slice());
        if (s.tail.size > this.cfg.lastQueries) s.tail.delete(s.tail.keys().next().value as number);
      }
    }
  }

  /** Query rows kept for (layer, kvHead), [m, d]. */
  keptQueries(layer: number, kvHead: number): Float32Array {
    const s = this.slot(layer, kvHead);
    const rows = [...s.sampled, ...s.tail.values()];
    const out = new Float32Array(rows.length * this.shape.group * this.shape.headDim);
    rows.forEach((r, i) => out.set(r, i * r.length));
    return out;
  }

  /** Builds the index of (layer, kvHead) over keys k [≥ n, d] by position; drops the kept queries. */
  build(layer: number, kvHead: number, k: Float32Array, n: number): RetrievalIndex {
    const s = this.slot(layer, kvHead);
    const { sink, window, appendChunk } = this.cfg;
    const d = this.shape.headDim;
    // cover up to a chunk boundary at least `window` keys before the end
    const end = Math.max(sink, sink + Math.floor(Math.max(0, n - window - sink) / appendChunk) * appendChunk);
    const keys = k.subarray(sink * d, end * d);
    const t = performance.now();
    const queries = this.keptQueries(layer, kvHead);
    // No sampled queries (a sequence whose prefix came from the cache, its stored index unusable): an
    // attention-aware graph has nothing to learn from, so the slot scans exactly until rebuilt.
    const kind = this.cfg.kind === 'graph' && queries.length === 0 ? 'flat' : this.cfg.kind;
    s.index = kind === 'flat' ? FlatIndex.build(keys, d, sink) : kind === 'ivf' ? IVFIndex.build(keys, d, sink, this.cfg.ivf) : GraphIndex.build(keys, d, sink, queries, this.cfg.graph);
    s.buildMs = performance.now() - t;
    s.sampled = [];
    s.tail.clear();
    return s.index;
  }

  index(layer: number, kvHead: number): RetrievalIndex | null {
    return this.slot(layer, kvHead).index;
  }

  /** Brings the index up to a chunk boundary ≥ `window` keys before n (keys that left the window). */
  catchUp(layer: number, kvHead: number, k: Float32Array, n: number): void {
    const ix = this.slot(layer, kvHead).index;
    if (!ix) return;
    const { window, appendChunk } = this.cfg;
    const d = this.shape.headDim;
    let end = ix.base + ix.size;
    while (end + appendChunk <= n - window) {
      ix.append(k.subarray(end * d, (end + appendChunk) * d));
      end += appendChunk;
    }
  }

  /**
   * A manager for a sequence forked from this one (same prefix): it shares the built indexes without
   * copying and never appends to them (splitKeys attends the keys past them exactly), so neither
   * sequence can see the other's later keys. Slots without an index yet build their own from the
   * parent's sampled queries.
   */
  fork(): RetrievalIndexManager {
    const f = new RetrievalIndexManager(this.shape, this.cfg);
    // Not built yet: the fork keeps the prefill's sampled queries too, to build its own attention-aware index.
    f.slots = this.slots.map((s) => (s.index ? { sampled: [], tail: new Map(), index: s.index, buildMs: 0 } : { sampled: s.sampled.slice(), tail: new Map(s.tail), index: null, buildMs: 0 }));
    f.frozen = true;
    return f;
  }

  /** The sequence was cut to n tokens: indexes reaching past n and kept queries past n are dropped. */
  truncate(n: number): void {
    for (const s of this.slots) {
      if (s.index && s.index.base + s.index.size > n) {
        s.index = null;
        s.buildMs = 0;
      }
      for (const p of [...s.tail.keys()]) if (p >= n) s.tail.delete(p);
    }
  }

  /** Decode step for (layer, kvHead): builds lazily, catches up, then split attention. */
  attend(layer: number, kvHead: number, input: RetrievalInput): RetrievalResult {
    const s = this.slot(layer, kvHead);
    if (!s.index) {
      if (!this.loadStored(layer, kvHead, input)) {
        this.build(layer, kvHead, input.k, input.n);
        this.saveStored(layer, kvHead);
      }
    } else if (!this.frozen) this.catchUp(layer, kvHead, input.k, input.n);
    const opts: RetrievalOptions = { sink: this.cfg.sink, window: this.cfg.window, topK: this.cfg.topK, gqa: this.cfg.gqa, search: this.cfg.search };
    return retrievalAttention(input, s.index, opts);
  }

  /** A stored index for this slot at the longest page boundary of the prefix that has one. */
  private loadStored(layer: number, kvHead: number, input: RetrievalInput): boolean {
    const st = this.store;
    if (!st) return false;
    const { sink, window, appendChunk } = this.cfg;
    let end = sink + Math.floor(Math.max(0, input.n - window - sink) / appendChunk) * appendChunk;
    for (; end > sink; end -= appendChunk) {
      const address = st.addressAt(end);
      if (!address) continue;
      const path = RetrievalIndexManager.path(st.dir, address, layer, kvHead);
      if (!existsSync(path)) continue;
      const ix = loadIndex(path, `${address}/${layer}/${kvHead}`, input.k, st.onBad);
      if (!ix) continue; // damaged or not these keys: rebuilt below (onBad heard why)
      const s = this.slot(layer, kvHead);
      s.index = ix;
      s.sampled = [];
      s.tail.clear();
      this.loaded++;
      return true;
    }
    return false;
  }

  private saveStored(layer: number, kvHead: number): void {
    const st = this.store;
    const ix = this.slot(layer, kvHead).index;
    if (!st || !ix) return;
    const address = st.addressAt(ix.base + ix.size);
    if (!address) return;
    try {
      mkdirSync(st.dir, { recursive: true });
      saveIndex(RetrievalIndexManager.path(st.dir, address, layer, kvHead), ix, `${address}/${layer}/${kvHead}`);
      this.saved++;
    } catch (e) {
      st.onBad?.(`could not save a retrieval index in ${st.dir} (${(e as Error).message}); it stays in memory`);
    }
  }

  /** File of (layer, kvHead) for a content address. */
  static path(dir: string, address: string, layer: number, kvHead: number): string {
    return join(dir, `${address}.L${layer}.H${kvHead}.ridx`);
  }

  /** Writes every built index (atomically, each under `address/layer/kvHead`); returns bytes written. */
  save(dir: string, address: string): number {
    let bytes = 0;
    for (let l = 0; l < this.shape.nLayers; l++)
      for (let h = 0; h < this.shape.nKVHeads; h++) {
        const ix = this.slot(l, h).index;
        if (ix) bytes += saveIndex(RetrievalIndexManager.path(dir, address, l, h), ix, `${address}/${l}/${h}`);
      }
    return bytes;
  }

  /**
   * Loads the indexes of `address`; keysOf(layer, kvHead) gives that head's keys by position. Returns
   * the (layer, kvHead) pairs that could not be loaded (missing or bad: `onBad` hears why) — the caller
   * rebuilds those with `build` (from queries it observes again, or key-only when there are none).
   */
  load(dir: string, address: string, keysOf: (layer: number, kvHead: number) => Float32Array, onBad?: (reason: string) => void): [number, number][] {
    const missing: [number, number][] = [];
    for (let l = 0; l < this.shape.nLayers; l++)
      for (let h = 0; h < this.shape.nKVHeads; h++) {
        const ix = loadIndex(RetrievalIndexManager.path(dir, address, l, h), `${address}/${l}/${h}`, keysOf(l, h), onBad);
        this.slot(l, h).index = ix;
        if (!ix) missing.push([l, h]);
      }
    return missing;
  }

  /** Memory: index structures and their key copies, and kept queries. */
  stats(): { indexes: number; structureBytes: number; keyBytes: number; queryBytes: number; buildMs: number } {
    let indexes = 0;
    let structureBytes = 0;
    let keyBytes = 0;
    let queryBytes = 0;
    let buildMs = 0;
    for (const s of this.slots) {
      if (s.index) {
        indexes++;
        structureBytes += s.index.structureBytes();
        keyBytes += s.index.keys.bytes();
      }
      for (const r of s.sampled) queryBytes += r.byteLength;
      for (const r of s.tail.values()) queryBytes += r.byteLength;
      buildMs += s.buildMs;
    }
    return { indexes, structureBytes, keyBytes, queryBytes, buildMs };
  }
}
