// Causal GQA attention over a sequence's KV cache, returning (out, lse) like every attention kernel
// of the engine: lse[h, row] = log Σ_j exp(scale · q·k_j) over the keys the row attends.
//
// kv_write     appends the new K and V rows of one sequence to its cache (one thread per element).
// flash        prefill: a workgroup owns BQ=16 queries of one head; 4 threads per query, each holding a
//              quarter of q and of the output accumulator in registers. Key tiles of BK keys go through
//              workgroup memory (K, then V in the same space); online softmax (running max m, sum l).
// decode_split decode (few queries, long KV): the keys are cut into CHUNK-key splits, one workgroup
//              per (split, head, query) writes an unnormalized partial (o, m, l) ...
// decode_merge ... and one workgroup per (head, query) merges the splits exactly by their (m, l).
//
// Masked scores use -3e38 rather than -inf: WGSL lets implementations assume no infinities.
// Defines: HD (head dim, multiple of 4), BK (flash key tile), CHUNK (decode split length), KVF16 (the
// cache holds f16 pairs packed in u32 words, pack2x16float/unpack2x16float: half the memory and
// bandwidth, no shader-f16 needed; kv_write then runs one thread per pair). Halves are rounded to
// nearest, ties to even, in integer arithmetic (f16pair): bit-identical to the host's f32ToF16, which
// pack2x16float does not promise (WGSL leaves its rounding to the implementation).
//
// PAGED: the KV lives in a page pool (engine/kv/README.md): pages of PAGE tokens holding every layer's
// K and V, laid out [page][layer][K rows, then V rows][token row][nKVHeads * HD] — the page's own
// serialization, so reading, writing and copying a page are single contiguous ranges. Pages sit in up
// to 8 arena buffers A0..A7 (AR2..AR8: at least that many arenas) of ppa pages each, never straddling
// two; values are u32 words (f16 pairs with KVF16, f32 bits without). Token t of the sequence lives in
// page PT[t / PAGE], row t % PAGE. A flash key tile (BK divides PAGE) never leaves its page, so the
// page table is read once per tile there.

