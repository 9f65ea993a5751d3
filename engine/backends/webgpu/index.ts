// The WebGPU backend (Dawn through npm `webgpu`): see backend.ts for the design, kernels/ for the WGSL.
import { WebGPUBackend, type WebGPUBackendOptions } from './backend.js';

export { WebGPUBackend, GpuAct, GpuWeight, GpuKVCache, type WebGPUBackendOptions } from './backend.js';
export { createGpuContext, NO_ADAPTER_MESSAGE, type GpuContext, type AdapterFacts, type DeviceOptions } from './device.js';
export { webgpuDoctor } from './doctor.js';

/** Opens the adapter and device; a UserError in one sentence when there is none (or only a refused software one). */
export function createWebGPUBackend(opts: WebGPUBackendOptions = {}): Promise<WebGPUBackend> {
  return WebGPUBackend.create(opts);
}
