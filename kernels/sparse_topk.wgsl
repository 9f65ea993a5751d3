// Sparse prefill: exact top-k by radix select, one workgroup of 256 threads per segment (a list of u32
// selection keys in SP: okey(score), INF_KEY for forced entries). Same result as patterns.ts topK: the
// k largest, ties toward the lower index, indices written ascending after a count word.
//
// 1. Radix select, 4 passes of 8 bits from the top: a 256-bin histogram (workgroup atomics) of the keys
//    that match the prefix found so far; thread 0 walks the bins from the top to the one holding the
//    k-th largest. After the 4 passes T is the k-th largest key exactly and `need` the number of keys
//    equal to T that belong to the top k (the lowest-indexed ones).
// 2. Compaction in index order, 256 keys at a time: one workgroup scan of packed counts (keys > T in
//    the low 16 bits, keys = T in the high 16); key i goes to position (#greater before i) +
//    min(#equal before i, need). Output is ascending without a sort.
// Cost: 5 reads of the segment; fine for MInference's segments (≤ nK keys per head, ≤ nKB per query
// block). One workgroup per segment leaves a big GPU idle when segments are few (VS: 2 per head): a
// multi-workgroup histogram is left for later.
//
// Segments by mode (define): TOPK_VS grid (2, 1, VS slots): x = 0 vertical scores (k = k_v), x = 1
// slash scores (k = k_s) of the slot; TOPK_BS grid (nQB folded, 1, BS slots): the visible key blocks of
// query block lin(wid) (k = max(blocks, forced)); neither: a table at SP[32 + 4·s] = (keys word, n, k,
// output word) for segment s = lin(wid) (tests, sparse.ts topKRaw).

#include "sparse_common.wgsl"

var<workgroup> hist: array<atomic<u32>, 256>;
var<workgroup> sc: array<u32, 256>;
var<workgroup> wsel: vec2<u32>;
var<workgroup> wn: u32;
var<workgroup> wk: u32;
var<workgroup> wkeys: u32;
var<workgroup> wout: u32;

@compute @workgroup_size(256)
fn topk(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) t: u32) {
  if (t == 0u) {
#if TOPK_VS
    let slot = p.slot0 + wid.z;
    let base = sbase(slot);
    let nK = p.nKeys;
    let capV = SP[H_CAPV];
    wn = nK;
    wkeys = reg(slot, H_KEYS) + wid.x * nK;
    if (wid.x == 0u) {
      wk = min(nK, max(SP[base + 2u], 30u));
      wout = reg(slot, H_SEL);
    } else {
      wk = min(nK, max(SP[base + 3u], 100u));
      wout = reg(slot, H_SEL) + 1u + capV;
    }
#else
#if TOPK_BS
    let slot = p.slot0 + wid.z;
    let base = sbase(slot);
    let qb = lin(wid);
    let nQB = (p.nQ + 63u) / 64u;
    let nKB = (p.nKeys + 63u) / 64u;
    let p0 = p.pos + qb * 64u;
    let horizon = min(p.nKeys, p.pos + min(p.nQ, qb * 64u + 64u));
    let visible = (horizon + 63u) / 64u;
    let diag0 = min(p0, horizon - 1u) / 64u;
    var forced = visible - diag0;
    if (diag0 > 0u) {
      forced += 1u;
    }
    wn = select(0u, visible, qb < nQB);
    wk = max(SP[base + 2u], forced);
    wkeys = reg(slot, H_BSK) + qb * nKB;
    wout = reg(slot, H_BSSEL) + qb * (SP[H_CAPB] + 1u);
#else
    let e = HEADER_WORDS + lin(wid) * 4u;
    wkeys = SP[e];
    wn = SP[e + 1u];
    wk = SP[e + 2u];
    wout = SP[e + 3u];
#endif
#endif
  }
  let n = workgroupUniformLoad(&wn);
  if (n == 0u) {
    return;
  }
  let keys = wkeys;
  let out = wout;
  let k = min(wk, n);

  // 1. Radix select.
  var prefix = 0u;
  var mask = 0u;
  var need = k;
  for (var ps = 0u; ps < 4u; ps++) {
    let shift = 24u - 8u * ps;
    atomicStore(&hist[t], 0u);
    workgroupBarrier();
    for (var i0 = 0u; i0 < n; i0 += 256u) {
      let i = i0 + t;
      if (i < n) {
        let key = SP[keys + i];
        if ((key & mask) == prefix) {
          atomicAdd(&hist[(key >> shift) & 255u], 1u);
        }
      }
    }
    workgroupBarrier();
    if (t == 0u) {
      var cum = 0u;
      var b = 255u;
      var chosen = 0u;
      var rem = 0u;
      loop {
        let c = atomicLoad(&hist[b]);
        if (cum + c >= need) {
          chosen = b;
          rem = need - cum;
          break;
        }
        cum += c;
        if (b == 0u) {
          break;
        }
        b -= 1u;
      }
      wsel = vec2<u32>(chosen, rem);
    }
    let s = workgroupUniformLoad(&wsel);
    prefix |= s.x << shift;
    mask |= 0xffu << shift;
    need = s.y;
  }
  let T = prefix;

  // 2. Compaction, ascending.
  var gBase = 0u;
  var eBase = 0u;
  for (var i0 = 0u; i0 < n; i0 += 256u) {
    let i = i0 + t;
    var key = 0u;
    if (i < n) {
      key = SP[keys + i];
    }
    let gt = i < n && key > T;
    let eq = i < n && key == T;
    let v = select(0u, 1u, gt) | select(0u, 0x10000u, eq);
    sc[t] = v;
    workgroupBarrier();
    for (var off = 1u; off < 256u; off <<= 1u) {
      var add = 0u;
      if (t >= off) {
        add = sc[t - off];
      }
      workgroupBarrier();
      sc[t] += add;
      workgroupBarrier();
    }
    let ex = sc[t] - v;
    let G = gBase + (ex & 0xffffu);
    let E = eBase + (ex >> 16u);
    if (gt) {
      SP[out + 1u + G + min(E, need)] = i;
    }
    if (eq && E < need) {
      SP[out + 1u + G + E] = i;
    }
    let tot = sc[255];
    gBase += tot & 0xffffu;
    eBase += tot >> 16u;
    workgroupBarrier();
  }
  if (t == 0u) {
    SP[out] = k;
  }
}
