// Shared by the sparse-prefill kernels (sparse_estimate, sparse_topk, sparse_index, sparse_attention;
// engine/backends/webgpu/sparse.ts records them): the parameter block, the scratch buffer SP that every
// pass reads and writes, q, and read-only access to the sequence's K/V (contiguous or paged — the read
// half of kernels/attention.wgsl, with the same layout; K/V rows are written there, by kv_write).
//
// SP (u32 words; floats stored as their bits): a 32-word header describing the layout (written by
// sparse_init from the host's upload), then one region of SP[0] words per query head of the batch
// ("slot"). Header words: 0 slot words, 1..12 offsets of the slot regions (relative to the slot's
// base), 13..23 capacities and sizes; slot word 0..3 = (query head, pattern kind, a, b). See sparse.ts `Layout`.
//
// Bindings (group 0) across the sparse kernels: 0 parameters (uniform), 1 SP, 3 U (sparse_init's
// upload), 4 ST (kept-entries counter), 5 q, 6/7 contiguous K/V, 8 out, 9 lse, 14 page table, 20..27 KV
// arenas (read-only here). Defines: KVACCESS declares q and the K/V access (with HD, PAGED, PAGE,
// KVF16, AR2..AR8 as attention.wgsl).
//
// Parameters (one uniform block, 16 words): the attention kernel's geometry for this sequence slice
// (nQ rows at batch row qRow0, positions pos.., nKeys = pos + nQ keys), slot0 (first slot of the
// dispatch: wid.z counts from it), gridX (workgroups per row of a 2-D folded grid: a linear workgroup
// id is wid.y * gridX + wid.x), paging words as attention.wgsl, aux (per-kernel).

struct Params {
  nQ: u32,
  qRow0: u32,
  qStride: u32,   // nHeads * HD
  kvStride: u32,  // nKVHeads * HD
  group: u32,     // nHeads / nKVHeads
  pos: u32,       // position of the slice's first query (= keys cached before it)
  nKeys: u32,     // pos + nQ
  scale: f32,
  lseStride: u32, // rows of the batch
  nHeads: u32,
  slot0: u32,
  gridX: u32,
  ppa: u32,       // PAGED: pages per arena
  pageVals: u32,  // PAGED: values per page
  layerVals: u32, // PAGED: this layer's offset in a page
  aux: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> SP: array<u32>;

// Pattern kinds (slot word 1).
const KIND_DENSE: u32 = 0u;
const KIND_ASHAPE: u32 = 1u;
const KIND_VS: u32 = 2u;
const KIND_BS: u32 = 3u;

// Header word indices.
const H_SLOT_WORDS: u32 = 0u;
const H_PART: u32 = 1u;    // VS row statistics per key split: [nSplits][64][m, l]
const H_ROW: u32 = 2u;     // VS merged row statistics: [64][m, l]
const H_KEYS: u32 = 3u;    // VS selection keys: vertical [nK] then slash [nK] (by offset)
const H_SEL: u32 = 4u;     // VS selections: [count, capV columns] then [count, capS offsets], ascending
const H_KP: u32 = 5u;      // BS mean-pooled keys [nKB][HD] (f32)
const H_QP: u32 = 6u;      // BS mean-pooled queries [nQB][HD] (f32)
const H_BSK: u32 = 7u;     // BS selection keys [nQB][nKB]
const H_BSSEL: u32 = 8u;   // BS selections [nQB][count, capB key blocks]
const H_IDX: u32 = 9u;     // index header per query block: [range count, column count, kept entries, 0]
const H_RANGES: u32 = 10u; // key ranges [start, end) per query block, block b at b * capR
const H_COLS: u32 = 11u;   // gathered columns per query block, block b at b * capC
const H_LSE: u32 = 12u;    // lse of each query row (bits; -inf where a row attends nothing)
const H_CAPV: u32 = 13u;
const H_CAPS: u32 = 14u;
const H_CAPR: u32 = 15u;
const H_CAPR_LAST: u32 = 16u;
const H_CAPC: u32 = 17u;
const H_CAPB: u32 = 18u;
const H_NSPLITS: u32 = 19u;
const H_NQB: u32 = 21u;
const H_NKB: u32 = 22u;
const H_HD: u32 = 23u;
const HEADER_WORDS: u32 = 32u;

/** First word of slot s. */
fn sbase(s: u32) -> u32 {
  return HEADER_WORDS + s * SP[H_SLOT_WORDS];
}
/** Word of region `r` (a header index) of slot s. */
fn reg(s: u32, r: u32) -> u32 {
  return sbase(s) + SP[r];
}
fn spf(i: u32) -> f32 {
  return bitcast<f32>(SP[i]);
}
fn spset(i: u32, x: f32) {
  SP[i] = bitcast<u32>(x);
}

const NEG: f32 = -3.0e38;
/** The selection key of +infinity (a forced entry): larger than every finite score's. */
const INF_KEY: u32 = 0xff800000u;

/**
 * An f32 as a u32 whose unsigned order is the float order (flip negatives, set the sign bit of
 * positives); −0 counts as +0, so equal scores tie as in patterns.ts topK.
 */
fn okey(x: f32) -> u32 {
  let u = select(bitcast<u32>(x), 0u, x == 0.0);
  return select(u | 0x80000000u, ~u, (u & 0x80000000u) != 0u);
}

/** Linear id of a workgroup in a folded 2-D grid. */
fn lin(wid: vec3<u32>) -> u32 {
  return wid.y * p.gridX + wid.x;
}

#if KVACCESS
@group(0) @binding(5) var<storage, read> Q: array<f32>;
#if PAGED
@group(0) @binding(14) var<storage, read> PT: array<u32>;
@group(0) @binding(20) var<storage, read> A0: array<u32>;
#if AR2
@group(0) @binding(21) var<storage, read> A1: array<u32>;
#endif
#if AR3
@group(0) @binding(22) var<storage, read> A2: array<u32>;
#endif
#if AR4
@group(0) @binding(23) var<storage, read> A3: array<u32>;
#endif
#if AR5
@group(0) @binding(24) var<storage, read> A4: array<u32>;
#endif
#if AR6
@group(0) @binding(25) var<storage, read> A5: array<u32>;
#endif
#if AR7
@group(0) @binding(26) var<storage, read> A6: array<u32>;
#endif
#if AR8
@group(0) @binding(27) var<storage, read> A7: array<u32>;
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
@group(0) @binding(6) var<storage, read> KC: array<u32>;
@group(0) @binding(7) var<storage, read> VC: array<u32>;
fn kat(r: vec2<u32>, c: u32) -> f32 {
  let i = r.y + c;
  return unpack2x16float(KC[i / 2u])[i % 2u];
}
fn vat(r: vec2<u32>, c: u32) -> f32 {
  let i = r.y + c;
  return unpack2x16float(VC[i / 2u])[i % 2u];
}
#else
@group(0) @binding(6) var<storage, read> KC: array<f32>;
@group(0) @binding(7) var<storage, read> VC: array<f32>;
fn kat(r: vec2<u32>, c: u32) -> f32 {
  return KC[r.y + c];
}
fn vat(r: vec2<u32>, c: u32) -> f32 {
  return VC[r.y + c];
}
#endif
fn krow(key: u32) -> vec2<u32> {
  return vec2<u32>(0u, key * p.kvStride);
}
#endif
#endif
