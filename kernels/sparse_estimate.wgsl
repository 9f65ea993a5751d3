// Sparse prefill, estimation passes that read q and K (MInference Alg. 2 and 3; references:
// engine/attention/sparse/patterns.ts lastQueryProbs, verticalSlashFromProbs, blockSparseIndex).
//
// Vertical-slash: Â = the causal softmax of the slice's last L = min(64, nQ) queries over all keys.
//   vs_rowstats  grid (key splits, 1, VS slots), 64 threads = the L rows: each row's running max and
//                sum of exp over one split of aux keys (keys staged through workgroup memory in tiles
//                of EBK); sparse_index.wgsl vs_rowmerge merges the splits into (m, l) per row.
//   vs_scores    grid (⌈nK/64⌉ folded, 1, VS slots), 64 threads: thread t owns key column j = 64·wid + t
//                and the diagonal of offset o = nK − 1 − j (whose keys, one per row, are j − (L−1−r)),
//                recomputes the L scores of each and sums the probabilities exp(s − m_r)/l_r: the
//                column sum (vertical score) and the diagonal sum (slash score), without atomics and
//                without storing Â. Writes selection keys (okey of the score; INF_KEY for the forced
//                sink columns j < 30 and local diagonals o < 100). q rows go through workgroup memory
//                in chunks of QR rows.
// Block-sparse:
//   bs_pool      grid (nKB + nQB folded, 1, BS slots), 64 threads: the mean of each 64-key block of K
//                (sum, then divide) and of each 64-row block of q (sum of q / rows, as the reference).
// Defines: HD, EBK (key tile), QR (q rows per chunk), PAGED/PAGE/KVF16/AR2..AR8 as attention.wgsl,
// KVACCESS (always).

#include "sparse_common.wgsl"

var<workgroup> kt: array<f32, EBK * HD>;

@compute @workgroup_size(64)
fn vs_rowstats(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) t: u32) {
  let slot = p.slot0 + wid.z;
  let h = SP[sbase(slot)];
  let kh = h / p.group;
  let L = min(64u, p.nQ);
  let rowPos0 = p.nKeys - L;
  let split = lin(wid);
  let k0 = split * p.aux;
  let k1 = min(p.nKeys, k0 + p.aux);
  let valid = t < L;
  let P = rowPos0 + t;
  var q: array<f32, HD>;
  if (valid) {
    let qo = (p.qRow0 + p.nQ - L + t) * p.qStride + h * HD;
    for (var c = 0u; c < HD; c++) {
      q[c] = Q[qo + c] * p.scale;
    }
  }
  var m = NEG;
  var l = 0.0;
  for (var j0 = k0; j0 < k1; j0 += EBK) {
    for (var idx = t; idx < EBK * HD; idx += 64u) {
      let key = j0 + idx / HD;
      var v = 0.0;
      if (key < k1) {
        v = kat(krow(key), kh * HD + idx % HD);
      }
      kt[idx] = v;
    }
    workgroupBarrier();
    if (valid) {
      var sc: array<f32, EBK>;
      var mt = m;
      for (var j = 0u; j < EBK; j++) {
        let key = j0 + j;
        var s = NEG;
        if (key < k1 && key <= P) {
          s = 0.0;
          for (var c = 0u; c < HD; c++) {
            s += q[c] * kt[j * HD + c];
          }
        }
        sc[j] = s;
        mt = max(mt, s);
      }
      l = l * exp(m - mt);
      for (var j = 0u; j < EBK; j++) {
        if (sc[j] > -1.0e38) {
          l += exp(sc[j] - mt);
        }
      }
      m = mt;
    }
    workgroupBarrier();
  }
  if (valid) {
    let o = reg(slot, H_PART) + (split * 64u + t) * 2u;
    spset(o, m);
    spset(o + 1u, l);
  }
}

var<workgroup> qsh: array<f32, QR * HD>;
var<workgroup> rm: array<f32, 64>;
var<workgroup> rl: array<f32, 64>;

@compute @workgroup_size(64)
fn vs_scores(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) t: u32) {
  let slot = p.slot0 + wid.z;
  let h = SP[sbase(slot)];
  let kh = h / p.group;
  let L = min(64u, p.nQ);
  let nK = p.nKeys;
  let rowPos0 = nK - L;
  let j = lin(wid) * 64u + t;
  if (t < L) {
    let ro = reg(slot, H_ROW) + t * 2u;
    rm[t] = spf(ro);
    rl[t] = spf(ro + 1u);
  }
  var kreg: array<f32, HD>;
  if (j < nK) {
    let kr = krow(j);
    for (var c = 0u; c < HD; c++) {
      kreg[c] = kat(kr, kh * HD + c);
    }
  }
  var col = 0.0;
  var dg = 0.0;
  for (var r0 = 0u; r0 < L; r0 += QR) {
    workgroupBarrier();
    for (var idx = t; idx < QR * HD; idx += 64u) {
      let r = r0 + idx / HD;
      var v = 0.0;
      if (r < L) {
        v = Q[(p.qRow0 + p.nQ - L + r) * p.qStride + h * HD + idx % HD] * p.scale;
      }
      qsh[idx] = v;
    }
    workgroupBarrier();
    if (j < nK) {
      for (var rr = 0u; rr < QR; rr++) {
        let r = r0 + rr;
        if (r >= L) {
          break;
        }
        // Column j: row r sees it when j <= its position.
        if (j <= rowPos0 + r) {
          var s = 0.0;
          for (var c = 0u; c < HD; c++) {
            s += qsh[rr * HD + c] * kreg[c];
          }
          col += exp(s - rm[r]) / rl[r];
        }
        // Diagonal o = nK - 1 - j: row r's key there is j - (L - 1 - r) (always causal).
        if (j + r + 1u >= L) {
          let kd = krow(j + r + 1u - L);
          var s = 0.0;
          for (var c = 0u; c < HD; c++) {
            s += qsh[rr * HD + c] * kat(kd, kh * HD + c);
          }
          dg += exp(s - rm[r]) / rl[r];
        }
      }
    }
  }
  if (j < nK) {
    let keys = reg(slot, H_KEYS);
    SP[keys + j] = select(okey(col), INF_KEY, j < 30u);
    let o = nK - 1u - j;
    SP[keys + nK + o] = select(okey(dg), INF_KEY, o < 100u);
  }
}

@compute @workgroup_size(64)
fn bs_pool(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) t: u32) {
  let slot = p.slot0 + wid.z;
  let h = SP[sbase(slot)];
  let kh = h / p.group;
  let nKB = (p.nKeys + 63u) / 64u;
  let nQB = (p.nQ + 63u) / 64u;
  let x = lin(wid);
  if (x < nKB) {
    let j0 = x * 64u;
    let j1 = min(p.nKeys, j0 + 64u);
    let dst = reg(slot, H_KP) + x * HD;
    for (var c = t; c < HD; c += 64u) {
      var s = 0.0;
      for (var j = j0; j < j1; j++) {
        s += kat(krow(j), kh * HD + c);
      }
      spset(dst + c, s / f32(j1 - j0));
    }
  } else if (x < nKB + nQB) {
    let qb = x - nKB;
    let i0 = qb * 64u;
    let i1 = min(p.nQ, i0 + 64u);
    let dst = reg(slot, H_QP) + qb * HD;
    let n = f32(i1 - i0);
    for (var c = t; c < HD; c += 64u) {
      var s = 0.0;
      for (var i = i0; i < i1; i++) {
        s += Q[(p.qRow0 + i) * p.qStride + h * HD + c] / n;
      }
      spset(dst + c, s);
    }
  }
}
