// The attention-aware graph index (RetrievalAttention §3.2, RoarGraph-style projection), over the keys
// of one KV head, searched greedily by inner product at decode.
//
// Build, from queries sampled during prefill (the query distribution, not the key distribution):
//   1. the bipartite graph, from one pass of exact inner products: each sampled query → its top-`knn`
//      keys, and each key → its best query (by q·k/‖q‖, as RoarGraph links every base vector to its
//      nearest query, so that no key is left out);
//   2. projection onto keys only, each query replaced by its best key (its "pivot"):
//        - a tree over the query's ranked keys, each key hanging under the best-ranked key before it
//          that has fewer than `fan` children here and room left (pivot → ranks 1..fan, rank 1 → the
//          next fan, …): every key of the list a few hops from the pivot, no key over `degree`;
//        - each listed key → the query's top `ascend` keys (a greedy walk climbs toward what similar
//          queries ranked first);
//        - keys in no list hang under the least loaded key of their best query's list, and point to
//          its top keys;
//        - optionally (`qlinks`), the pivots of the nearest sampled queries linked both ways.
//      Per key, tree links rank first, then overlay, then ascending edges, each by how many queries
//      produced them; at most `degree` are kept;
//   3. `random` shortcuts per key (Kleinberg's small world). Before the router (below) the projected
//      graph was a forest of query neighbourhoods that a walk from fixed entries could not cross; two
//      shortcuts per key took recall@100 at 32K on the OOD data from 0.68 to 0.92. With the router
//      they only add scanned keys on that data (recall 0.966 at 2.2% with, at 1.4% without), but on
//      the constructed induction model the needle's key is in no sampled query's list and is reached
//      only through them (test/retrieval/engine-retrieval.test.ts fails without), so they stay on;
//   4. whatever the entry points still cannot reach is linked NSW-style: a beam search by L2 (K→K, in
//      distribution) finds its nearest keys, linked both ways.
// `append` links a new key like a key in no list (its best stored query), or by L2 without queries.
// Search: best-first beam search of width `ef` by q·k, seeded with a few fixed entry points (pivots of
// evenly spaced sampled queries) and by a router over the sampled queries: the `routeEntries` sampled
// queries nearest the decode query (L2, through ⌈√m⌉ k-means clusters, `routeProbe` probed) give
// their two best keys. `scanned` counts every d-wide product: keys, router centroids, router queries.
//
// Differences from the paper, on purpose: one graph per KV head from the pooled queries of its query
// heads (the paper builds per query head); the products run for sampled queries only (every query
// would cost as much as dense attention, issue 9); no RNG-style occlusion pruning (pairwise key
// distances would cost more than the products at these degrees).
import { ByteReader, ByteWriter } from './binary.js';
import type { RetrievalIndex, SearchOptions, SearchResult } from './types.js';
import { kmeans } from './ivf.js';
import { dist2, dot, exactTopK, KeyStore, MaxHeap, TopK } from './vectors.js';
import { Rng } from '../../model/rng.js';

export interface GraphParams {
  /** Exact neighbours per sampled query (query → key edges; default 64). */
  knn?: number;
  /** Out-edges kept per key from the projection (default 24). */
  degree?: number;
  /** Extra slots per key for links added later (insertion, append; default 16). */
  slack?: number;
  /** Fan-out of the tree over each query's ranked keys (default 8). */
  fan?: number;
  /** Edges from each listed key back to the query's top keys (default 2). */
  ascend?: number;
  /** Pivot links to the nearest sampled queries' pivots (default 0: the router does this job better). */
  qlinks?: number;
  /** Query-space router: k-means clusters of the sampled queries (default ⌈√m⌉), clusters probed per search (default 2), nearest member queries whose top keys seed the walk (default 8). */
  routes?: number;
  routeProbe?: number;
  routeEntries?: number;
  /** Fixed entry points (default 8). */
  entries?: number;
  /** Default beam width at search (default 128). */
  ef?: number;
  /** Beam width and links when linking a key by L2 (defaults 32 and 8). */
  insertEf?: number;
  insertLinks?: number;
  /** Random out-edges added per key after the projection (small-world shortcuts; default 2, see step 3). */
  random?: number;
  /** Link every key by L2 after the projection, not only unreachable ones (default false). */
  l2all?: boolean;
  /** `append` links new keys through the stored sampled queries (default true; else by L2). */
  keepQueries?: boolean;
}