struct Params {
  nQ: u32,       // queries of this sequence
  qRow0: u32,    // first batch row of this sequence
  qStride: u32,  // nHeads * HD
  kvStride: u32, // nKVHeads * HD
  group: u32,    // nHeads / nKVHeads
  pos: u32,      // position of the first query (= keys already cached before this step)
  nKeys: u32,    // pos + nQ
  scale: f32,
  lseStride: u32, // rows of the batch
  nHeads: u32,
  nSplits: u32,
  gridX: u32,
  total: u32,     // kv_write: elements to copy
  ppa: u32,       // PAGED: pages per arena
  pageVals: u32,  // PAGED: values per page (all layers, K and V)
  layerVals: u32, // PAGED: offset of this layer's K rows within a page, in values
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> Kin: array<f32>;
@group(0) @binding(2) var<storage, read> Vin: array<f32>;
@group(0) @binding(5) var<storage, read> Q: array<f32>;
#if PAGED
@group(0) @binding(14) var<storage, read> PT: array<u32>;
@group(0) @binding(20) var<storage, read_write> A0: array<u32>;
#if AR2
@group(0) @binding(21) var<storage, read_write> A1: array<u32>;
#endif
#if AR3
@group(0) @binding(22) var<storage, read_write> A2: array<u32>;
#endif
#if AR4
@group(0) @binding(23) var<storage, read_write> A3: array<u32>;
#endif
#if AR5
@group(0) @binding(24) var<storage, read_write> A4: array<u32>;
#endif
#if AR6
@group(0) @binding(25) var<storage, read_write> A5: array<u32>;
#endif
#if AR7
@group(0) @binding(26) var<storage, read_write> A6: array<u32>;
#endif
#if AR8
@group(0) @binding(27) var<storage, read_write> A7: array<u32>;
#endif
fn aload(a: u32, w: u32) -> u32 {
#if AR2
  if (a == 1u) {
    return A1[w];
  }
#endif
#if AR3
  if (a == 2u) {
    return A2[w];
  }
#endif
#if AR4
  if (a == 3u) {
    return A3[w];
  }
#endif
#if AR5
  if (a == 4u) {
    return A4[w];
  }
#endif
#if AR6
  if (a == 5u) {
    return A5[w];
  }
#endif
#if AR7
  if (a == 6u) {
    return A6[w];
  }
#endif
#if AR8
  if (a == 7u) {
    return A7[w];
  }
#endif
  return A0[w];
}
fn astore(a: u32, w: u32, x: u32) {
  switch a {
#if AR2
    case 1u: {
      A1[w] = x;
    }
#endif
#if AR3
    case 2u: {
      A2[w] = x;
    }
#endif
#if AR4
    case 3u: {
      A3[w] = x;
    }
#endif
#if AR5
    case 4u: {
      A4[w] = x;
    }
#endif
#if AR6
    case 5u: {
      A5[w] = x;
    }
#endif
#if AR7
    case 6u: {
      A6[w] = x;
    }
#endif
#if AR8
    case 7u: {
      A7[w] = x;
    }
#endif
    default: {
      A0[w] = x;
    }
  }
}
// Value i of arena a.
fn kvload(a: u32, i: u32) -> f32 {
#if KVF16
  return unpack2x16float(aload(a, i / 2u))[i % 2u];
#else
  return bitcast<f32>(aload(a, i));
#endif
}
// Where the K row of token `key` starts: (arena, value index). Its V row is PAGE rows further.
fn krow(key: u32) -> vec2<u32> {
  let pg = PT[key / PAGE];
  return vec2<u32>(pg / p.ppa, (pg % p.ppa) * p.pageVals + p.layerVals + (key % PAGE) * p.kvStride);
}
fn kat(r: vec2<u32>, c: u32) -> f32 {
  return kvload(r.x, r.y + c);
}
fn vat(r: vec2<u32>, c: u32) -> f32 {
  return kvload(r.x, r.y + PAGE * p.kvStride + c);
}
#else
#if KVF16
@group(0) @binding(3) var<storage, read_write> KCw: array<u32>;
@group(0) @binding(4) var<storage, read_write> VCw: array<u32>;
@group(0) @binding(6) var<storage, read> KC: array<u32>;
@group(0) @binding(7) var<storage, read> VC: array<u32>;
fn kget(i: u32) -> f32 {
  return unpack2x16float(KC[i / 2u])[i % 2u];
}
fn vget(i: u32) -> f32 {
  return unpack2x16float(VC[i / 2u])[i % 2u];
}
#else
@group(0) @binding(3) var<storage, read_write> KCw: array<f32>;
@group(0) @binding(4) var<storage, read_write> VCw: array<f32>;
@group(0) @binding(6) var<storage, read> KC: array<f32>;
@group(0) @binding(7) var<storage, read> VC: array<f32>;
fn kget(i: u32) -> f32 {
  return KC[i];
}
fn vget(i: u32) -> f32 {
  return VC[i];
}
#endif
fn krow(key: u32) -> vec2<u32> {
  return vec2<u32>(0u, key * p.kvStride);
}
fn kat(r: vec2<u32>, c: u32) -> f32 {
  return kget(r.y + c);
}
fn vat(r: vec2<u32>, c: u32) -> f32 {
  return vget(r.y + c);
}
#endif
@group(0) @binding(8) var<storage, read_write> O: array<f32>;
@group(0) @binding(9) var<storage, read_write> LSE: array<f32>;
@group(0) @binding(10) var<storage, read_write> POw: array<f32>;
@group(0) @binding(11) var<storage, read_write> PMLw: array<f32>;
@group(0) @binding(12) var<storage, read> PO: array<f32>;
@group(0) @binding(13) var<storage, read> PML: array<f32>;

const NEG: f32 = -3.0e38;

// The half nearest to x (ties to even) as bits, in integer arithmetic: bit-identical to
// engine/gguf/quant.ts f32ToF16 (NaN -> quiet NaN, overflow -> infinity, subnormal halves kept).
fn f16bits(x: f32) -> u32 {
  let u = bitcast<u32>(x);
  let sign = (u >> 16u) & 0x8000u;
  let a = u & 0x7fffffffu;
  let e = a >> 23u;
  if (e == 255u) {
    return sign | select(0x7c00u, 0x7e00u, (a & 0x7fffffu) != 0u);
  }
  if (e > 142u) {
    return sign | 0x7c00u;
  }
  if (e >= 113u) {
    var h = ((e - 112u) << 10u) | ((a >> 13u) & 0x3ffu);
    let rest = a & 0x1fffu;
    if (rest > 0x1000u || (rest == 0x1000u && (h & 1u) == 1u)) {
      h += 1u;
    }
    return sign | h;
  }
  if (e < 102u) {
    return sign;
  }
  let m = (a & 0x7fffffu) | 0x800000u;
  let shift = 126u - e; // 14..24: the value in units of 2^-24 is m >> shift
  var q = m >> shift;
  let rest = m & ((1u << shift) - 1u);
  let half = 1u << (shift - 1u);
  if (rest > half || (rest == half && (q & 1u) == 1u)) {
    q += 1u;
  }
  return sign | q;
}

fn f16pair(a: f32, b: f32) -> u32 {
  return f16bits(a) | (f16bits(b) << 16u);
}

@compute @workgroup_size(256)
fn kv_write(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) t: u32) {
  let i = (wid.y * p.gridX + wid.x) * 256u + t;
#if PAGED
#if KVF16
  let e = 2u * i; // i counts pairs; a pair never straddles rows (HD is a multiple of 4)
#else
  let e = i;
#endif
  if (e < p.total) {
    let tok = e / p.kvStride;
    let c = e % p.kvStride;
    let r = krow(p.pos + tok);
    let src = (p.qRow0 + tok) * p.kvStride + c;
    let kd = r.y + c;
    let vd = kd + PAGE * p.kvStride;
#if KVF16
    astore(r.x, kd / 2u, f16pair(Kin[src], Kin[src + 1u]));
    astore(r.x, vd / 2u, f16pair(Vin[src], Vin[src + 1u]));
#else
    astore(r.x, kd, bitcast<u32>(Kin[src]));
    astore(r.x, vd, bitcast<u32>(Vin[src]));
#endif
  }
#else
#if KVF16
  // i counts pairs; rows are a whole number of pairs (HD is a multiple of 4).
  if (i < p.total / 2u) {
    let src = p.qRow0 * p.kvStride + 2u * i;
    let dst = p.pos * p.kvStride / 2u + i;
    KCw[dst] = f16pair(Kin[src], Kin[src + 1u]);
    VCw[dst] = f16pair(Vin[src], Vin[src + 1u]);
  }
#else
  if (i < p.total) {
    let src = p.qRow0 * p.kvStride + i;
    let dst = p.pos * p.kvStride + i;
    KCw[dst] = Kin[src];
    VCw[dst] = Vin[src];
  }
#endif
#endif
}

