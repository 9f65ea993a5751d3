// Token picking on the GPU, one workgroup per row of logits (the logits are never read back).
//
// argmax  greedy: each row's largest value, lowest index on ties (as the host sampler and llama.cpp).
// sample  temperature / top-k / top-p with the host Sampler's semantics (engine/model/sampler.ts,
//         mirrored by engine/backends/webgpu/sample-ref.ts): candidates in order (logit descending,
//         index ascending on ties), cut to the first topK, weights p = exp((l - max) / temperature),
//         cut to the shortest prefix whose share of the weight reaches topP, then the first candidate
//         whose running weight reaches u × (their weight), u being the row's uniform number in [0, 1).
//
// How sample finds things without sorting the vocabulary: every question is "the first element in
// order whose running total (a count, or a weight) reaches a goal", answered by a radix search over
// an order key — the logit's bits made monotone — four bits per pass over the row (16 bins: a
// count, the smallest index and, per thread, the weight), then over the index bits if equal logits
// remain. A pass stops early once the chosen bin holds a single element.
// - top-k with k <= KCAP (the usual 20-100): one count search finds the k-th candidate; the k
//   candidates are gathered into workgroup memory, bitonic-sorted, and one thread runs the host's
//   loops over them (same order of summation, in f32).
// - otherwise (top-k off or large): weight searches over the whole row for the top-p cut and the pick.
// Results equal the host's for the same u except where u × total falls within rounding (f32 here,
// f64 there) of a boundary between two candidates (test/webgpu/sample.test.ts measures this).

struct Params {
  cols: u32,
  topK: u32,   // 0: off
  topP: f32,   // >= 1: off
  temp: f32,   // > 0 (temperature 0 is argmax)
  phases: u32, // 3; a uniform so that compilers keep the phase loop (unrolled, it triples the shader)
  pad0: u32,
  pad1: u32,
  pad2: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> X: array<f32>;
@group(0) @binding(2) var<storage, read_write> OUT: array<u32>;
@group(0) @binding(3) var<storage, read> U: array<f32>;

var<workgroup> bv: array<f32, 256>;
var<workgroup> bi: array<u32, 256>;

@compute @workgroup_size(256)
fn argmax(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) t: u32) {
  let o = wid.x * p.cols;
  var best = -3.4e38;
  var idx = 0xffffffffu;
  for (var i = t; i < p.cols; i += 256u) {
    let v = X[o + i];
    if (v > best || idx == 0xffffffffu) {
      best = v;
      idx = i;
    }
  }
  bv[t] = best;
  bi[t] = idx;
  workgroupBarrier();
  for (var s = 128u; s > 0u; s >>= 1u) {
    if (t < s) {
      let v = bv[t + s];
      let j = bi[t + s];
      if (j != 0xffffffffu && (bi[t] == 0xffffffffu || v > bv[t] || (v == bv[t] && j < bi[t]))) {
        bv[t] = v;
        bi[t] = j;
      }
    }
    workgroupBarrier();
  }
  if (t == 0u) {
    OUT[wid.x] = bi[0];
  }
}

const WG: u32 = 128u;
const KCAP: u32 = 512u;
const NONE: u32 = 0xffffffffu;

var<workgroup> wm: array<f32, 2048>; // 16 bins x WG threads (per-thread weights), reduced in place
var<workgroup> wc: array<atomic<u32>, 16>; // elements per bin
var<workgroup> wi: array<atomic<u32>, 16>; // smallest index per bin
var<workgroup> ck: array<u32, KCAP>; // gathered candidates: order key, index, weight
var<workgroup> ci: array<u32, KCAP>;
var<workgroup> cp: array<f32, KCAP>;
var<workgroup> cn: atomic<u32>;
// The search's state (thread 0 writes it between barriers).
var<workgroup> sKey: u32;
var<workgroup> sIdx: u32;
var<workgroup> sAbove: f32;
var<workgroup> sCum: f32;
var<workgroup> sDone: u32;
var<workgroup> sN: u32;

// The logit's bits, made monotone: a larger logit has a larger key (-0 counts as +0, as the host's
// comparisons do).
fn okey(x: f32) -> u32 {
  let u = select(bitcast<u32>(x), 0u, x == 0.0);
  return select(u | 0x80000000u, ~u, (u & 0x80000000u) != 0u);
}

// Element a is at or before element b in candidate order.
fn atOrBefore(ka: u32, ia: u32, kb: u32, ib: u32) -> bool {
  return ka > kb || (ka == kb && ia <= ib);
}

