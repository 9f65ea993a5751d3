// What `repokv doctor` reports about WebGPU: the adapter, whether it is a software one, the features in
// use and the limits the kernels are sized by. Never throws: a missing adapter is reported with its fix.

import { UserError } from '../../errors.js';
import { adapterFacts, createGpuContext, limitsObject, requestAdapter } from './device.js';

export interface WebGPUDoctorReport {
  ok: boolean;
  /** The one-sentence problem and fix when not ok. */
  error?: string;
  adapter?: ReturnType<typeof adapterFacts>;
  /** Features the adapter offers. */
  adapterFeatures?: string[];
  /** Features the backend uses. */
  using?: { shaderF16: boolean; subgroups: boolean };
  limits?: Record<string, number>;
  /** Whether `backend: auto` would pick this adapter (it never picks a software one). */
  autoPicks?: boolean;
  /** A tiny kernel ran and returned the right answer. */
  kernelCheck?: boolean;
}

export async function webgpuDoctor(): Promise<WebGPUDoctorReport> {
  try {
    await requestAdapter();
    const ctx = await createGpuContext();
    const report: WebGPUDoctorReport = {
      ok: true,
      adapter: ctx.adapter,
      adapterFeatures: ctx.adapterFeatures,
      using: { shaderF16: ctx.f16, subgroups: ctx.subgroups },
      limits: limitsObject(ctx.device.limits),
      autoPicks: !ctx.adapter.software,
    };
    try {
      const { WebGPUBackend } = await import('./backend.js');
      const b = new WebGPUBackend(ctx);
      const x = await b.read(b.add(upload(b, [1, 2, 3]), upload(b, [10, 20, 30])));
      report.kernelCheck = x[0] === 11 && x[1] === 22 && x[2] === 33;
      b.dispose();
    } catch (e) {
      report.kernelCheck = false;
      report.ok = false;
      report.error = `The WebGPU adapter was found but a test kernel failed (${(e as Error).message}); update the GPU driver or use --backend cpu.`;
    }
    return report;
  } catch (e) {
    return { ok: false, error: e instanceof UserError ? e.message : `WebGPU is unavailable: ${(e as Error).message}` };
  }
}

function upload(b: import('./backend.js').WebGPUBackend, values: number[]) {
  return b.fromHost(Float32Array.from(values), 1, values.length);
}
