// Adapter and device setup for the WebGPU backend (Dawn through npm `webgpu`).
//
// - Requests `shader-f16` and `subgroups` when the adapter offers them and runs without them when not
//   (every kernel has a workgroup-memory reduction path; weights in f16 are decoded from u32 words with
//   unpack2x16float, so f16 storage never needs the feature).
// - Requests only the limits the kernels are sized by, at the adapter's values where they exceed the
//   WebGPU defaults (which are 16 KiB workgroup memory, 128 MiB bindings, 256 MiB buffers, 8 storage
//   buffers per stage): NEEDED_LIMITS. Everything else stays at the defaults.
// - Dawn's start-up notices about clamped driver limits are kept off stderr (quiet-stderr.ts explains
//   their cause: adapter enumeration, not the limits a device requests).
// - Subgroup size is read from the adapter, never assumed: lavapipe runs 8 lanes on AVX2 hosts.

import { create, globals } from 'webgpu';
import { UserError } from '../../errors.js';
import { quietNativeStderr } from './quiet-stderr.js';

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
  /** Bytes of GPU buffers alive now and at most so far (weights, KV, activations, staging). */
  memory: { bytes: number; peakBytes: number };
}

/**
 * Counts every buffer the device creates and destroys, wherever in the backend that happens, so
 * `repokv bench engine` and `doctor` can report GPU memory (WebGPU has no query for it).
 */
function trackBuffers(device: GPUDevice, memory: { bytes: number; peakBytes: number }): void {
  const create = device.createBuffer.bind(device);
  device.createBuffer = (desc: GPUBufferDescriptor): GPUBuffer => {
    const b = create(desc);
    const size = b.size;
    memory.bytes += size;
    memory.peakBytes = Math.max(memory.peakBytes, memory.bytes);
    const destroy = b.destroy.bind(b);
    let alive = true;
    b.destroy = (): undefined => {
      if (alive) {
        alive = false;
        memory.bytes -= size;
      }
      return destroy();
    };
    return b;
  };
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

const enumerated = new WeakSet<GPU>();

/** The adapter (a UserError naming the fix when there is none). `from` is another Dawn instance, for tests. */
export async function requestAdapter(from: GPU = gpu()): Promise<GPUAdapter> {
  let adapter: GPUAdapter | null = null;
  try {
    const ask = () => from.requestAdapter({ powerPreference: 'high-performance' });
    // An instance enumerates its adapters (and prints Dawn's limit notices) in the synchronous part
    // of its first requestAdapter call.
    const pending = enumerated.has(from) ? ask() : quietNativeStderr(ask);
    enumerated.add(from);
    adapter = await pending;
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

/**
 * The limits the backend is sized by, and why; each is requested at the adapter's value (capped where
 * more buys nothing) when that exceeds the WebGPU default.
 */
export const NEEDED_LIMITS: Record<string, { cap?: number; why: string }> = {
  maxBufferSize: { why: 'weights, KV arenas and activations larger than 256 MiB' },
  maxStorageBufferBindingSize: { why: 'one binding per weight chunk, KV arena or activation (past it tensors are split)' },
  maxComputeWorkgroupStorageSize: { cap: 32768, why: 'flash attention key tiles of 32 keys at head dim 128' },
  maxStorageBuffersPerShaderStage: { cap: 12, why: 'paged attention binds up to 8 KV arenas beside q, out, lse and the page table' },
};

export function neededLimits(adapterLimits: GPUSupportedLimits): Record<string, number> {
  const out: Record<string, number> = {};
  const lim = adapterLimits as unknown as Record<string, number>;
  for (const [k, { cap }] of Object.entries(NEEDED_LIMITS)) {
    const v = Math.min(lim[k], cap ?? Infinity);
    if (Number.isFinite(v) && v > 0) out[k] = v;
  }
  return out;
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
  const requiredLimits = neededLimits(adapter.limits);
  let device: GPUDevice;
  try {
    device = await adapter.requestDevice({ requiredFeatures: want, requiredLimits });
  } catch (e) {
    throw new UserError(`The WebGPU adapter ${facts.device || facts.description} refused to create a device (${(e as Error).message}); update the GPU driver or use --backend cpu.`);
  }
  const memory = { bytes: 0, peakBytes: 0 };
  trackBuffers(device, memory);
  const ctx: GpuContext = { device, adapter: facts, subgroups: useSub, f16: useF16, adapterFeatures: offered.sort(), limits: device.limits, memory };
  void device.lost.then((info) => {
    ctx.lost = info.message || String(info.reason);
  });
  return ctx;
}
