// Sparse prefill, the passes that touch only the scratch buffer SP (sparse_common.wgsl):
//
// sparse_init   grid (1), 64 threads: copies the host's header and per-slot (head, kind, a, b) words
//               from an upload buffer U into SP (so every later pass reads one binding: the sparse
//               attention kernel then needs no more storage bindings than the dense one).
// vs_rowmerge   grid (1, 1, VS slots), 64 threads = rows: merges the per-split (m, l) of vs_rowstats.
// bs_scores     grid (nQB folded, 1, BS slots), 64 threads: pooled q·k of each visible key block
//               (scaled), key block 0 and the diagonal block(s) forced (INF_KEY) — as blockSparseIndex.
// sparse_index  grid (⌈nQB/64⌉ folded, 1, slots), one thread per (query block, slot): the block's key
//               ranges and gathered columns (Alg. 4, the point–range merge: slash offsets descending
//               become ranges ascending, merged when they touch; verticals outside every range and
//               before the causal horizon become columns), or the A-shape / dense ranges, or the
//               block-sparse ranges (chosen 64-key blocks, merged, clipped to the horizon); also the
//               exact number of (row, key) entries the block computes (closed form, no row loop).
// sparse_stats  grid (1), 64 threads: adds the kept entries of aux slots from slot0 on to a 64-bit
//               counter ST (lo, hi words) that lives across calls.
// sparse_lse    grid (⌈nQ/64⌉ folded, 1, slots): the lse rows of each slot into the batch's lse
//               buffer [nHeads, lseStride] (words copied as bits, so -inf survives).

#include "sparse_common.wgsl"

@group(0) @binding(3) var<storage, read> U: array<u32>;
@group(0) @binding(4) var<storage, read_write> ST: array<u32>;
@group(0) @binding(9) var<storage, read_write> LSEw: array<u32>;

@compute @workgroup_size(64)
fn sparse_init(@builtin(local_invocation_index) t: u32) {
  // U: the 32 header words, then 4 words per slot (aux slots).
  for (var i = t; i < HEADER_WORDS; i += 64u) {
    SP[i] = U[i];
  }
  for (var i = t; i < p.aux * 4u; i += 64u) {
    SP[HEADER_WORDS + (i / 4u) * U[H_SLOT_WORDS] + i % 4u] = U[HEADER_WORDS + i];
  }
}

@compute @workgroup_size(64)
fn vs_rowmerge(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) t: u32) {
  let slot = p.slot0 + wid.z;
  let L = min(64u, p.nQ);
  if (t >= L) {
    return;
  }
  let part = reg(slot, H_PART);
  let nSplits = (p.nKeys + p.aux - 1u) / p.aux;
  var m = NEG;
  for (var s = 0u; s < nSplits; s++) {
    m = max(m, spf(part + (s * 64u + t) * 2u));
  }
  var l = 0.0;
  for (var s = 0u; s < nSplits; s++) {
    let o = part + (s * 64u + t) * 2u;
    l += spf(o + 1u) * exp(spf(o) - m);
  }
  let ro = reg(slot, H_ROW) + t * 2u;
  spset(ro, m);
  spset(ro + 1u, l);
}

@compute @workgroup_size(64)
fn bs_scores(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) t: u32) {
  let slot = p.slot0 + wid.z;
  let qb = lin(wid);
  let nQB = (p.nQ + 63u) / 64u;
  if (qb >= nQB) {
    return;
  }
  let nKB = (p.nKeys + 63u) / 64u;
  let p0 = p.pos + qb * 64u;
  let horizon = min(p.nKeys, p.pos + min(p.nQ, qb * 64u + 64u));
  let visible = (horizon + 63u) / 64u;
  let diag0 = min(p0, horizon - 1u) / 64u;
  let hd = SP[H_HD];
  let qp = reg(slot, H_QP) + qb * hd;
  let kp = reg(slot, H_KP);
  let dst = reg(slot, H_BSK) + qb * nKB;
  for (var kb = t; kb < visible; kb += 64u) {
    var key = INF_KEY;
    if (kb != 0u && kb < diag0) {
      var s = 0.0;
      for (var c = 0u; c < hd; c++) {
        s += spf(qp + c) * spf(kp + kb * hd + c);
      }
      key = okey(s * p.scale);
    }
    SP[dst + kb] = key;
  }
}

/** Σ over the rows' causal ends E = lo..hi of |[a, e) ∩ [0, E)|: entries of range [a, e) a block computes. */
fn rangeKept(a: u32, e: u32, lo: u32, hi: u32) -> u32 {
  var s = 0u;
  let x0 = max(lo, a + 1u);
  let x1 = min(hi, e - 1u);
  if (x0 <= x1) {
    let n = x1 - x0 + 1u;
    s += n * (x0 - a) + n * (n - 1u) / 2u;
  }
  let y0 = max(lo, e);
  if (y0 <= hi) {
    s += (hi - y0 + 1u) * (e - a);
  }
  return s;
}

