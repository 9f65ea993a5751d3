// The vertical-slash estimate's expensive half on onnxruntime: Â = causal softmax(scale · Q_last · Kᵀ)
// for the last 64 queries of a chunk against all keys — one [64, d] × [d, nK] GEMM (FusedMatMul) plus
// a mask and a Softmax, instead of 64·nK·d multiply-adds in plain TypeScript (~1 s per head at 32K).
// Column and diagonal sums and the top-k stay on the host (verticalSlashFromProbs: 64·nK adds).

import { DT, F, GraphBuilder } from '../../backends/cpu/onnx.js';
import { f32Tensor, Graph, type SessionConfig } from '../../backends/cpu/ort.js';
import { LAST_Q, verticalSlashFromProbs, type HeadInput, type VerticalSlash } from './patterns.js';

export class CpuVerticalSlashEstimator {
  private graphs = new Map<string, Graph>();
  constructor(private readonly cfg: SessionConfig = {}) {}

  private graph(d: number, scale: number): Graph {
    const key = `${d}/${scale}`;
    let g = this.graphs.get(key);
    if (!g) {
      const b = new GraphBuilder('vs_estimate');
      const q = b.input('q', DT.FLOAT, ['L', d]);
      const k = b.input('k', DT.FLOAT, ['n', d]);
      const qpos = b.input('qpos', DT.FLOAT, ['L']);
      const kpos = b.input('kpos', DT.FLOAT, ['n']);
      const s = b.op('FusedMatMul', [q, k], { transA: 0, transB: 1, alpha: new F(scale) }, 'com.microsoft'); // [L, n]
      const future = b.op('Less', [b.op('Unsqueeze', [qpos, b.i64([1])]), kpos]);
      const masked = b.op('Add', [s, b.op('Where', [future, b.f32([-Infinity], []), b.f32([0], [])])]);
      b.node('Softmax', [masked], { axis: -1 }, { outputs: ['p'] });
      b.output('p', DT.FLOAT, ['L', 'n']);
      g = new Graph(b.build(), this.cfg);
      this.graphs.set(key, g);
    }
    return g;
  }

  /** Â [L, nK] for the last L = min(64, nQ) queries (the same values as lastQueryProbs, in f32). */
  probs(h: HeadInput): Float32Array {
    const { nQ, nK, qPos0, headDim: d } = h;
    const L = Math.min(LAST_Q, nQ);
    const qpos = new Float32Array(L);
    for (let r = 0; r < L; r++) qpos[r] = qPos0 + nQ - L + r;
    const kpos = new Float32Array(nK);
    for (let j = 0; j < nK; j++) kpos[j] = j;
    const p = new Float32Array(L * nK);
    this.graph(d, h.scale).run(
      { q: f32Tensor(h.q.subarray((nQ - L) * d, nQ * d), [L, d]), k: f32Tensor(h.k.subarray(0, nK * d), [nK, d]), qpos: f32Tensor(qpos, [L]), kpos: f32Tensor(kpos, [nK]) },
      { p: f32Tensor(p, [L, nK]) },
    );
    return p;
  }

  estimate(h: HeadInput, vertical: number, slash: number): VerticalSlash {
    const L = Math.min(LAST_Q, h.nQ);
    return verticalSlashFromProbs(this.probs(h), L, h.nK, h.qPos0 + h.nQ - L, vertical, slash);
  }

  dispose(): void {
    for (const g of this.graphs.values()) g.dispose();
    this.graphs.clear();
  }
}