const DEFAULTS: Required<GraphParams> = { knn: 64, degree: 24, slack: 16, fan: 8, ascend: 2, qlinks: 0, routes: 0, routeProbe: 2, routeEntries: 8, entries: 8, ef: 128, insertEf: 32, insertLinks: 8, random: 2, l2all: false, keepQueries: true };

export interface GraphBuildStats {
  queries: number;
  /** Keys in at least one sampled query's list. */
  covered: number;
  /** Keys linked by L2 because the projection left them unreachable. */
  inserted: number;
  knnMs: number;
  projectMs: number;
  insertMs: number;
}

export class GraphIndex implements RetrievalIndex {
  readonly kind = 'graph' as const;
  readonly p: Required<GraphParams>;
  /** Out-edges: row r's neighbours are adj[r·cap .. r·cap + deg[r]). */
  private adj: Int32Array;
  private deg: Uint16Array;
  private entries: Int32Array = new Int32Array(0);
  private visited: Uint32Array;
  private stamp = 0;
  private frontier = new MaxHeap(512);
  private lastScanned = 0;
  /** Stored sampled queries [m, d] and their lists [m, knn] (for `append`). */
  private queries: Float32Array = new Float32Array(0);
  /** Router: centroids [R, d] of the sampled queries; cluster c's queries are routeMembers[routeOffsets[c] .. routeOffsets[c+1]). */
  private routeCentroids: Float32Array = new Float32Array(0);
  private routeOffsets: Int32Array = new Int32Array(0);
  private routeMembers: Int32Array = new Int32Array(0);
  private lists: Int32Array = new Int32Array(0);
  stats: GraphBuildStats | null = null;

  private constructor(
    readonly keys: KeyStore,
    readonly base: number,
    p: GraphParams,
  ) {
    this.p = { ...DEFAULTS, ...p };
    const n = Math.max(16, keys.size);
    this.adj = new Int32Array(n * this.cap);
    this.deg = new Uint16Array(n);
    this.visited = new Uint32Array(n);
  }

  private get cap(): number {
    return this.p.degree + this.p.slack;
  }
  private get m(): number {
    return this.lists.length / Math.max(1, this.p.knn);
  }

  get d(): number {
    return this.keys.d;
  }
  get size(): number {
    return this.keys.size;
  }

