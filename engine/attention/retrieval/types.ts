// The one interface every retrieval index implements (flat scan, IVF, attention-aware graph).
// Ids are key *positions* in the sequence: row r of an index is position `base + r`, rows are
// appended in position order (the static sink precedes `base`; the recent window follows the last row).
import type { KeyStore } from './vectors.js';

export type IndexKind = 'flat' | 'ivf' | 'graph';

export interface SearchResult {
  /** Key positions, best inner product first (at most k). */
  ids: Int32Array;
  /** Keys whose inner product with the query was computed (entry points and centroids included as key-equivalents). */
  scanned: number;
}

export interface SearchOptions {
  /** Graph: beam width (≥ k; default the index's setting). */
  ef?: number;
  /** IVF: lists probed (default the index's setting). */
  nprobe?: number;
}

export interface RetrievalIndex {
  readonly kind: IndexKind;
  readonly d: number;
  /** Position of row 0. */
  readonly base: number;
  /** Rows indexed (positions base .. base+size−1). */
  readonly size: number;
  /** The indexed keys (the index's own copy). */
  readonly keys: KeyStore;
  /** Top-k keys by inner product q·k (MIPS: attention scores are q·k). */
  search(q: Float32Array, k: number, opts?: SearchOptions): SearchResult;
  /** Adds the next rows (positions base+size ..), [m, d] contiguous. */
  append(keys: Float32Array): void;
  /** The index's structure and parameters (not its keys: they live in the KV pages). */
  serialize(): Uint8Array;
  /** Bytes of the structure in memory (keys excluded). */
  structureBytes(): number;
}
