// Synthetic keys and queries with RetrievalAttention's out-of-distribution property (seed_systems.md
// §2.1): queries and keys come from different distributions, so the keys nearest a query in key space
// are not the ones it attends. For tests and `repokv bench retrieval` when no captured K/Q is given.
//
// Model (one KV head, G query heads; the first half of the channels is "semantic", the rest "nuisance"):
//   - the sequence is made of runs (mean `runMean` tokens) on topics (files, functions); topic t has a
//     centre c_t ~ N(0, I) in the semantic channels. A key is
//       semantic:  μ_k + σ_s·(c_t + 0.7·ε_j)                  (small spread: what queries look for)
//       nuisance:  μ_k + positional sinusoids + σ_n·ζ_j        (large spread, a few outlier channels)
//     so the keys' geometry (L2 clusters, K→K neighbours) is dominated by channels queries ignore;
//   - a query of head h about topic t is μ_q^h + γ·unit(c_t + 0.7·ξ) in the semantic channels and a
//     small noise in the nuisance ones: large exactly where keys vary little (Mahalanobis ≫ keys'),
//     its best keys those of topic t whose ε points along ξ;
//   - prefill queries at position i ask about the current run's topic (60%) or an earlier one; decode
//     queries ask about any topic of the context; each query head of the group picks its own topic
//     half of the time.
// The positional sinusoids stand in for RoPE's slow channels; no real rotation is applied.
import { Rng } from '../../model/rng.js';

export interface OodSpec {
  n: number;
  d: number;
  /** Query heads sharing the KV head. */
  group: number;
  seed?: number;
  /** Mean run length in tokens (default 128). */
  runMean?: number;
  /** Topics (default max(64, n/256)). */
  topics?: number;
  /** Query signal norm γ relative to √d (default 2.5: top-100 holds a fair share of the attention). */
  gain?: number;
}

export interface OodData {
  spec: Required<OodSpec>;
  /** [n, d] */
  k: Float32Array;
  v: Float32Array;
  /** Topic of each position. */
  topic: Int32Array;
  /** Position where each topic first appears (−1: never). */
  firstSeen: Int32Array;
  /** Internal state for queries. */
  centres: Float32Array;
  scale: Float32Array;
  qMean: Float32Array[];
  qNoise: Float32Array;
}

export function oodKeys(spec: OodSpec): OodData {
  const s: Required<OodSpec> = { seed: 1, runMean: 128, topics: Math.max(64, Math.floor(spec.n / 256)), gain: 2.5, ...spec };
  const { n, d, topics: T } = s;
  const rng = new Rng(s.seed);
  const ds = d >> 1;
  const kMean = new Float32Array(d);
  for (let t = 0; t < d; t++) kMean[t] = 0.3 * rng.normal();
  for (let i = 0; i < Math.max(1, d >> 5); i++) kMean[ds + rng.int(d - ds)] = (rng.uniform() < 0.5 ? -1 : 1) * 6;
  const scale = new Float32Array(d);
  for (let t = 0; t < d; t++) scale[t] = t < ds ? 0.3 + 0.4 * rng.uniform() : 1 + rng.uniform();
  const freq = new Float64Array(d);
  for (let t = ds; t < d; t++) freq[t] = Math.pow(10000, -(t - ds) / (d - ds));
  const phase = new Float64Array(d);
  for (let t = ds; t < d; t++) phase[t] = 2 * Math.PI * rng.uniform();
  const centres = rng.fillNormal(new Float32Array(T * d), 1);
  const topic = new Int32Array(n);
  const firstSeen = new Int32Array(T).fill(-1);
  for (let j = 0; j < n; ) {
    const len = 1 + Math.floor(-Math.log(1 - rng.uniform()) * s.runMean);
    const t = rng.int(T);
    for (let e = Math.min(n, j + len); j < e; j++) topic[j] = t;
  }
  for (let j = 0; j < n; j++) if (firstSeen[topic[j]] < 0) firstSeen[topic[j]] = j;
  const k = new Float32Array(n * d);
  for (let j = 0; j < n; j++) {
    const c = topic[j] * d;
    for (let t = 0; t < ds; t++) k[j * d + t] = kMean[t] + scale[t] * (centres[c + t] + 0.7 * rng.normal());
    for (let t = ds; t < d; t++) k[j * d + t] = kMean[t] + 2 * Math.sin(j * freq[t] + phase[t]) + scale[t] * rng.normal();
  }
  const v = rng.fillNormal(new Float32Array(n * d), 1);
  // query side: its own mean (per head around a shared one), signal in the semantic channels only
  const shared = new Float32Array(d);
  for (let t = 0; t < d; t++) shared[t] = (t < ds ? 1 : 0.3) * rng.normal();
  const qMean = Array.from({ length: s.group }, () => {
    const m = new Float32Array(d);
    for (let t = 0; t < d; t++) m[t] = shared[t] + (t < ds ? 0.5 : 0.1) * rng.normal();
    return m;
  });
  const qNoise = new Float32Array(d);
  for (let t = 0; t < d; t++) qNoise[t] = t < ds ? 0.3 : 0.1;
  return { spec: s, k, v, topic, firstSeen, centres, scale, qMean, qNoise };
}

