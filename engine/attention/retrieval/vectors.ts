// Plain-TypeScript vector helpers for retrieval: a growable row store, inner products, bounded
// heaps and the exact top-k by inner product (MIPS) that every index is measured against.
// Everything is f32 storage with f64-free hot loops (four accumulators: V8 keeps them in registers).

/** Rows of `d` floats, appended in order; `data` may be reallocated by `append` (read it fresh). */
export class KeyStore {
  data: Float32Array;
  size = 0;

  constructor(
    readonly d: number,
    capacity = 0,
  ) {
    this.data = new Float32Array(Math.max(1, capacity) * d);
  }

  /** A store holding a copy of `rows` ([n, d] contiguous). */
  static from(rows: Float32Array, d: number): KeyStore {
    const s = new KeyStore(d, rows.length / d);
    s.append(rows);
    return s;
  }

  /** Appends rows ([m, d] contiguous); amortized doubling. */
  append(rows: Float32Array): void {
    const m = rows.length / this.d;
    if (!Number.isInteger(m)) throw new Error(`KeyStore.append: ${rows.length} floats is not a multiple of d=${this.d}`);
    const need = (this.size + m) * this.d;
    if (need > this.data.length) {
      const next = new Float32Array(Math.max(need, 2 * this.data.length));
      next.set(this.data.subarray(0, this.size * this.d));
      this.data = next;
    }
    this.data.set(rows, this.size * this.d);
    this.size += m;
  }

  row(i: number): Float32Array {
    return this.data.subarray(i * this.d, (i + 1) * this.d);
  }

  /** The stored rows, [size, d] (a view). */
  rows(): Float32Array {
    return this.data.subarray(0, this.size * this.d);
  }

  bytes(): number {
    return this.size * this.d * 4;
  }
}

/** a[ao .. ao+d) · b[bo .. bo+d) */
export function dot(a: Float32Array, ao: number, b: Float32Array, bo: number, d: number): number {
  let s0 = 0;
  let s1 = 0;
  let s2 = 0;
  let s3 = 0;
  let t = 0;
  for (; t + 4 <= d; t += 4) {
    s0 += a[ao + t] * b[bo + t];
    s1 += a[ao + t + 1] * b[bo + t + 1];
    s2 += a[ao + t + 2] * b[bo + t + 2];
    s3 += a[ao + t + 3] * b[bo + t + 3];
  }
  for (; t < d; t++) s0 += a[ao + t] * b[bo + t];
  return s0 + s1 + s2 + s3;
}

/** Squared L2 distance between two rows. */
export function dist2(a: Float32Array, ao: number, b: Float32Array, bo: number, d: number): number {
  let s0 = 0;
  let s1 = 0;
  let t = 0;
  for (; t + 2 <= d; t += 2) {
    const x = a[ao + t] - b[bo + t];
    const y = a[ao + t + 1] - b[bo + t + 1];
    s0 += x * x;
    s1 += y * y;
  }
  for (; t < d; t++) {
    const x = a[ao + t] - b[bo + t];
    s0 += x * x;
  }
  return s0 + s1;
}

/**
 * Bounded min-heap of (score, id): keeps the `cap` largest scores seen. `min()` is the admission
 * threshold once full. Ties are broken by id (smaller id wins) so results are deterministic.
 */
export class TopK {
  readonly score: Float64Array;
  readonly id: Int32Array;
  size = 0;

  constructor(readonly cap: number) {
    this.score = new Float64Array(cap);
    this.id = new Int32Array(cap);
  }

  reset(): void {
    this.size = 0;
  }

  full(): boolean {
    return this.size >= this.cap;
  }

  /** Smallest kept score (−∞ while not full). */
  min(): number {
    return this.size < this.cap ? -Infinity : this.score[0];
  }

  /** Whether (s, i) ranks below (t, j): lower score, or equal score and larger id. */
  private static below(s: number, i: number, t: number, j: number): boolean {
    return s < t || (s === t && i > j);
  }

  /** Offers (s, i); returns whether it was kept. */
  push(s: number, i: number): boolean {
    const sc = this.score;
    const id = this.id;
    if (this.size < this.cap) {
      let c = this.size++;
      while (c > 0) {
        const p = (c - 1) >> 1;
        if (!TopK.below(s, i, sc[p], id[p])) break;
        sc[c] = sc[p];
        id[c] = id[p];
        c = p;
      }
      sc[c] = s;
      id[c] = i;
      return true;
    }
    if (!TopK.below(sc[0], id[0], s, i)) return false;
    // replace the root and sift down
    let c = 0;
    const n = this.size;
    for (;;) {
      const l = 2 * c + 1;
      if (l >= n) break;
      const r = l + 1;
      const m = r < n && TopK.below(sc[r], id[r], sc[l], id[l]) ? r : l;
      if (!TopK.below(sc[m], id[m], s, i)) break;
      sc[c] = sc[m];
      id[c] = id[m];
      c = m;
    }
    sc[c] = s;
    id[c] = i;
    return true;
  }

