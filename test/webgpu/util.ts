// Shared by the WebGPU tests: one backend per test file, seeded random data, error measures.
// No adapter is a failure with the one-sentence fix (CI installs lavapipe), never a skip.

import type { GGUFTensorInfo } from '../../engine/gguf/reader.js';
import { GGMLType, tensorBytes } from '../../engine/gguf/types.js';
import { dequantize, quantize } from '../../engine/gguf/quant.js';
import { Rng } from '../../engine/model/sampler.js';
import { WebGPUBackend, type WebGPUBackendOptions } from '../../engine/backends/webgpu/index.js';

export async function openBackend(opts: WebGPUBackendOptions = {}): Promise<WebGPUBackend> {
  return WebGPUBackend.create(opts);
}

export function randn(rng: Rng, n: number, scale = 1): Float32Array {
  const a = new Float32Array(n);
  for (let i = 0; i < n; i++) a[i] = rng.normal() * scale;
  return a;
}

export interface ErrorStats {
  /** max |y − ref| / max |ref| */
  maxRel: number;
  /** Σ(y − ref)² / Σ ref² (ggml test-backend-ops' NMSE) */
  nmse: number;
}

export function compare(y: Float32Array, ref: Float32Array): ErrorStats {
  if (y.length !== ref.length) throw new Error(`length ${y.length} vs reference ${ref.length}`);
  let maxErr = 0;
  let maxRef = 0;
  let se = 0;
  let sr = 0;
  for (let i = 0; i < y.length; i++) {
    const d = y[i] - ref[i];
    if (!Number.isFinite(y[i])) return { maxRel: Infinity, nmse: Infinity };
    maxErr = Math.max(maxErr, Math.abs(d));
    maxRef = Math.max(maxRef, Math.abs(ref[i]));
    se += d * d;
    sr += ref[i] * ref[i];
  }
  return { maxRel: maxRef > 0 ? maxErr / maxRef : maxErr, nmse: sr > 0 ? se / sr : se };
}

/** Records the worst error seen per label; printed at the end of a file so the report can quote it. */
export class ErrorLog {
  private worst = new Map<string, ErrorStats>();
  check(label: string, y: Float32Array, ref: Float32Array, bound: number): ErrorStats {
    const e = compare(y, ref);
    const w = this.worst.get(label);
    if (!w || e.maxRel > w.maxRel) this.worst.set(label, { maxRel: e.maxRel, nmse: Math.max(e.nmse, w?.nmse ?? 0) });
    if (!(e.maxRel <= bound)) throw new Error(`${label}: max relative error ${e.maxRel.toExponential(2)} (nmse ${e.nmse.toExponential(2)}) above the bound ${bound}`);
    return e;
  }
  /** Records an absolute error (e.g. of a log-sum-exp) under `label` and bounds it. */
  checkAbs(label: string, err: number, bound: number): void {
    const w = this.worst.get(label);
    if (!w || err > w.maxRel) this.worst.set(label, { maxRel: err, nmse: NaN });
    if (!(err <= bound)) throw new Error(`${label}: absolute error ${err.toExponential(2)} above the bound ${bound}`);
  }
  print(title: string): void {
    const rows = [...this.worst].map(([k, v]) => (Number.isNaN(v.nmse) ? `  ${k.padEnd(34)} maxAbs ${v.maxRel.toExponential(2)}` : `  ${k.padEnd(34)} maxRel ${v.maxRel.toExponential(2)}  nmse ${v.nmse.toExponential(2)}`));
    console.log(`# ${title}\n${rows.join('\n')}`);
  }
}

/** A weight as a GGUF tensor of `type`: the encoded bytes and the f32 values they decode to. */
export function makeWeight(rng: Rng, type: GGMLType, dims: number[], name = 'w'): { info: GGUFTensorInfo; bytes: Uint8Array; values: Float32Array } {
  const n = dims.reduce((a, b) => a * b, 1);
  const bytes = quantize(type, randn(rng, n, 0.5));
  const info: GGUFTensorInfo = { name, dims, type, offset: 0, fileOffset: 0, nElements: n, nBytes: tensorBytes(type, n) };
  return { info, bytes, values: dequantize(type, bytes, n) };
}

export const WEIGHT_TYPES: { type: GGMLType; name: string; block: number }[] = [
  { type: GGMLType.F32, name: 'F32', block: 1 },
  { type: GGMLType.F16, name: 'F16', block: 1 },
  { type: GGMLType.BF16, name: 'BF16', block: 1 },
  { type: GGMLType.Q8_0, name: 'Q8_0', block: 32 },
  { type: GGMLType.Q4_0, name: 'Q4_0', block: 32 },
  { type: GGMLType.Q4_K, name: 'Q4_K', block: 256 },
  { type: GGMLType.Q6_K, name: 'Q6_K', block: 256 },
];
