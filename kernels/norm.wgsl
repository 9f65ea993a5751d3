// RMSNorm, row-wise or per group of `group` columns (Qwen3's per-head q/k norm):
// y = x / sqrt(mean(x²) + eps) * w, with w of length `group`. One workgroup per (group, row).
// Defines: WG (power of two), SUBGROUPS.

struct Params {
  cols: u32,
  group: u32,
  eps: f32,
  pad: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> X: array<f32>;
@group(0) @binding(2) var<storage, read> G: array<f32>;
@group(0) @binding(3) var<storage, read_write> Y: array<f32>;

var<workgroup> red: array<f32, WG>;

@compute @workgroup_size(WG)
fn rms_norm(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) t: u32
#if SUBGROUPS
, @builtin(subgroup_invocation_id) sid: u32, @builtin(subgroup_size) ssz: u32
#endif
) {
  let o = wid.y * p.cols + wid.x * p.group;
  var ss = 0.0;
  for (var i = t; i < p.group; i += WG) {
    let v = X[o + i];
    ss += v * v;
  }
#if SUBGROUPS
  // Subgroups are runs of consecutive invocation indices (see matmul.wgsl).
  let s = subgroupAdd(ss);
  if (sid == 0u) {
    red[t / ssz] = s;
  }
  workgroupBarrier();
  if (t == 0u) {
    var tot = 0.0;
    for (var g = 0u; g < WG / ssz; g++) {
      tot += red[g];
    }
    red[0] = tot;
  }
  workgroupBarrier();
#else
  red[t] = ss;
  workgroupBarrier();
  for (var s = WG / 2u; s > 0u; s >>= 1u) {
    if (t < s) {
      red[t] += red[t + s];
    }
    workgroupBarrier();
  }
#endif
  let inv = 1.0 / sqrt(red[0] / f32(p.group) + p.eps);
  for (var i = t; i < p.group; i += WG) {
    Y[o + i] = X[o + i] * inv * G[i];
  }
}
