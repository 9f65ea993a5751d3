// KV page copies inside the pool's arena buffers (engine/backends/webgpu/kv-pool.ts), recorded in the
// step's compute pass so they are ordered with the attention kernels around them. copy_within serves
// two pages of one arena (copyBufferToBuffer refuses a buffer as its own source and destination),
// copy_across two arenas. One thread per u32 word.

struct Params {
  n: u32,     // words
  src: u32,   // first source word
  dst: u32,   // first destination word
  gridX: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> W: array<u32>;
@group(0) @binding(2) var<storage, read> S: array<u32>;
@group(0) @binding(3) var<storage, read_write> D: array<u32>;

@compute @workgroup_size(256)
fn copy_within(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) t: u32) {
  let i = (wid.y * p.gridX + wid.x) * 256u + t;
  if (i < p.n) {
    W[p.dst + i] = W[p.src + i];
  }
}

@compute @workgroup_size(256)
fn copy_across(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) t: u32) {
  let i = (wid.y * p.gridX + wid.x) * 256u + t;
  if (i < p.n) {
    D[p.dst + i] = S[p.src + i];
  }
}