// Sums wm's 16 bins over the threads into wm[d * WG], in two stages (16 columns per thread, then 8
// partial sums per bin). Few barriers, none in a constant-length loop: lavapipe runs barriers as
// coroutine suspend points and an unrolled loop of them makes its LLVM compile take minutes.
fn reduceBins(t: u32) {
  let d = t / 8u;
  let part = (t % 8u) * 16u;
  var s = 0.0;
  for (var j = 0u; j < 16u; j++) {
    s += wm[d * WG + part + j];
  }
  wm[d * WG + part] = s; // only this thread reads or writes these 16 slots
  workgroupBarrier();
  if (part == 0u) {
    var tot = 0.0;
    for (var q = 0u; q < 128u; q += 16u) {
      tot += wm[d * WG + q];
    }
    wm[d * WG] = tot;
  }
  workgroupBarrier();
}

// The sum (or max) of wm[0..WG), once every thread has written its slot.
fn reduceOne(t: u32, useMax: bool) -> f32 {
  workgroupBarrier();
  if (t == 0u) {
    var acc = wm[0];
    for (var j = 1u; j < WG; j++) {
      if (useMax) {
        acc = max(acc, wm[j]);
      } else {
        acc += wm[j];
      }
    }
    sCum = acc;
  }
  return workgroupUniformLoad(&sCum);
}

// Among the elements at or before (bk, bi) in order, finds the first whose running total reaches
// `goal` (the last one if rounding leaves it unreached): sKey, sIdx, and its running total sCum.
// Totals count elements (weighted == false) or add exp((x - mx) / temp). Per pass, each thread adds
// its elements' weights into its own column of wm (no private arrays: they make lavapipe's LLVM
// compile for minutes), counts and smallest indices go to workgroup atomics.
fn search(t: u32, row: u32, goal: f32, weighted: bool, mx: f32, bk: u32, bi: u32) {
  let o = row * p.cols;
  if (t == 0u) {
    sKey = 0u;
    sIdx = 0u;
    sAbove = 0.0;
    sDone = 0u;
  }
  // Index bits of the largest index (for the rounds over equal keys).
  let idxRounds = (32u - countLeadingZeros(max(p.cols, 2u) - 1u) + 3u) / 4u;
  for (var r = 0u; r < 8u + idxRounds; r++) {
    let byKey = r < 8u;
    var shift = 0u;
    if (byKey) {
      shift = 28u - 4u * r;
    } else {
      shift = 4u * (idxRounds - 1u - (r - 8u));
    }
    var hi = 0u; // bits above this digit, fixed by earlier rounds
    if (shift < 28u) {
      hi = ~((1u << (shift + 4u)) - 1u);
    }
    for (var d = 0u; d < 16u; d++) {
      wm[d * WG + t] = 0.0;
    }
    if (t < 16u) {
      atomicStore(&wc[t], 0u);
      atomicStore(&wi[t], NONE);
    }
    workgroupBarrier();
    let key0 = sKey;
    let idx0 = sIdx;
    for (var i = t; i < p.cols; i += WG) {
      let x = X[o + i];
      let k = okey(x);
      var inBin = false;
      var d = 0u;
      if (byKey) {
        inBin = (k & hi) == key0;
        d = (k >> shift) & 15u;
      } else {
        inBin = k == key0 && (i & hi) == idx0;
        d = (i >> shift) & 15u;
      }
      if (inBin && atOrBefore(k, i, bk, bi)) {
        var v = 1.0;
        if (weighted) {
          v = exp((x - mx) / p.temp);
        }
        wm[d * WG + t] += v;
        atomicAdd(&wc[d], 1u);
        atomicMin(&wi[d], i);
      }
    }
    workgroupBarrier();
    reduceBins(t);
    if (t == 0u) {
      // Candidate order: keys descending, then indices ascending.
      var above = sAbove;
      var chosen = 16u;
      var last = 16u;
      for (var j = 0u; j < 16u; j++) {
        let d = select(j, 15u - j, byKey);
        if (atomicLoad(&wc[d]) == 0u) {
          continue;
        }
        last = d;
        let b = wm[d * WG];
        if (above + b >= goal) {
          chosen = d;
          break;
        }
        above += b;
      }
      if (chosen == 16u && last < 16u) {
        chosen = last;
        above -= wm[last * WG];
      }
      if (chosen < 16u) {
        if (byKey) {
          sKey = key0 | (chosen << shift);
        } else {
          sIdx = idx0 | (chosen << shift);
        }
        sAbove = above;
        sCum = above + wm[chosen * WG];
        if (atomicLoad(&wc[chosen]) == 1u) {
          sIdx = atomicLoad(&wi[chosen]);
          sKey = okey(X[o + sIdx]);
          sDone = 1u;
        }
      } else {
        sDone = 1u; // nothing allowed (cannot happen: the bound is an element)
      }
    }
    if (workgroupUniformLoad(&sDone) == 1u) {
      break;
    }
  }
  workgroupBarrier();
}