const BQ: u32 = 16u;
const TPR: u32 = 4u;
const DPT: u32 = HD / TPR;
var<workgroup> kv: array<f32, BK * HD>;
var<workgroup> sp: array<f32, BQ * BK * TPR>;

@compute @workgroup_size(64)
fn flash(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) t: u32) {
  let h = wid.y;
  let kh = h / p.group;
  let r = t / TPR;
  let part = t % TPR;
  let qi = wid.x * BQ + r;
  let valid = qi < p.nQ;
  let qpos = p.pos + qi;
  let d0 = part * DPT;
  var q: array<f32, DPT>;
  var o: array<f32, DPT>;
  if (valid) {
    let qo = (p.qRow0 + qi) * p.qStride + h * HD + d0;
    for (var c = 0u; c < DPT; c++) {
      q[c] = Q[qo + c] * p.scale;
    }
  }
  var m = NEG;
  var l = 0.0;
  let lastQ = min(p.nQ, wid.x * BQ + BQ) - 1u;
  let kEnd = min(p.nKeys, p.pos + lastQ + 1u);
  for (var k0 = 0u; k0 < kEnd; k0 += BK) {
    let tr = krow(k0); // the tile's keys are consecutive rows (of one page, when paged)
    for (var idx = t; idx < BK * HD; idx += 64u) {
      let key = k0 + idx / HD;
      var v = 0.0;
      if (key < kEnd) {
        v = kat(tr, (idx / HD) * p.kvStride + kh * HD + idx % HD);
      }
      kv[idx] = v;
    }
    workgroupBarrier();
    for (var j = 0u; j < BK; j++) {
      var s = 0.0;
      for (var c = 0u; c < DPT; c++) {
        s += q[c] * kv[j * HD + d0 + c];
      }
      sp[(r * BK + j) * TPR + part] = s;
    }
    workgroupBarrier();
    var sc: array<f32, BK>;
    var mt = m;
    for (var j = 0u; j < BK; j++) {
      let b = (r * BK + j) * TPR;
      var s = (sp[b] + sp[b + 1u]) + (sp[b + 2u] + sp[b + 3u]);
      let key = k0 + j;
      if (key > qpos || key >= kEnd) {
        s = NEG;
      }
      sc[j] = s;
      mt = max(mt, s);
    }
    workgroupBarrier();
    for (var idx = t; idx < BK * HD; idx += 64u) {
      let key = k0 + idx / HD;
      var v = 0.0;
      if (key < kEnd) {
        v = vat(tr, (idx / HD) * p.kvStride + kh * HD + idx % HD);
      }
      kv[idx] = v;
    }
    workgroupBarrier();
    let corr = exp(m - mt);
    l = l * corr;
    for (var c = 0u; c < DPT; c++) {
      o[c] = o[c] * corr;
    }
    for (var j = 0u; j < BK; j++) {
      if (sc[j] > -1.0e38) {
        let pj = exp(sc[j] - mt);
        l += pj;
        for (var c = 0u; c < DPT; c++) {
          o[c] += pj * kv[j * HD + d0 + c];
        }
      }
    }
    m = mt;
    workgroupBarrier();
  }
  if (valid) {
    let oo = (p.qRow0 + qi) * p.qStride + h * HD + d0;
    for (var c = 0u; c < DPT; c++) {
      O[oo + c] = o[c] / l;
    }
    if (part == 0u) {
      LSE[h * p.lseStride + p.qRow0 + qi] = m + log(l);
    }
  }
}