@compute @workgroup_size(64)
fn sparse_index(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) t: u32) {
  let slot = p.slot0 + wid.z;
  let b = lin(wid) * 64u + t;
  let nQB = (p.nQ + 63u) / 64u;
  if (b >= nQB) {
    return;
  }
  let base = sbase(slot);
  let kind = SP[base + 1u];
  let pa = SP[base + 2u];
  let pb = SP[base + 3u];
  let nK = p.nKeys;
  let q0 = b * 64u;
  let q1 = min(p.nQ, q0 + 64u);
  let p0 = p.pos + q0;
  let p1 = p.pos + q1;
  let horizon = min(nK, p1);
  let R = reg(slot, H_RANGES) + b * SP[H_CAPR] * 2u;
  let C = reg(slot, H_COLS) + b * SP[H_CAPC];
  var nr = 0u;
  var nc = 0u;
  if (kind == KIND_DENSE || kind == KIND_ASHAPE) {
    // mergeRanges([[0, sink], [p0 − local + 1, horizon]], horizon); dense = a-shape(0, nK).
    var sink = 0u;
    var local = nK;
    if (kind == KIND_ASHAPE) {
      sink = pa;
      local = pb;
    }
    let e1 = min(sink, horizon);
    var a2 = 0u;
    if (p0 + 1u > local) {
      a2 = p0 + 1u - local;
    }
    if (e1 > 0u) {
      SP[R] = 0u;
      SP[R + 1u] = e1;
      nr = 1u;
    }
    if (a2 < horizon) {
      if (nr == 1u && a2 <= e1) {
        SP[R + 1u] = max(e1, horizon);
      } else {
        SP[R + nr * 2u] = a2;
        SP[R + nr * 2u + 1u] = horizon;
        nr += 1u;
      }
    }
  } else if (kind == KIND_VS) {
    let sel = reg(slot, H_SEL);
    let capV = SP[H_CAPV];
    let cols = sel;
    let offs = sel + 1u + capV;
    // Offsets descending give ranges ascending: one linear merge.
    let nS = SP[offs];
    for (var x = nS; x > 0u; x--) {
      let o = SP[offs + x];
      var a = 0u;
      if (p0 > o) {
        a = p0 - o;
      }
      if (p1 <= o) {
        continue;
      }
      let e = min(horizon, p1 - o);
      if (a >= e) {
        continue;
      }
      if (nr > 0u && a <= SP[R + nr * 2u - 1u]) {
        SP[R + nr * 2u - 1u] = max(SP[R + nr * 2u - 1u], e);
      } else {
        SP[R + nr * 2u] = a;
        SP[R + nr * 2u + 1u] = e;
        nr += 1u;
      }
    }
    let nV = SP[cols];
    var r = 0u;
    for (var x = 0u; x < nV; x++) {
      let c = SP[cols + 1u + x];
      if (c >= horizon) {
        break;
      }
      while (r < nr && SP[R + r * 2u + 1u] <= c) {
        r += 1u;
      }
      if (r < nr && SP[R + r * 2u] <= c) {
        continue;
      }
      SP[C + nc] = c;
      nc += 1u;
    }
  } else {
    // Block-sparse: chosen key blocks ascending → [kb·64, (kb+1)·64) clipped to the horizon, merged.
    let chosen = reg(slot, H_BSSEL) + b * (SP[H_CAPB] + 1u);
    let n = SP[chosen];
    for (var x = 0u; x < n; x++) {
      let a = SP[chosen + 1u + x] * 64u;
      let e = min(a + 64u, horizon);
      if (a >= e) {
        continue;
      }
      if (nr > 0u && a <= SP[R + nr * 2u - 1u]) {
        SP[R + nr * 2u - 1u] = max(SP[R + nr * 2u - 1u], e);
      } else {
        SP[R + nr * 2u] = a;
        SP[R + nr * 2u + 1u] = e;
        nr += 1u;
      }
    }
  }
  // Entries computed: row i of the block sees keys < E = p0 + 1 + (i − q0) (≤ nK).
  var kept = 0u;
  for (var r = 0u; r < nr; r++) {
    kept += rangeKept(SP[R + r * 2u], SP[R + r * 2u + 1u], p0 + 1u, p1);
  }
  for (var x = 0u; x < nc; x++) {
    let c = SP[C + x];
    let lo = max(p0 + 1u, c + 1u);
    if (lo <= p1) {
      kept += p1 - lo + 1u;
    }
  }
  let hdr = reg(slot, H_IDX) + b * 4u;
  SP[hdr] = nr;
  SP[hdr + 1u] = nc;
  SP[hdr + 2u] = kept;
  SP[hdr + 3u] = 0u;
}

var<workgroup> slo: array<u32, 64>;
var<workgroup> shi: array<u32, 64>;

@compute @workgroup_size(64)
fn sparse_stats(@builtin(local_invocation_index) t: u32) {
  let nQB = (p.nQ + 63u) / 64u;
  var lo = 0u;
  var hi = 0u;
  for (var i = t; i < p.aux * nQB; i += 64u) {
    let x = SP[reg(p.slot0 + i / nQB, H_IDX) + (i % nQB) * 4u + 2u];
    lo += x;
    if (lo < x) {
      hi += 1u;
    }
  }
  slo[t] = lo;
  shi[t] = hi;
  workgroupBarrier();
  if (t == 0u) {
    var a = ST[0];
    var c = ST[1];
    for (var i = 0u; i < 64u; i++) {
      a += slo[i];
      if (a < slo[i]) {
        c += 1u;
      }
      c += shi[i];
    }
    ST[0] = a;
    ST[1] = c;
  }
}

@compute @workgroup_size(64)
fn sparse_lse(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) t: u32) {
  let slot = p.slot0 + wid.z;
  let i = lin(wid) * 64u + t;
  if (i < p.nQ) {
    let h = SP[sbase(slot)];
    LSEw[h * p.lseStride + p.qRow0 + i] = SP[reg(slot, H_LSE) + i];
  }
}