// Phases (one search call site, so the shader stays small): 0 finds the k-th candidate (when top-k
// cuts); with at most KCAP candidates the rest is done on them in workgroup memory; otherwise 1 finds
// the top-p cut and 2 the pick, by weight over the row.
@compute @workgroup_size(128)
fn sample(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) t: u32) {
  let row = wid.x;
  let o = row * p.cols;
  let u = U[row];
  var K = p.cols;
  if (p.topK > 0u && p.topK < p.cols) {
    K = p.topK;
  }
  var bk = 0u; // the last candidate still in (all of them at first)
  var bi = NONE;
  var m = 0.0;
  var total = 0.0;
  for (var ph = 0u; ph < p.phases; ph++) {
    var goal = 0.0;
    if (ph == 0u) {
      if (K == p.cols) {
        continue;
      }
      goal = f32(K);
    }
    if (ph == 1u) {
      if (K <= KCAP) {
        gatherAndPick(t, row, u, bk, bi);
        return;
      }
      var mx = -3.4e38;
      for (var i = t; i < p.cols; i += WG) {
        mx = max(mx, X[o + i]);
      }
      wm[t] = mx;
      m = reduceOne(t, true);
      var w = 0.0;
      for (var i = t; i < p.cols; i += WG) {
        let x = X[o + i];
        if (atOrBefore(okey(x), i, bk, bi)) {
          w += exp((x - m) / p.temp);
        }
      }
      wm[t] = w;
      total = reduceOne(t, false);
      if (p.topP >= 1.0) {
        continue;
      }
      goal = p.topP * total;
    }
    if (ph == 2u) {
      goal = u * total;
    }
    search(t, row, goal, ph > 0u, m, bk, bi);
    bk = workgroupUniformLoad(&sKey);
    bi = workgroupUniformLoad(&sIdx);
    if (ph == 1u) {
      total = workgroupUniformLoad(&sCum);
    }
  }
  if (t == 0u) {
    OUT[row] = bi;
  }
}

// At most KCAP candidates (those at or before (bk, bi)): gathered into workgroup memory, sorted into
// candidate order (bitonic), then one thread runs the host's loops over them.
fn gatherAndPick(t: u32, row: u32, u: f32, bk: u32, bi: u32) {
  let o = row * p.cols;
  if (t == 0u) {
    atomicStore(&cn, 0u);
  }
  workgroupBarrier();
  for (var i = t; i < p.cols; i += WG) {
    let k = okey(X[o + i]);
    if (atOrBefore(k, i, bk, bi)) {
      let s = atomicAdd(&cn, 1u);
      if (s < KCAP) {
        ck[s] = k;
        ci[s] = i;
      }
    }
  }
  workgroupBarrier();
  let n = min(atomicLoad(&cn), KCAP);
  var N = 1u;
  while (N < n) {
    N <<= 1u;
  }
  for (var i = n + t; i < N; i += WG) {
    ck[i] = 0u;
    ci[i] = NONE;
  }
  if (t == 0u) {
    sN = N;
  }
  let NN = workgroupUniformLoad(&sN);
  for (var k = 2u; k <= NN; k <<= 1u) {
    for (var j = k >> 1u; j > 0u; j >>= 1u) {
      for (var i = t; i < NN; i += WG) {
        let l = i ^ j;
        if (l > i) {
          let iAfter = !atOrBefore(ck[i], ci[i], ck[l], ci[l]);
          if (((i & k) == 0u) == iAfter) {
            let tk = ck[i];
            ck[i] = ck[l];
            ck[l] = tk;
            let ti = ci[i];
            ci[i] = ci[l];
            ci[l] = ti;
          }
        }
      }
      workgroupBarrier();
    }
  }
  if (t == 0u) {
    let m = X[o + ci[0]];
    var sum = 0.0;
    for (var i = 0u; i < n; i++) {
      cp[i] = exp((X[o + ci[i]] - m) / p.temp);
      sum += cp[i];
    }
    var cut = n;
    if (p.topP < 1.0) {
      var acc = 0.0;
      for (var i = 0u; i < n; i++) {
        acc += cp[i] / sum;
        if (acc >= p.topP) {
          cut = i + 1u;
          break;
        }
      }
      sum = 0.0;
      for (var i = 0u; i < cut; i++) {
        sum += cp[i];
      }
    }
    var r = u * sum;
    var pick = ci[cut - 1u];
    for (var i = 0u; i < cut; i++) {
      r -= cp[i];
      if (r <= 0.0) {
        pick = ci[i];
        break;
      }
    }
    OUT[row] = pick;
  }
}
