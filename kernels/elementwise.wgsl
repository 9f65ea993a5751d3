// Elementwise kernels: silu(gate) * up, a + b, row gather. One thread per element; the grid is
// two-dimensional (x capped at gridX workgroups) so that large tensors stay under 65,535 per dimension.

struct Params {
  n: u32,
  gridX: u32,
  cols: u32,
  pad: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> A: array<f32>;
@group(0) @binding(2) var<storage, read> B: array<f32>;
@group(0) @binding(3) var<storage, read_write> Y: array<f32>;
@group(0) @binding(4) var<storage, read> IDX: array<u32>;

fn gid(wid: vec3<u32>, t: u32) -> u32 {
  return (wid.y * p.gridX + wid.x) * 256u + t;
}

@compute @workgroup_size(256)
fn silu_mul(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) t: u32) {
  let i = gid(wid, t);
  if (i < p.n) {
    let g = A[i];
    Y[i] = g / (1.0 + exp(-g)) * B[i];
  }
}

@compute @workgroup_size(256)
fn add(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) t: u32) {
  let i = gid(wid, t);
  if (i < p.n) {
    Y[i] = A[i] + B[i];
  }
}

// Y[r, :] = A[IDX[r], :] for the n = rows × cols outputs.
@compute @workgroup_size(256)
fn select_rows(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) t: u32) {
  let i = gid(wid, t);
  if (i < p.n) {
    let r = i / p.cols;
    Y[i] = A[IDX[r] * p.cols + i % p.cols];
  }
}
