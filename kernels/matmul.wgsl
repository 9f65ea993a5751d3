// y = x · Wᵀ (+ bias) with W in any supported ggml type, dequantized in the kernel (see quant.wgsl).
// One dispatch covers one bindable chunk of W (a range of output columns): columns land at outOff.
//
// Defines: WTYPE (ggml type), WG (threads, power of two), R (matvec: 1, or 8 = up to 8 rows),
// SUBGROUPS (matvec: reduce with subgroupAdd first).
//
// matvec: decode (few rows), bandwidth-bound. A workgroup owns 4 output columns; its threads stride
//   over k four elements at a time, keep 4×R partial sums in registers, then reduce.
// matmul_tiled: prefill. 32×32 output tile per workgroup of 64 threads, 4×4 per thread, k in steps of
//   32 with x and the dequantized W tile staged in workgroup memory.

struct Params {
  rows: u32,
  k: u32,
  nOut: u32,
  outOff: u32,
  ldy: u32,
  rowWords: u32,
  hasBias: u32,
  gridX: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> W: array<u32>;
@group(0) @binding(2) var<storage, read> X: array<f32>;
@group(0) @binding(3) var<storage, read> B: array<f32>;
@group(0) @binding(4) var<storage, read_write> Y: array<f32>;

#include "quant.wgsl"

fn x4(r: u32, i: u32) -> vec4<f32> {
  // Branch-free guard (small code matters: lavapipe's LLVM compile time grows with every inlined copy).
  let o = r * p.k;
  let last = p.k - 1u;
  let v = vec4<f32>(X[o + min(i, last)], X[o + min(i + 1u, last)], X[o + min(i + 2u, last)], X[o + min(i + 3u, last)]);
  return select(vec4<f32>(0.0), v, vec4<u32>(i, i + 1u, i + 2u, i + 3u) < vec4<u32>(p.k));
}

fn bias4(col: u32) -> vec4<f32> {
  if (p.hasBias == 0u) {
    return vec4<f32>(0.0);
  }
  let last = p.outOff + p.nOut - 1u;
  let o = p.outOff + col;
  return vec4<f32>(B[o], B[min(o + 1u, last)], B[min(o + 2u, last)], B[min(o + 3u, last)]);
}

// Writes up to 4 consecutive outputs of row r starting at chunk column col (the ones < nOut).
fn store4(r: u32, col: u32, v: vec4<f32>) {
  let o = r * p.ldy + p.outOff + col;
  for (var j = 0u; j < 4u; j++) {
    if (col + j < p.nOut) {
      Y[o + j] = v[j];
    }
  }
}

#if MATVEC
// Rows 1 ..= R of x in one pass over W (R = 1 for single-sequence decode, else 8 with a runtime guard).
// A workgroup owns 4 output columns, kept as the lanes of one vec4 per row.
#if SUBGROUPS
// One slot per subgroup; subgroups are taken as runs of consecutive invocation indices
// (index / subgroup_size), as ggml's WebGPU kernels also assume. 4 is the smallest subgroup we accept.
var<workgroup> red: array<vec4<f32>, R * (WG / 4u)>;
#else
var<workgroup> red: array<vec4<f32>, R * WG>;
#endif

@compute @workgroup_size(WG)
fn matvec(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) t: u32
#if SUBGROUPS
, @builtin(subgroup_invocation_id) sid: u32, @builtin(subgroup_size) ssz: u32
#endif
) {
  let col0 = (wid.y * p.gridX + wid.x) * 4u;
  if (col0 >= p.nOut) {
    return;
  }
  let lastCol = p.nOut - 1u;
  var acc: array<vec4<f32>, R>;
  let nq = (p.k + 3u) / 4u;
  for (var q = t; q < nq; q += WG) {
    let i = q * 4u;
    let w0 = w4(col0, i, p.k, p.rowWords);
    let w1 = w4(min(col0 + 1u, lastCol), i, p.k, p.rowWords);
    let w2 = w4(min(col0 + 2u, lastCol), i, p.k, p.rowWords);
    let w3 = w4(min(col0 + 3u, lastCol), i, p.k, p.rowWords);
    for (var r = 0u; r < R; r++) {
      if (R == 1u || r < p.rows) {
        let xv = x4(r, i);
        acc[r] += vec4<f32>(dot(w0, xv), dot(w1, xv), dot(w2, xv), dot(w3, xv));
      }
    }
  }
#if SUBGROUPS
  let nsg = WG / ssz;
  for (var r = 0u; r < R; r++) {
    let s = subgroupAdd(acc[r]);
    if (sid == 0u) {
      red[r * (WG / 4u) + t / ssz] = s;
    }
  }
  workgroupBarrier();
  if (t < R && t < p.rows) {
    var s = vec4<f32>(0.0);
    for (var g = 0u; g < nsg; g++) {
      s += red[t * (WG / 4u) + g];
    }
    store4(t, col0, s + bias4(col0));
  }
#else
  for (var r = 0u; r < R; r++) {
    red[r * WG + t] = acc[r];
  }
  workgroupBarrier();
  if (t < R && t < p.rows) {
    var s = vec4<f32>(0.0);
    for (var g = 0u; g < WG; g++) {
      s += red[t * WG + g];
    }
    store4(t, col0, s + bias4(col0));
  }
#endif
}
#else

// 32×32 output tile per workgroup of 64 threads (8×8, 4×4 outputs each, as vec4 lanes), k in steps of 32.
const TK: u32 = 32u;
var<workgroup> xs: array<f32, TK * 32u>; // [kk][row]
var<workgroup> ws: array<f32, TK * 32u>; // [kk][col]

@compute @workgroup_size(64)
fn matmul_tiled(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) t: u32) {
  let col0 = wid.x * 32u;
  let row0 = wid.y * 32u;
  let tx = t % 8u;
  let ty = t / 8u;
  let lastRow = p.rows - 1u;
  let lastCol = p.nOut - 1u;
  var acc: array<vec4<f32>, 4>;
  for (var k0 = 0u; k0 < p.k; k0 += TK) {
    for (var n = 0u; n < 4u; n++) {
      let idx = n * 64u + t;
      let a = idx / 8u; // row (x) or column (W) within the tile
      let kq = (idx % 8u) * 4u;
      // Out-of-range rows/columns read a valid one (clamped); their results are never stored.
      let xv = x4(min(row0 + a, lastRow), k0 + kq);
      let wv = w4(min(col0 + a, lastCol), min(k0 + kq, (p.k - 1u) & ~3u), p.k, p.rowWords);
      for (var e = 0u; e < 4u; e++) {
        xs[(kq + e) * 32u + a] = xv[e];
        ws[(kq + e) * 32u + a] = select(0.0, wv[e], k0 + kq + e < p.k);
      }
    }
    workgroupBarrier();
    for (var kk = 0u; kk < TK; kk++) {
      let xo = kk * 32u + ty * 4u;
      let wo = kk * 32u + tx * 4u;
      let av = vec4<f32>(xs[xo], xs[xo + 1u], xs[xo + 2u], xs[xo + 3u]);
      let bv = vec4<f32>(ws[wo], ws[wo + 1u], ws[wo + 2u], ws[wo + 3u]);
      acc[0] += av.x * bv;
      acc[1] += av.y * bv;
      acc[2] += av.z * bv;
      acc[3] += av.w * bv;
    }
    workgroupBarrier();
  }
  let bb = bias4(col0 + tx * 4u);
  for (var i = 0u; i < 4u; i++) {
    let r = row0 + ty * 4u + i;
    if (r < p.rows) {
      store4(r, col0 + tx * 4u, acc[i] + bb);
    }
  }
}
#endif