  /** The kept ids, best first (and their scores). */
  sorted(): { ids: Int32Array; scores: Float64Array } {
    const order = Array.from({ length: this.size }, (_, j) => j).sort((a, b) => this.score[b] - this.score[a] || this.id[a] - this.id[b]);
    return { ids: Int32Array.from(order, (j) => this.id[j]), scores: Float64Array.from(order, (j) => this.score[j]) };
  }
}

/** Max-heap of (score, id): the frontier of a best-first graph search. */
export class MaxHeap {
  score: Float64Array;
  id: Int32Array;
  size = 0;

  constructor(capacity = 256) {
    this.score = new Float64Array(capacity);
    this.id = new Int32Array(capacity);
  }

  reset(): void {
    this.size = 0;
  }

  push(s: number, i: number): void {
    if (this.size === this.score.length) {
      const sc = new Float64Array(2 * this.size);
      sc.set(this.score);
      const id = new Int32Array(2 * this.size);
      id.set(this.id);
      this.score = sc;
      this.id = id;
    }
    const sc = this.score;
    const id = this.id;
    let c = this.size++;
    while (c > 0) {
      const p = (c - 1) >> 1;
      if (sc[p] >= s) break;
      sc[c] = sc[p];
      id[c] = id[p];
      c = p;
    }
    sc[c] = s;
    id[c] = i;
  }

  topScore(): number {
    return this.score[0];
  }

  /** Removes the best; returns its id (its score was topScore()). */
  pop(): number {
    const sc = this.score;
    const id = this.id;
    const top = id[0];
    const n = --this.size;
    if (n === 0) return top;
    const s = sc[n];
    const i = id[n];
    let c = 0;
    for (;;) {
      const l = 2 * c + 1;
      if (l >= n) break;
      const r = l + 1;
      const m = r < n && sc[r] > sc[l] ? r : l;
      if (sc[m] <= s) break;
      sc[c] = sc[m];
      id[c] = id[m];
      c = m;
    }
    sc[c] = s;
    id[c] = i;
    return top;
  }
}

/**
 * Exact top-k keys by inner product for each query row: queries [m, d], keys [n, d] rows [from, to).
 * Returns ids [m, k] best first (row numbers of `keys`; −1 pads when fewer than k keys exist).
 * Queries go four at a time so each key row is read once per block (the bandwidth-bound part).
 * With `best`, also each key's best query by q·k/‖q‖ (the bipartite graph's key → query edge), for
 * free from the same products.
 */
export function exactTopK(
  queries: Float32Array,
  m: number,
  keys: Float32Array,
  from: number,
  to: number,
  d: number,
  k: number,
  best?: { query: Int32Array; score: Float64Array },
): Int32Array {
  const out = new Int32Array(m * k).fill(-1);
  const heaps = [new TopK(k), new TopK(k), new TopK(k), new TopK(k)];
  const inv = new Float64Array(m);
  for (let q = 0; q < m; q++) inv[q] = 1 / Math.sqrt(Math.max(1e-30, dot(queries, q * d, queries, q * d, d)));
  if (best) {
    best.query.fill(-1);
    best.score.fill(-Infinity);
  }
  for (let q0 = 0; q0 < m; q0 += 4) {
    const nb = Math.min(4, m - q0);
    for (const h of heaps) h.reset();
    const o0 = q0 * d;
    const o1 = (q0 + Math.min(1, nb - 1)) * d;
    const o2 = (q0 + Math.min(2, nb - 1)) * d;
    const o3 = (q0 + Math.min(3, nb - 1)) * d;
    const [h0, h1, h2, h3] = heaps;
    for (let j = from; j < to; j++) {
      const ko = j * d;
      let s0 = 0;
      let s1 = 0;
      let s2 = 0;
      let s3 = 0;
      for (let t = 0; t < d; t++) {
        const x = keys[ko + t];
        s0 += queries[o0 + t] * x;
        s1 += queries[o1 + t] * x;
        s2 += queries[o2 + t] * x;
        s3 += queries[o3 + t] * x;
      }
      if (s0 >= h0.min()) h0.push(s0, j);
      if (nb > 1 && s1 >= h1.min()) h1.push(s1, j);
      if (nb > 2 && s2 >= h2.min()) h2.push(s2, j);
      if (nb > 3 && s3 >= h3.min()) h3.push(s3, j);
      if (best) {
        const r = j - from;
        let bs = best.score[r];
        let bq = best.query[r];
        let v = s0 * inv[q0];
        if (v > bs) (bs = v), (bq = q0);
        if (nb > 1 && (v = s1 * inv[q0 + 1]) > bs) (bs = v), (bq = q0 + 1);
        if (nb > 2 && (v = s2 * inv[q0 + 2]) > bs) (bs = v), (bq = q0 + 2);
        if (nb > 3 && (v = s3 * inv[q0 + 3]) > bs) (bs = v), (bq = q0 + 3);
        best.score[r] = bs;
        best.query[r] = bq;
      }
    }
    for (let b = 0; b < nb; b++) out.set(heaps[b].sorted().ids, (q0 + b) * k);
  }
  return out;
}