  /**
   * Builds over keys [n, d] (positions base ..) from sampled prefill queries [m, d] (any query heads of
   * this KV head, any positions). With m = 0 it is a plain key-only NSW graph (the ablation).
   */
  static build(keys: Float32Array, d: number, base: number, queries: Float32Array, params: GraphParams = {}): GraphIndex {
    const g = new GraphIndex(KeyStore.from(keys, d), base, params);
    const n = g.size;
    const m = n ? queries.length / d : 0;
    const knn = Math.min(g.p.knn, n);
    g.p.knn = knn;
    const { degree, ascend, fan } = g.p;
    const stats: GraphBuildStats = { queries: m, covered: 0, inserted: 0, knnMs: 0, projectMs: 0, insertMs: 0 };

    let t = performance.now();
    const best = { query: new Int32Array(n), score: new Float64Array(n) };
    const lists = m && knn ? exactTopK(queries, m, g.keys.data, 0, n, d, knn, best) : new Int32Array(0);
    stats.knnMs = performance.now() - t;

    t = performance.now();
    // candidate edges (src → dst); duplicates count as weight
    // Kinds rank before counts when a key has more candidates than `degree`: the tree and the links of
    // keys in no list first (they are what makes every key reachable), then the pivot overlay, then
    // the ascending edges.
    const src: number[] = [];
    const dst: number[] = [];
    const kind: number[] = [];
    const TREE = 0;
    const OVERLAY = 1;
    const ASCEND = 2;
    const edge = (a: number, b: number, k: number) => {
      if (a !== b && a >= 0 && b >= 0) {
        src.push(a);
        dst.push(b);
        kind.push(k);
      }
    };
    // Tree edges are placed where there is room: a key at the top of many lists would otherwise get
    // far more children than `degree` and lose some, leaving them unreachable.
    const load = new Uint16Array(n);
    const covered = new Uint8Array(n);
    const kids = new Uint8Array(knn);
    for (let q = 0; q < m; q++) {
      const o = q * knn;
      for (let i = 0; i < knn; i++) covered[lists[o + i]] = 1;
      kids.fill(0);
      let ptr = 0;
      for (let i = 1; i < knn; i++) {
        while (ptr < i && (kids[ptr] >= fan || load[lists[o + ptr]] >= degree)) ptr++;
        let par = ptr;
        if (par === i) {
          par = 0;
          for (let a = 1; a < i; a++) if (load[lists[o + a]] < load[lists[o + par]]) par = a;
        }
        kids[par]++;
        load[lists[o + par]]++;
        edge(lists[o + par], lists[o + i], TREE);
        for (let a = 0; a < Math.min(ascend, i); a++) edge(lists[o + i], lists[o + a], ASCEND);
      }
    }
    for (let r = 0; r < n; r++) stats.covered += covered[r];
    if (m)
      for (let r = 0; r < n; r++) {
        if (covered[r]) continue;
        const o = best.query[r] * knn;
        let par = 0;
        for (let a = 1; a < knn; a++) if (load[lists[o + a]] < load[lists[o + par]]) par = a;
        load[lists[o + par]]++;
        edge(lists[o + par], r, TREE);
        for (let a = 0; a < Math.min(ascend, knn); a++) edge(r, lists[o + a], ASCEND);
      }
    const ql = Math.min(g.p.qlinks, m - 1);
    if (ql > 0) {
      const stride = Math.max(1, Math.ceil(m / 8192)); // bounds the m² pass on huge samples
      const top = new TopK(ql);
      for (let a = 0; a < m; a++) {
        top.reset();
        for (let b = a % stride; b < m; b += stride) if (b !== a) top.push(-dist2(queries, a * d, queries, b * d, d), b);
        for (let i = 0; i < top.size; i++) {
          edge(lists[a * knn], lists[top.id[i] * knn], OVERLAY);
          edge(lists[top.id[i] * knn], lists[a * knn], OVERLAY);
        }
      }
    }
    g.project(src, dst, kind, degree);
    // entry points: pivots of evenly spaced sampled queries (distinct), else evenly spaced keys
    const ent = new Set<number>();
    const want = Math.min(g.p.entries, n);
    if (m) for (let i = 0; i < want; i++) ent.add(lists[Math.floor(((i + 0.5) * m) / want) * knn]);
    if (ent.size === 0) for (let i = 0; i < want; i++) ent.add(Math.floor(((i + 0.5) * n) / want));
    g.entries = Int32Array.from(ent);
    if (m) {
      // Router: queries are in distribution with each other, so the decode query's nearest sampled
      // queries (by L2; an IVF over the queries: k-means clusters, then their members) found their
      // best keys where its own are — the walk starts in the right region instead of climbing there
      // from fixed entries, which strands queries whose topic few sampled queries asked about
      // (measured at 32K: recall 0 for 3 of 64 query heads without a router).
      const R = Math.max(1, Math.min(m, g.p.routes || Math.ceil(Math.sqrt(m))));
      const cent = kmeans(queries, m, d, R, 6, new Rng(R));
      const cn = new Float64Array(R);
      for (let c = 0; c < R; c++) cn[c] = dot(cent, c * d, cent, c * d, d);
      const owner = new Int32Array(m);
      const count = new Int32Array(R + 1);
      for (let q = 0; q < m; q++) {
        let bc = 0;
        let bd = Infinity;
        for (let c = 0; c < R; c++) {
          const v = cn[c] - 2 * dot(queries, q * d, cent, c * d, d);
          if (v < bd) (bd = v), (bc = c);
        }
        owner[q] = bc;
        count[bc + 1]++;
      }
      for (let c = 0; c < R; c++) count[c + 1] += count[c];
      const fill = count.slice(0, R);
      const members = new Int32Array(m);
      for (let q = 0; q < m; q++) members[fill[owner[q]]++] = q;
      g.routeCentroids = cent;
      g.routeOffsets = count;
      g.routeMembers = members;
    }
    if (m) {
      g.queries = queries.slice(0, m * d);
      g.lists = lists;
    }
    stats.projectMs = performance.now() - t;

    t = performance.now();
    if (g.p.random > 0) {
      let h = 0x9e3779b9;
      for (let r = 0; r < n; r++)
        for (let i = 0; i < g.p.random; i++) {
          h = (Math.imul(h, 1664525) + 1013904223) >>> 0;
          g.addEdge(r, h % n);
        }
    }
    if (g.p.l2all) for (let r = 0; r < n; r++) g.linkL2(r, null);
    stats.inserted = g.connect();
    stats.insertMs = performance.now() - t;
    g.stats = stats;
    return g;
  }

