// Embedding lookup: Y[t, :] = dequant(table row TOK[t]). One dispatch per bindable chunk of the table
// (rows rowStart ..< rowEnd); a token outside the chunk is left to the dispatch of its own chunk.
// One thread per 4 columns; grid x = column quads / 64, y = tokens.

struct Params {
  nTok: u32,
  cols: u32,
  rowWords: u32,
  rowStart: u32,
  rowEnd: u32,
  pad0: u32,
  pad1: u32,
  pad2: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> W: array<u32>;
@group(0) @binding(2) var<storage, read> TOK: array<u32>;
@group(0) @binding(3) var<storage, read_write> Y: array<f32>;

#include "quant.wgsl"

@compute @workgroup_size(64)
fn embed(@builtin(global_invocation_id) g: vec3<u32>) {
  let i = g.x * 4u;
  let t = g.y;
  if (i >= p.cols || t >= p.nTok) {
    return;
  }
  let tok = TOK[t];
  if (tok < p.rowStart || tok >= p.rowEnd) {
    return;
  }
  let v = w4(tok - p.rowStart, i, p.cols, p.rowWords);
  for (var e = 0u; e < 4u; e++) {
    if (i + e < p.cols) {
      Y[t * p.cols + i + e] = v[e];
    }
  }
}
