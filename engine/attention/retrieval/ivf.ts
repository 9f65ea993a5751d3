// IVF baseline: k-means (L2) over the keys, each key in the list of its nearest centroid; a search
// scores the centroids by inner product with the query (as Faiss's IVF with METRIC_INNER_PRODUCT)
// and scans the `nprobe` best lists exactly. With q and k from different distributions the centroid
// score is a poor guide to the best key in a list — RetrievalAttention measured 30–50% of keys
// scanned for recall@100 ≥ 0.95 (seed_systems.md §2.1) — which is what this baseline is here to show.
// nprobe = nlist is an exact scan.
import { ByteReader, ByteWriter } from './binary.js';
import type { RetrievalIndex, SearchOptions, SearchResult } from './types.js';
import { dot, KeyStore, TopK } from './vectors.js';
import { Rng } from '../../model/rng.js';

export interface IVFParams {
  /** Lists (default ≈ √n, Faiss's lower guidance; kept small because k-means runs in plain TS). */
  nlist?: number;
  /** Lists probed per search (default 8). */
  nprobe?: number;
  /** k-means iterations (default 8) over a sample of at most `trainPerList`·nlist keys (default 32). */
  iters?: number;
  trainPerList?: number;
  seed?: number;
}

/** Index of the nearest centroid (L2) to row `o` of `x`: argmin ‖c‖² − 2·x·c. */
function nearest(x: Float32Array, o: number, cent: Float32Array, cnorm: Float64Array, nlist: number, d: number): number {
  let best = 0;
  let bd = Infinity;
  for (let c = 0; c < nlist; c++) {
    const v = cnorm[c] - 2 * dot(x, o, cent, c * d, d);
    if (v < bd) {
      bd = v;
      best = c;
    }
  }
  return best;
}

function norms(cent: Float32Array, nlist: number, d: number): Float64Array {
  const n = new Float64Array(nlist);
  for (let c = 0; c < nlist; c++) n[c] = dot(cent, c * d, cent, c * d, d);
  return n;
}

/** Plain Lloyd k-means on `rows` [n, d]; empty clusters re-seeded from random rows. */
export function kmeans(rows: Float32Array, n: number, d: number, nlist: number, iters: number, rng: Rng): Float32Array {
  const cent = new Float32Array(nlist * d);
  // distinct random rows as the first centroids
  const pick = new Set<number>();
  while (pick.size < Math.min(nlist, n)) pick.add(rng.int(n));
  [...pick].forEach((r, c) => cent.set(rows.subarray(r * d, (r + 1) * d), c * d));
  const assign = new Int32Array(n);
  const sum = new Float64Array(nlist * d);
  const count = new Int32Array(nlist);
  for (let it = 0; it < iters; it++) {
    const cn = norms(cent, nlist, d);
    for (let i = 0; i < n; i++) assign[i] = nearest(rows, i * d, cent, cn, nlist, d);
    sum.fill(0);
    count.fill(0);
    for (let i = 0; i < n; i++) {
      const c = assign[i];
      count[c]++;
      for (let t = 0; t < d; t++) sum[c * d + t] += rows[i * d + t];
    }
    for (let c = 0; c < nlist; c++) {
      if (count[c] === 0) {
        const r = rng.int(n);
        cent.set(rows.subarray(r * d, (r + 1) * d), c * d);
      } else for (let t = 0; t < d; t++) cent[c * d + t] = sum[c * d + t] / count[c];
    }
  }
  return cent;
}

export class IVFIndex implements RetrievalIndex {
  readonly kind = 'ivf' as const;
  /** Members of each list (rows, ascending), with their counts. */
  private lists: Int32Array[];
  private listLen: Int32Array;
  private cnorm: Float64Array;

  private constructor(
    readonly keys: KeyStore,
    readonly base: number,
    readonly centroids: Float32Array,
    readonly nlist: number,
    public nprobe: number,
  ) {
    this.lists = Array.from({ length: nlist }, () => new Int32Array(16));
    this.listLen = new Int32Array(nlist);
    this.cnorm = norms(centroids, nlist, keys.d);
  }