  /** Keeps, per source, `degree` candidate edges: best kind, then most produced, then first produced. */
  private project(src: number[], dst: number[], kind: number[], degree: number): void {
    const order = Int32Array.from(src.keys()).sort((a, b) => src[a] - src[b] || dst[a] - dst[b] || a - b);
    const cand: { dst: number; kind: number; w: number; first: number }[] = [];
    for (let e = 0; e < order.length; ) {
      const s = src[order[e]];
      cand.length = 0;
      while (e < order.length && src[order[e]] === s) {
        const dd = dst[order[e]];
        const first = order[e];
        let w = 0;
        let k = kind[first];
        for (; e < order.length && src[order[e]] === s && dst[order[e]] === dd; e++) {
          w++;
          k = Math.min(k, kind[order[e]]);
        }
        cand.push({ dst: dd, kind: k, w, first });
      }
      cand.sort((a, b) => a.kind - b.kind || b.w - a.w || a.first - b.first);
      const k = Math.min(degree, cand.length);
      for (let i = 0; i < k; i++) this.adj[s * this.cap + i] = cand[i].dst;
      this.deg[s] = k;
    }
  }

  /** Links (by L2) every key the entry points cannot reach; returns how many. */
  private connect(): number {
    const n = this.size;
    const reached = new Uint8Array(n);
    const stack: number[] = [];
    const mark = (r: number) => {
      if (reached[r]) return;
      reached[r] = 1;
      stack.push(r);
      while (stack.length) {
        const x = stack.pop()!;
        for (let j = 0; j < this.deg[x]; j++) {
          const y = this.adj[x * this.cap + j];
          if (!reached[y]) {
            reached[y] = 1;
            stack.push(y);
          }
        }
      }
    };
    for (const x of this.entries) mark(x);
    let linked = 0;
    for (let r = 0; r < n; r++) {
      if (reached[r]) continue;
      this.linkL2(r, reached);
      linked++;
      mark(r);
    }
    return linked;
  }

  /** Adds edge a → b: a free slot, else a slack slot (chosen by b) overwritten; no duplicates. */
  private addEdge(a: number, b: number): void {
    const cap = this.cap;
    const o = a * cap;
    for (let j = 0; j < this.deg[a]; j++) if (this.adj[o + j] === b) return;
    if (this.deg[a] < cap) this.adj[o + this.deg[a]++] = b;
    else if (this.p.slack > 0) this.adj[o + this.p.degree + (b % this.p.slack)] = b;
  }

  /** Links row r to its nearest keys by L2 among the rows `allow` admits (all when null), both ways. */
  private linkL2(r: number, allow: Uint8Array | null): void {
    const found = this.beam(this.keys.data, r * this.d, this.p.insertEf, true, r, allow);
    const near = found.sorted().ids.subarray(0, Math.min(this.p.insertLinks, found.size));
    for (const y of near) {
      this.addEdge(r, y);
      this.addEdge(y, r);
    }
  }

