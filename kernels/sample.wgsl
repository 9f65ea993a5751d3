// GPU argmax over each row of logits (greedy decoding without reading the logits back).
// Ties go to the lowest index, as the host sampler and llama.cpp's greedy do. One workgroup per row.

struct Params {
  cols: u32,
  pad0: u32,
  pad1: u32,
  pad2: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> X: array<f32>;
@group(0) @binding(2) var<storage, read_write> OUT: array<u32>;

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