  static build(keys: Float32Array, d: number, base: number, p: IVFParams = {}): IVFIndex {
    const store = KeyStore.from(keys, d);
    const n = store.size;
    const nlist = Math.max(1, Math.min(n, p.nlist ?? Math.round(Math.sqrt(n))));
    const rng = new Rng(p.seed ?? 1);
    const train = Math.min(n, (p.trainPerList ?? 32) * nlist);
    let sample = store.rows();
    if (train < n) {
      sample = new Float32Array(train * d);
      for (let i = 0; i < train; i++) {
        const r = rng.int(n);
        sample.set(store.row(r), i * d);
      }
    }
    const cent = n ? kmeans(sample, train, d, nlist, p.iters ?? 8, rng) : new Float32Array(nlist * d);
    const ix = new IVFIndex(store, base, cent, nlist, Math.min(nlist, p.nprobe ?? 8));
    ix.assignFrom(0);
    return ix;
  }

  get d(): number {
    return this.keys.d;
  }
  get size(): number {
    return this.keys.size;
  }

  private add(list: number, row: number): void {
    let a = this.lists[list];
    const n = this.listLen[list];
    if (n === a.length) {
      const b = new Int32Array(2 * a.length);
      b.set(a);
      this.lists[list] = a = b;
    }
    a[n] = row;
    this.listLen[list] = n + 1;
  }

  /** New keys go to the list of their nearest centroid (centroids stay fixed, as in Faiss). */
  append(keys: Float32Array): void {
    const first = this.keys.size;
    this.keys.append(keys);
    this.assignFrom(first);
  }

  private assignFrom(first: number): void {
    const d = this.d;
    const data = this.keys.data;
    for (let r = first; r < this.keys.size; r++) this.add(nearest(data, r * d, this.centroids, this.cnorm, this.nlist, d), r);
  }

  search(q: Float32Array, k: number, opts: SearchOptions = {}): SearchResult {
    const d = this.d;
    const nprobe = Math.min(this.nlist, opts.nprobe ?? this.nprobe);
    const lists = new TopK(nprobe);
    for (let c = 0; c < this.nlist; c++) lists.push(dot(q, 0, this.centroids, c * d, d), c);
    const top = new TopK(Math.max(1, k));
    const data = this.keys.data;
    let scanned = this.nlist;
    for (let i = 0; i < lists.size; i++) {
      const c = lists.id[i];
      const mem = this.lists[c];
      const len = this.listLen[c];
      scanned += len;
      for (let j = 0; j < len; j++) {
        const r = mem[j];
        const s = dot(q, 0, data, r * d, d);
        if (s >= top.min()) top.push(s, r);
      }
    }
    const ids = top.sorted().ids;
    for (let i = 0; i < ids.length; i++) ids[i] += this.base;
    return { ids, scanned };
  }

  serialize(): Uint8Array {
    const w = new ByteWriter();
    w.u32(this.base);
    w.u32(this.size);
    w.json({ nlist: this.nlist, nprobe: this.nprobe });
    w.array(this.centroids);
    const assign = new Int32Array(this.size);
    for (let c = 0; c < this.nlist; c++) for (let j = 0; j < this.listLen[c]; j++) assign[this.lists[c][j]] = c;
    w.array(assign);
    return w.finish();
  }

  static deserialize(body: Uint8Array, keys: KeyStore): IVFIndex {
    const r = new ByteReader(body);
    const base = r.u32();
    const size = r.u32();
    const p = r.json<{ nlist: number; nprobe: number }>();
    const cent = r.f32();
    const assign = r.i32();
    if (size !== keys.size || assign.length !== size || cent.length !== p.nlist * keys.d) throw new Error('IVF index does not match its keys');
    const ix = new IVFIndex(keys, base, cent, p.nlist, p.nprobe);
    for (let row = 0; row < size; row++) {
      if (assign[row] < 0 || assign[row] >= p.nlist) throw new Error('IVF index: list id out of range');
      ix.add(assign[row], row);
    }
    return ix;
  }

  structureBytes(): number {
    let b = this.centroids.byteLength + this.cnorm.byteLength + this.listLen.byteLength;
    for (const l of this.lists) b += l.byteLength;
    return b;
  }
}
