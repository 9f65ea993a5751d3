// Weight decoding shared by the embedding, matvec and matmul kernels (included, not a kernel).
//
// The including kernel declares `W: array<u32>` (one bindable chunk of a weight: whole rows) and the
// constant WTYPE (ggml type id). Layouts as uploaded by engine/backends/webgpu/weights.ts: every row
// starts on a word (rowWords words per row) and every block on a word:
//   F32   0  k words
//   F16   1  ceil(k/2) words, halves low first, odd rows padded with a zero half
//   BF16 30  like F16
//   Q4_0  2  20-byte blocks: d f16, 2 zero bytes, qs[16]            (ggml: 18 bytes, padded at upload)
//   Q8_0  8  36-byte blocks: d f16, 2 zero bytes, qs i8[32]         (ggml: 34 bytes, padded at upload)
//   Q4_K 12  ggml's 144-byte super-blocks unchanged: d, dmin f16, scales[12], qs[128]
//   Q6_K 14  ggml's 210-byte super-blocks + 2 zero bytes: ql[128], qh[64], scales i8[16], d f16
// `w4(row, i, k, rowWords)` returns elements i..i+3 (i a multiple of 4) of row `row`, f32; elements at
// or past k read as 0 (only float types can have a k that is not a multiple of the block).

fn bytes4(w: u32) -> vec4<u32> {
  return vec4<u32>(w & 0xffu, (w >> 8u) & 0xffu, (w >> 16u) & 0xffu, w >> 24u);
}

fn i8x4(w: u32) -> vec4<f32> {
  let s = bitcast<vec4<i32>>(vec4<u32>(w << 24u, w << 16u, w << 8u, w));
  return vec4<f32>(s >> vec4<u32>(24u));
}

fn bf16x2(w: u32) -> vec2<f32> {
  return vec2<f32>(bitcast<f32>(w << 16u), bitcast<f32>(w & 0xffff0000u));
}

// Byte n of the K-quant scales starting at word `wb`.
fn qbyte(wb: u32, n: u32) -> u32 {
  return (W[wb + n / 4u] >> (8u * (n % 4u))) & 0xffu;
}

fn w4(row: u32, i: u32, k: u32, rowWords: u32) -> vec4<f32> {
  let base = row * rowWords;
  if (WTYPE == 0u) {
    var v = vec4<f32>(0.0);
    for (var e = 0u; e < 4u; e++) {
      if (i + e < k) {
        v[e] = bitcast<f32>(W[base + i + e]);
      }
    }
    return v;
  } else if (WTYPE == 1u || WTYPE == 30u) {
    let w0 = W[base + i / 2u];
    var w1 = 0u;
    if (i + 2u < k) {
      w1 = W[base + i / 2u + 1u];
    }
    if (WTYPE == 1u) {
      return vec4<f32>(unpack2x16float(w0), unpack2x16float(w1));
    }
    return vec4<f32>(bf16x2(w0), bf16x2(w1));
  } else if (WTYPE == 8u) {
    let wb = base + (i / 32u) * 9u;
    let d = unpack2x16float(W[wb]).x;
    return d * i8x4(W[wb + 1u + (i % 32u) / 4u]);
  } else if (WTYPE == 2u) {
    let wb = base + (i / 32u) * 5u;
    let d = unpack2x16float(W[wb]).x;
    let e = i % 32u;
    let q = W[wb + 1u + (e % 16u) / 4u];
    let n = (bytes4(q) >> vec4<u32>(select(0u, 4u, e >= 16u))) & vec4<u32>(0xfu);
    return d * (vec4<f32>(n) - 8.0);
  } else if (WTYPE == 12u) {
    let wb = base + (i / 256u) * 36u;
    let dm = unpack2x16float(W[wb]);
    let e = i % 256u;
    let j64 = e / 64u;
    let w = e % 64u;
    let sb = 2u * j64 + w / 32u;
    // get_scale_min_k4: 6-bit scale and min of sub-block sb, packed in 12 bytes.
    let lo = sb < 4u;
    // sb < 4: sc = s[sb] & 63, m = s[sb+4] & 63; else sc = s[sb+4] & 15 | (s[sb-4] >> 6) << 4,
    // m = s[sb+4] >> 4 | (s[sb] >> 6) << 4.
    let x = qbyte(wb + 1u, select(sb + 4u, sb, lo));
    let y = qbyte(wb + 1u, select(sb - 4u, sb + 4u, lo));
    let z = qbyte(wb + 1u, select(sb, 0u, lo));
    let sc = select((x & 0xfu) | ((y >> 6u) << 4u), x & 63u, lo);
    let mn = select((x >> 4u) | ((z >> 6u) << 4u), y & 63u, lo);
    let q = W[wb + 4u + j64 * 8u + (w % 32u) / 4u];
    let n = (bytes4(q) >> vec4<u32>(select(0u, 4u, w >= 32u))) & vec4<u32>(0xfu);
    return (dm.x * f32(sc)) * vec4<f32>(n) - dm.y * f32(mn);
  } else if (WTYPE == 14u) {
    let wb = base + (i / 256u) * 53u;
    let e = i % 256u;
    let h = e / 128u;
    let quarter = (e % 128u) / 32u;
    let l = e % 32u;
    let lo = bytes4(W[wb + (64u * h + l + 32u * (quarter & 1u)) / 4u]);
    let low = (lo >> vec4<u32>(select(0u, 4u, quarter >= 2u))) & vec4<u32>(0xfu);
    let hi = (bytes4(W[wb + (128u + 32u * h + l) / 4u]) >> vec4<u32>(2u * quarter)) & vec4<u32>(3u);
    let q = vec4<f32>(vec4<i32>(low | (hi << vec4<u32>(4u))) - vec4<i32>(32));
    let scb = qbyte(wb, 192u + e / 16u);
    let sc = f32(bitcast<i32>(scb << 24u) >> 24u);
    let d = unpack2x16float(W[wb + 52u]).x;
    return (d * sc) * q;
  }
  return vec4<f32>(0.0);
}
