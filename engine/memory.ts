// The one memory check before a model loads: refuse, with a sentence naming the model and the fix, a
// model whose weights (as the chosen backend keeps them in host memory) and one context of KV would
// not fit in the memory available — instead of an out-of-memory kill halfway through loading.

import { readFileSync } from 'node:fs';
import { freemem } from 'node:os';
import type { GGUFTensorInfo } from './gguf/reader.js';
import { UserError } from './errors.js';
import { estimatePackedBytes, type Precision } from './backends/cpu/weights.js';

export interface MemoryCheckOptions {
  /** Which backend will hold the weights: they live in host memory for 'cpu' and 'reference'. */
  backend: 'cpu' | 'reference' | 'webgpu';
  /** CPU backend: 'int8' keeps quantized blocks (MatMulNBits), 'f32' dequantizes. */
  precision?: Precision;
  /** KV memory to count on top of the weights (one full context). */
  kvBytes?: number;
  /** Bytes available (default: MemAvailable, else os.freemem()). */
  available?: number;
}

/** Host bytes a tensor takes once the backend holds it. */
export function hostBytes(t: GGUFTensorInfo, opts: MemoryCheckOptions): number {
  switch (opts.backend) {
    case 'cpu':
      // Packed for onnxruntime; the embedding table also stays on the host in its GGUF form for
      // `embed` (engine/backends/cpu/README.md).
      return estimatePackedBytes(t, opts.precision ?? 'int8') + (t.name === 'token_embd.weight' ? t.nBytes : 0);
    case 'reference':
      return t.nElements * 4; // dequantized to f32
    case 'webgpu':
      // Weights go to GPU memory; the host stages them. Counted as the file's bytes (the GPU's own
      // budget is the WebGPU backend's check).
      return t.nBytes;
  }
}

/** Throws a UserError when the model will not fit; returns the bytes it needs. */
export function checkModelMemory(path: string, tensors: GGUFTensorInfo[], opts: MemoryCheckOptions): number {
  let need = 0;
  for (const t of tensors) need += hostBytes(t, opts);
  need += opts.kvBytes ?? 0;
  const avail = opts.available ?? availableMemory();
  if (need > avail) {
    const gb = (n: number) => (n / 2 ** 30).toFixed(1);
    throw new UserError(
      `${path}: the ${opts.backend} backend needs about ${gb(need)} GiB for this model (weights${opts.kvBytes ? ' and one context of KV cache' : ''}) but only ${gb(avail)} GiB of memory is available; ` +
        'use a smaller or more quantized model (e.g. Q4_K_M), a smaller context (--ctx), or close other programs',
    );
  }
  return need;
}

/** MemAvailable from /proc/meminfo (page cache counts as available), else os.freemem(). */
export function availableMemory(): number {
  try {
    const m = /MemAvailable:\s+(\d+) kB/.exec(readFileSync('/proc/meminfo', 'utf8'));
    if (m) return Number(m[1]) * 1024;
  } catch {
    // not Linux
  }
  return freemem();
}