var<workgroup> qs: array<f32, HD>;
var<workgroup> ss: array<f32, CHUNK>;
var<workgroup> red: array<f32, 64>;

@compute @workgroup_size(64)
fn decode_split(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) t: u32) {
  let split = wid.x;
  let h = wid.y;
  let qi = wid.z;
  let kh = h / p.group;
  let k0 = split * CHUNK;
  let k1 = max(k0, min(k0 + CHUNK, p.pos + qi + 1u));
  let qo = (p.qRow0 + qi) * p.qStride + h * HD;
  for (var c = t; c < HD; c += 64u) {
    qs[c] = Q[qo + c] * p.scale;
  }
  workgroupBarrier();
  var mloc = NEG;
  for (var j = t; j < CHUNK; j += 64u) {
    let key = k0 + j;
    var s = NEG;
    if (key < k1) {
      let r = krow(key);
      let ko = kh * HD;
      var d = 0.0;
      for (var c = 0u; c < HD; c += 4u) {
        d += dot(vec4<f32>(qs[c], qs[c + 1u], qs[c + 2u], qs[c + 3u]), vec4<f32>(kat(r, ko + c), kat(r, ko + c + 1u), kat(r, ko + c + 2u), kat(r, ko + c + 3u)));
      }
      s = d;
    }
    ss[j] = s;
    mloc = max(mloc, s);
  }
  red[t] = mloc;
  workgroupBarrier();
  for (var s = 32u; s > 0u; s >>= 1u) {
    if (t < s) {
      red[t] = max(red[t], red[t + s]);
    }
    workgroupBarrier();
  }
  let m = red[0];
  workgroupBarrier();
  var lsum = 0.0;
  for (var j = t; j < CHUNK; j += 64u) {
    let s = ss[j];
    var pj = 0.0;
    if (s > -1.0e38) {
      pj = exp(s - m);
    }
    ss[j] = pj;
    lsum += pj;
  }
  red[t] = lsum;
  workgroupBarrier();
  for (var s = 32u; s > 0u; s >>= 1u) {
    if (t < s) {
      red[t] += red[t + s];
    }
    workgroupBarrier();
  }
  let l = red[0];
  let slot = (qi * p.nHeads + h) * p.nSplits + split;
  for (var c = t; c < HD; c += 64u) {
    var acc = 0.0;
    for (var j = 0u; j < k1 - k0; j++) {
      acc += ss[j] * vat(krow(k0 + j), kh * HD + c);
    }
    POw[slot * HD + c] = acc;
  }
  if (t == 0u) {
    PMLw[slot * 2u] = m;
    PMLw[slot * 2u + 1u] = l;
  }
}

@compute @workgroup_size(64)
fn decode_merge(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) t: u32) {
  let h = wid.x;
  let qi = wid.y;
  let slot0 = (qi * p.nHeads + h) * p.nSplits;
  var mx = NEG;
  for (var s = 0u; s < p.nSplits; s++) {
    mx = max(mx, PML[(slot0 + s) * 2u]);
  }
  var tot = 0.0;
  for (var s = 0u; s < p.nSplits; s++) {
    tot += PML[(slot0 + s) * 2u + 1u] * exp(PML[(slot0 + s) * 2u] - mx);
  }
  let oo = (p.qRow0 + qi) * p.qStride + h * HD;
  for (var c = t; c < HD; c += 64u) {
    var acc = 0.0;
    for (var s = 0u; s < p.nSplits; s++) {
      acc += PO[(slot0 + s) * HD + c] * exp(PML[(slot0 + s) * 2u] - mx);
    }
    O[oo + c] = acc / tot;
  }
  if (t == 0u) {
    LSE[h * p.lseStride + p.qRow0 + qi] = mx + log(tot);
  }
}
