// Sparse prefill attention (MInference Alg. 5; reference: engine/attention/sparse/attention.ts
// sparseAttentionRef = attentionRef with the index as `keep`): causal GQA attention where each 64-row
// query block attends only its index's key ranges and gathered columns (SP, written by
// sparse_index.wgsl), returning (out, lse) like kernels/attention.wgsl's flash.
//
// sparse_flash grid (⌈nQ/16⌉ folded, 1, slots), 64 threads: the flash kernel's shape — a workgroup owns
//              BQ = 16 query rows of one head (4 threads per row, each a quarter of q and of the
//              accumulator in registers), online softmax over key tiles of BK keys through workgroup
//              memory. The difference is where a tile's keys come from: thread 0 fills a list of BK key
//              indices from a cursor over the block's ranges (ascending) and then its columns — every
//              tile full, a 64-wide slash range is not padded to tile boundaries, and columns are
//              gathered exactly like range keys (PIT). Keys at or past the tile's causal horizon are
//              skipped; the causal mask is applied per row (key > row position → masked), which makes
//              diagonal blocks causal inside. The lse goes to SP (sparse_index.wgsl sparse_lse copies it
//              to the batch's lse buffer, keeping this kernel at the dense kernel's binding count).
//              A row that attends nothing gets out 0 and lse −∞ (the reference's convention).
// Defines: HD, BK, PAGED/PAGE/KVF16/AR2..AR8, KVACCESS.

#include "sparse_common.wgsl"

@group(0) @binding(8) var<storage, read_write> O: array<f32>;

const BQ: u32 = 16u;
const TPR: u32 = 4u;
const DPT: u32 = HD / TPR;
var<workgroup> kv: array<f32, BK * HD>;
var<workgroup> sp: array<f32, BQ * BK * TPR>;
var<workgroup> tk: array<u32, BK>;
var<workgroup> trow: array<vec2<u32>, BK>;
var<workgroup> wcnt: u32;

@compute @workgroup_size(64)
fn sparse_flash(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) t: u32) {
  let slot = p.slot0 + wid.z;
  let qt = lin(wid);
  let h = SP[sbase(slot)];
  let kh = h / p.group;
  let r = t / TPR;
  let part = t % TPR;
  let qi = qt * BQ + r;
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
  // The tile's causal horizon: keys ≥ hq are masked for every row of it.
  let lastQ = min(p.nQ, qt * BQ + BQ) - 1u;
  let hq = min(p.nKeys, p.pos + lastQ + 1u);
  let b = (qt * BQ) / 64u;
  let hdr = reg(slot, H_IDX) + b * 4u;
  let R = reg(slot, H_RANGES) + b * SP[H_CAPR] * 2u;
  let C = reg(slot, H_COLS) + b * SP[H_CAPC];
  // Thread 0's cursor: range ri at key ra (started), column ci.
  var ri = 0u;
  var ra = 0u;
  var started = false;
  var ci = 0u;
  var m = NEG;
  var l = 0.0;
  loop {
    if (t == 0u) {
      let nr = SP[hdr];
      let nc = SP[hdr + 1u];
      var n = 0u;
      loop {
        if (n >= BK || ri >= nr) {
          break;
        }
        let a = SP[R + ri * 2u];
        if (a >= hq) {
          ri = nr; // ranges ascend: none later starts below hq
          break;
        }
        let e = min(SP[R + ri * 2u + 1u], hq);
        if (!started) {
          ra = a;
          started = true;
        }
        let take = min(BK - n, e - ra);
        for (var x = 0u; x < take; x++) {
          tk[n + x] = ra + x;
        }
        n += take;
        ra += take;
        if (ra >= e) {
          ri += 1u;
          started = false;
        }
      }
      loop {
        if (n >= BK || ci >= nc) {
          break;
        }
        let c = SP[C + ci];
        if (c >= hq) {
          ci = nc;
          break;
        }
        tk[n] = c;
        n += 1u;
        ci += 1u;
      }
      wcnt = n;
    }
    let cnt = workgroupUniformLoad(&wcnt);
    if (cnt == 0u) {
      break;
    }
    // Each key's row address once per tile (a page-table lookup), not once per element.
    for (var jj = t; jj < cnt; jj += 64u) {
      trow[jj] = krow(tk[jj]);
    }
    workgroupBarrier();
    for (var idx = t; idx < BK * HD; idx += 64u) {
      let jj = idx / HD;
      var v = 0.0;
      if (jj < cnt) {
        v = kat(trow[jj], kh * HD + idx % HD);
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
      let bb = (r * BK + j) * TPR;
      var s = (sp[bb] + sp[bb + 1u]) + (sp[bb + 2u] + sp[bb + 3u]);
      if (j >= cnt || tk[j] > qpos) {
        s = NEG;
      }
      sc[j] = s;
      mt = max(mt, s);
    }
    workgroupBarrier();
    for (var idx = t; idx < BK * HD; idx += 64u) {
      let jj = idx / HD;
      var v = 0.0;
      if (jj < cnt) {
        v = vat(trow[jj], kh * HD + idx % HD);
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
    let live = l > 0.0;
    for (var c = 0u; c < DPT; c++) {
      O[oo + c] = select(0.0, o[c] / l, live);
    }
    if (part == 0u) {
      SP[reg(slot, H_LSE) + qi] = select(0xff800000u, bitcast<u32>(m + log(l)), live);
    }
  }
}
