// Rotary position embedding, one thread per element. The host supplies CS: for every row and pair i,
// (cos θ · mscale, sin θ · mscale) with θ = position · invFreq[i], computed in f64 (GPU sin/cos of large
// angles are not accurate enough: Vulkan only bounds their error on [-π, π]).
// kind 0 = 'norm' (pairs 2i, 2i+1, llama), 1 = 'neox' (pairs i, i + dims/2, qwen).
// Columns past `dims` in each head pass through.

struct Params {
  n: u32,
  gridX: u32,
  cols: u32,
  headDim: u32,
  dims: u32,
  kind: u32,
  pad0: u32,
  pad1: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> X: array<f32>;
@group(0) @binding(2) var<storage, read> CS: array<vec2<f32>>;
@group(0) @binding(3) var<storage, read_write> Y: array<f32>;

@compute @workgroup_size(256)
fn rope(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) t: u32) {
  let idx = (wid.y * p.gridX + wid.x) * 256u + t;
  if (idx >= p.n) {
    return;
  }
  let row = idx / p.cols;
  let c = idx % p.headDim;
  let head0 = idx - c;
  if (c >= p.dims) {
    Y[idx] = X[idx];
    return;
  }
  let half = p.dims / 2u;
  var pair: u32;
  var a: u32;
  var b: u32;
  if (p.kind == 0u) {
    pair = c / 2u;
    a = head0 + 2u * pair;
    b = a + 1u;
  } else {
    pair = c % half;
    a = head0 + pair;
    b = a + half;
  }
  let cs = CS[row * half + pair];
  let x0 = X[a];
  let x1 = X[b];
  if (idx == a) {
    Y[idx] = x0 * cs.x - x1 * cs.y;
  } else {
    Y[idx] = x0 * cs.y + x1 * cs.x;
  }
}
