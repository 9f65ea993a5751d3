// Adapter and device setup for the WebGPU backend (Dawn through npm `webgpu`).
//
// - Requests `shader-f16` and `subgroups` when the adapter offers them and runs without them when not
//   (every kernel has a workgroup-memory reduction path; weights in f16 are decoded from u32 words with
//   unpack2x16float, so f16 storage never needs the feature).
// - Requests the adapter's own limits: WebGPU hands out the spec defaults (16 KiB workgroup memory,
//   128 MiB bindings) unless asked for more (ggml and tinygrad do the same).
// - Subgroup size is read from the adapter, never assumed: lavapipe runs 8 lanes on AVX2 hosts.

import { create, globals } from 'webgpu';
import { UserError } from '../../errors.js';

export interface AdapterFacts {
  vendor: string;
  architecture: string;
  device: string;
  description: string;
  /** A CPU implementation (lavapipe/llvmpipe, SwiftShader) or an adapter flagged as fallback. */
  software: boolean;
  subgroupMinSize: number;
  subgroupMaxSize: number;
}

export interface DeviceOptions {
  /** Use `subgroups` when offered (default true). False tests the workgroup-reduction path. */
  subgroups?: boolean;
  /** Use `shader-f16` when offered (default true). */
  f16?: boolean;
  /** Prefer a hardware adapter; with `software: false` a software one is refused (backend auto). */
  allowSoftware?: boolean;
}

export interface GpuContext {
  device: GPUDevice;
  adapter: AdapterFacts;
  /** Features in use (a subset of those offered). */
  subgroups: boolean;
  f16: boolean;
  /** Every feature the adapter offers, for `doctor`. */
  adapterFeatures: string[];
  limits: GPUSupportedLimits;
  /** Lost-device message, once lost. */
  lost?: string;
}

const SOFTWARE_NAMES = /llvmpipe|lavapipe|swiftshader|software|softpipe|warp|microsoft basic render/i;

let gpuInstance: GPU | undefined;

/**
 * The process-wide Dawn instance. Toggles: `vulkan_enable_f16_on_nvidia` because Dawn hides shader-f16
 * on NVIDIA's Vulkan driver unless asked (crbug.com/42251215); it is a no-op elsewhere.
 */
export function gpu(): GPU {
  if (!gpuInstance) {
    Object.assign(globalThis, globals);
    gpuInstance = create(['enable-dawn-features=vulkan_enable_f16_on_nvidia']);
  }
  return gpuInstance;
}

export const NO_ADAPTER_MESSAGE =
  'No WebGPU adapter was found: install a Vulkan driver (for example Mesa\'s mesa-vulkan-drivers; on a machine without a GPU, or on CI, run scripts/setup-vulkan.sh to install the software one, lavapipe).';

/** The adapter (a UserError naming the fix when there is none). `from` is another Dawn instance, for tests. */
export async function requestAdapter(from: GPU = gpu()): Promise<GPUAdapter> {
  let adapter: GPUAdapter | null = null;
  try {
    adapter = await from.requestAdapter({ powerPreference: 'high-performance' });
  } catch {
    adapter = null;
  }
  if (!adapter) throw new UserError(NO_ADAPTER_MESSAGE);
  return adapter;
}

export function adapterFacts(adapter: GPUAdapter): AdapterFacts {
  const i = adapter.info as GPUAdapterInfo & { isFallbackAdapter?: boolean; subgroupMinSize?: number; subgroupMaxSize?: number };
  const names = `${i.vendor} ${i.architecture} ${i.device} ${i.description}`;
  const fallback = Boolean(i.isFallbackAdapter ?? (adapter as unknown as { isFallbackAdapter?: boolean }).isFallbackAdapter);
  return {
    vendor: i.vendor ?? '',
    architecture: i.architecture ?? '',
    device: i.device ?? '',
    description: i.description ?? '',
    software: fallback || SOFTWARE_NAMES.test(names) || i.architecture === 'software',
    subgroupMinSize: i.subgroupMinSize ?? 0,
    subgroupMaxSize: i.subgroupMaxSize ?? 0,
  };
}

/** Limits worth reporting and sizing kernels by. */
export const REPORTED_LIMITS = [
  'maxBufferSize',
  'maxStorageBufferBindingSize',
  'maxUniformBufferBindingSize',
  'minStorageBufferOffsetAlignment',
  'minUniformBufferOffsetAlignment',
  'maxStorageBuffersPerShaderStage',
  'maxComputeWorkgroupStorageSize',
  'maxComputeInvocationsPerWorkgroup',
  'maxComputeWorkgroupSizeX',
  'maxComputeWorkgroupsPerDimension',
] as const;

export function limitsObject(l: GPUSupportedLimits): Record<string, number> {
  const o: Record<string, number> = {};
  for (const k of REPORTED_LIMITS) o[k] = (l as unknown as Record<string, number>)[k];
  return o;
}

export async function createGpuContext(opts: DeviceOptions = {}): Promise<GpuContext> {
  const adapter = await requestAdapter();
  const facts = adapterFacts(adapter);
  if (opts.allowSoftware === false && facts.software) {
    throw new UserError(`The only WebGPU adapter is a software one (${facts.device || facts.description}); use the CPU backend instead (--backend cpu).`);
  }
  const offered = [...adapter.features] as string[];
  const want: GPUFeatureName[] = [];
  const useF16 = opts.f16 !== false && adapter.features.has('shader-f16');
  const useSub = opts.subgroups !== false && adapter.features.has('subgroups') && facts.subgroupMinSize >= 4;
  if (useF16) want.push('shader-f16');
  if (useSub) want.push('subgroups');
  if (adapter.features.has('timestamp-query')) want.push('timestamp-query');
  const requiredLimits: Record<string, number> = {};
  for (const k of REPORTED_LIMITS) {
    if (k.startsWith('min')) continue; // alignments: keep the defaults (requesting a smaller one is allowed but not needed)
    requiredLimits[k] = (adapter.limits as unknown as Record<string, number>)[k];
  }
  let device: GPUDevice;
  try {
    device = await adapter.requestDevice({ requiredFeatures: want, requiredLimits });
  } catch (e) {
    throw new UserError(`The WebGPU adapter ${facts.device || facts.description} refused to create a device (${(e as Error).message}); update the GPU driver or use --backend cpu.`);
  }
  const ctx: GpuContext = { device, adapter: facts, subgroups: useSub, f16: useF16, adapterFeatures: offered.sort(), limits: device.limits };
  void device.lost.then((info) => {
    ctx.lost = info.message || String(info.reason);
  });
  return ctx;
}