function queryAbout(data: OodData, h: number, t: number, rng: Rng, out: Float32Array, o: number): void {
  const { d, gain } = data.spec;
  const ds = d >> 1;
  const dir = new Float64Array(ds);
  let nrm = 0;
  for (let i = 0; i < ds; i++) {
    dir[i] = data.centres[t * d + i] + 0.7 * rng.normal();
    nrm += dir[i] * dir[i];
  }
  const g = (gain * Math.sqrt(d)) / Math.sqrt(nrm);
  for (let i = 0; i < d; i++) out[o + i] = data.qMean[h][i] + (i < ds ? g * dir[i] : 0) + data.qNoise[i] * rng.normal();
}

/** A topic present before position `pos` (uniform over positions, so long runs weigh more). */
function earlierTopic(data: OodData, pos: number, rng: Rng): number {
  return data.topic[rng.int(Math.max(1, Math.min(pos, data.spec.n)))];
}

/**
 * Queries of the group's G heads at the given positions: [positions.length, G·d] (row i, head h at
 * i·G·d + h·d). Positions < n are prefill queries; positions ≥ n are decode queries.
 */
export function oodQueries(data: OodData, positions: ArrayLike<number>, seed: number): Float32Array {
  const { d, group: G, n } = data.spec;
  const rng = new Rng(seed);
  const out = new Float32Array(positions.length * G * d);
  for (let i = 0; i < positions.length; i++) {
    const pos = positions[i];
    const decode = pos >= n;
    const pick = () => (decode ? earlierTopic(data, n, rng) : rng.uniform() < 0.6 ? data.topic[pos] : earlierTopic(data, pos + 1, rng));
    const common = pick();
    for (let h = 0; h < G; h++) queryAbout(data, h, h === 0 || rng.uniform() < 0.5 ? common : pick(), rng, out, (i * G + h) * d);
  }
  return out;
}

/** Rows of query head h from [m, G·d] queries, as [m, d]. */
export function headRows(q: Float32Array, m: number, G: number, d: number, h: number): Float32Array {
  const out = new Float32Array(m * d);
  for (let i = 0; i < m; i++) out.set(q.subarray((i * G + h) * d, (i * G + h + 1) * d), i * d);
  return out;
}

/**
 * Mean Mahalanobis distance of `x` rows to the distribution of `ref` rows (mean and covariance of
 * `ref`, ridge 1e-3·trace/d), divided by that of `held` rows (more keys) — RetrievalAttention reports
 * > 10× for queries against keys. Uses at most 4096 reference rows.
 */
export function mahalanobisRatio(ref: Float32Array, held: Float32Array, x: Float32Array, d: number): { queries: number; keys: number; ratio: number } {
  const m = Math.min(4096, ref.length / d);
  const mean = new Float64Array(d);
  for (let i = 0; i < m; i++) for (let t = 0; t < d; t++) mean[t] += ref[i * d + t] / m;
  const C = new Float64Array(d * d);
  for (let i = 0; i < m; i++)
    for (let a = 0; a < d; a++) {
      const xa = ref[i * d + a] - mean[a];
      for (let b = 0; b <= a; b++) C[a * d + b] += (xa * (ref[i * d + b] - mean[b])) / (m - 1);
    }
  let tr = 0;
  for (let a = 0; a < d; a++) tr += C[a * d + a];
  for (let a = 0; a < d; a++) C[a * d + a] += (1e-3 * tr) / d;
  // Cholesky (lower) in place
  for (let j = 0; j < d; j++) {
    let s = C[j * d + j];
    for (let p = 0; p < j; p++) s -= C[j * d + p] * C[j * d + p];
    const l = Math.sqrt(s);
    C[j * d + j] = l;
    for (let i = j + 1; i < d; i++) {
      let t = C[i * d + j];
      for (let p = 0; p < j; p++) t -= C[i * d + p] * C[j * d + p];
      C[i * d + j] = t / l;
    }
  }
  const dist = (rows: Float32Array): number => {
    const r = rows.length / d;
    const y = new Float64Array(d);
    let sum = 0;
    for (let i = 0; i < r; i++) {
      let q = 0;
      for (let a = 0; a < d; a++) {
        let t = rows[i * d + a] - mean[a];
        for (let p = 0; p < a; p++) t -= C[a * d + p] * y[p];
        y[a] = t / C[a * d + a];
        q += y[a] * y[a];
      }
      sum += Math.sqrt(q);
    }
    return sum / r;
  };
  const keys = dist(held);
  const queries = dist(x);
  return { queries, keys, ratio: queries / keys };
}