  /** Links row r through its best stored query (by q·k/‖q‖), as build links keys in no list. */
  private linkByQuery(r: number): void {
    const { d } = this;
    const knn = this.p.knn;
    const data = this.keys.data;
    let bq = 0;
    let bs = -Infinity;
    for (let q = 0; q < this.m; q++) {
      const s = dot(this.queries, q * d, data, r * d, d) / Math.sqrt(Math.max(1e-30, dot(this.queries, q * d, this.queries, q * d, d)));
      if (s > bs) {
        bs = s;
        bq = q;
      }
    }
    const o = bq * knn;
    let par = 0;
    for (let a = 1; a < knn; a++) if (this.deg[this.lists[o + a]] < this.deg[this.lists[o + par]]) par = a;
    this.addEdge(this.lists[o + par], r);
    for (let a = 0; a < Math.min(this.p.ascend, knn); a++) this.addEdge(r, this.lists[o + a]);
  }

  private growTo(n: number): void {
    if (this.deg.length >= n) return;
    const m = Math.max(n, 2 * this.deg.length);
    const adj = new Int32Array(m * this.cap);
    adj.set(this.adj);
    this.adj = adj;
    const deg = new Uint16Array(m);
    deg.set(this.deg);
    this.deg = deg;
    this.visited = new Uint32Array(m);
    this.stamp = 0;
  }

  /** New keys (positions base+size ..): linked through the stored queries, or by L2 without them. */
  append(keys: Float32Array): void {
    const first = this.keys.size;
    this.keys.append(keys);
    this.growTo(this.keys.size);
    for (let r = first; r < this.keys.size; r++) {
      if (this.entries.length === 0) this.entries = Int32Array.of(r);
      else if (this.m > 0 && this.p.keepQueries) this.linkByQuery(r);
      else this.linkL2(r, null);
    }
  }

  /**
   * Best-first beam search from the entry points. Scores are q·k (MIPS), or −‖q − k‖² when `l2`.
   * `skip` is never scored (the row being linked); `allow`, when given, limits the walk.
   * Returns the best `ef` found; this.lastScanned counts scored keys.
   */
  private beam(q: Float32Array, qo: number, ef: number, l2: boolean, skip: number, allow: Uint8Array | null): TopK {
    const d = this.d;
    const data = this.keys.data;
    const cap = this.cap;
    if (++this.stamp === 0xffffffff) {
      this.visited.fill(0);
      this.stamp = 1;
    }
    const stamp = this.stamp;
    const vis = this.visited;
    const res = new TopK(ef);
    const fr = this.frontier;
    fr.reset();
    let scanned = 0;
    if (skip >= 0) vis[skip] = stamp;
    const seed = (x: number) => {
      if (x < 0 || vis[x] === stamp || (allow && !allow[x])) return;
      vis[x] = stamp;
      const s = l2 ? -dist2(q, qo, data, x * d, d) : dot(q, qo, data, x * d, d);
      scanned++;
      res.push(s, x);
      fr.push(s, x);
    };
    for (let i = 0; i < this.entries.length; i++) seed(this.entries[i]);
    const R = this.routeCentroids.length / d;
    if (!l2 && R > 0 && this.p.routeProbe > 0) {
      // nearest clusters, then their nearest member queries; seed those queries' two best keys.
      // Centroid and query distances count as scanned (one d-wide product each, like a key).
      const near = new TopK(Math.min(R, this.p.routeProbe));
      for (let c = 0; c < R; c++) near.push(-dist2(q, qo, this.routeCentroids, c * d, d), c);
      scanned += R;
      const mq = new TopK(this.p.routeEntries);
      for (let i = 0; i < near.size; i++) {
        const c = near.id[i];
        for (let j = this.routeOffsets[c]; j < this.routeOffsets[c + 1]; j++) {
          const x = this.routeMembers[j];
          mq.push(-dist2(q, qo, this.queries, x * d, d), x);
          scanned++;
        }
      }
      const knn = this.p.knn;
      for (let i = 0; i < mq.size; i++) for (let r = 0; r < Math.min(2, knn); r++) seed(this.lists[mq.id[i] * knn + r]);
    }
    while (fr.size) {
      if (res.full() && fr.topScore() < res.min()) break;
      const c = fr.pop();
      const o = c * cap;
      const nc = this.deg[c];
      for (let j = 0; j < nc; j++) {
        const y = this.adj[o + j];
        if (vis[y] === stamp) continue;
        vis[y] = stamp;
        if (allow && !allow[y]) continue;
        const s = l2 ? -dist2(q, qo, data, y * d, d) : dot(q, qo, data, y * d, d);
        scanned++;
        if (s >= res.min()) {
          res.push(s, y);
          fr.push(s, y);
        }
      }
    }
    this.lastScanned = scanned;
    return res;
  }

  search(q: Float32Array, k: number, opts: SearchOptions = {}): SearchResult {
    if (this.size === 0 || k <= 0) return { ids: new Int32Array(0), scanned: 0 };
    const ef = Math.max(k, opts.ef ?? this.p.ef);
    const res = this.beam(q, 0, ef, false, -1, null);
    const ids = res.sorted().ids.slice(0, k);
    for (let i = 0; i < ids.length; i++) ids[i] += this.base;
    return { ids, scanned: this.lastScanned };
  }

  serialize(): Uint8Array {
    const w = new ByteWriter();
    w.u32(this.base);
    w.u32(this.size);
    w.json(this.p);
    w.array(this.entries);
    const n = this.size;
    w.array(this.deg.slice(0, n));
    let total = 0;
    for (let r = 0; r < n; r++) total += this.deg[r];
    const flat = new Int32Array(total);
    let o = 0;
    for (let r = 0; r < n; r++) {
      flat.set(this.adj.subarray(r * this.cap, r * this.cap + this.deg[r]), o);
      o += this.deg[r];
    }
    w.array(flat);
    w.array(this.queries);
    w.array(this.lists);
    w.array(this.routeCentroids);
    w.array(this.routeOffsets);
    w.array(this.routeMembers);
    return w.finish();
  }

  static deserialize(body: Uint8Array, keys: KeyStore): GraphIndex {
    const r = new ByteReader(body);
    const base = r.u32();
    const size = r.u32();
    const p = r.json<Required<GraphParams>>();
    const entries = r.i32();
    const deg = r.u16();
    const flat = r.i32();
    const queries = r.f32();
    const lists = r.i32();
    const routeCentroids = r.f32();
    const routeOffsets = r.i32();
    const routeMembers = r.i32();
    if (size !== keys.size || deg.length !== size) throw new Error('graph index does not match its keys');
    const g = new GraphIndex(keys, base, p);
    const m = lists.length / Math.max(1, p.knn);
    if (queries.length !== m * keys.d) throw new Error('graph index: stored queries inconsistent');
    g.entries = entries;
    g.queries = queries;
    g.lists = lists;
    const R = routeCentroids.length / keys.d;
    if ((R > 0 && routeOffsets.length !== R + 1) || routeMembers.length !== (R > 0 ? m : 0) || (R > 0 && routeOffsets[R] !== m)) throw new Error('graph index: router inconsistent');
    for (let c = 0; c < R; c++) if (routeOffsets[c] > routeOffsets[c + 1] || routeOffsets[c] < 0) throw new Error('graph index: router inconsistent');
    for (let i = 0; i < routeMembers.length; i++) if (routeMembers[i] < 0 || routeMembers[i] >= m) throw new Error('graph index: router member out of range');
    g.routeCentroids = routeCentroids;
    g.routeOffsets = routeOffsets;
    g.routeMembers = routeMembers;
    let o = 0;
    for (let x = 0; x < size; x++) {
      if (deg[x] > g.cap || o + deg[x] > flat.length) throw new Error('graph index: bad degree');
      g.adj.set(flat.subarray(o, o + deg[x]), x * g.cap);
      g.deg[x] = deg[x];
      o += deg[x];
    }
    if (o !== flat.length) throw new Error('graph index: edge count mismatch');
    for (const a of [flat, entries, lists]) for (let i = 0; i < a.length; i++) if (a[i] < 0 || a[i] >= size) throw new Error('graph index: id out of range');
    return g;
  }

  structureBytes(): number {
    return this.adj.byteLength + this.deg.byteLength + this.visited.byteLength + this.entries.byteLength + this.queries.byteLength + this.lists.byteLength + this.routeCentroids.byteLength + this.routeOffsets.byteLength + this.routeMembers.byteLength;
  }
}
