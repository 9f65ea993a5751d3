// Facts about the CPU backend for `repokv doctor`, and the memory check run before a model loads.

import { readFileSync } from 'node:fs';
import { availableParallelism, cpus, freemem, totalmem } from 'node:os';
import type { GGUFTensorInfo } from '../../gguf/reader.js';
import { UserError } from '../../errors.js';
import { defaultThreads, ort, ORT_VERSION_TESTED } from './ort.js';
import { estimatePackedBytes, type Precision } from './weights.js';

/** "AMD EPYC", "Intel(R) Xeon(R) ..." — the first CPU's model name. */
export function cpuDeviceName(): string {
  return cpus()[0]?.model?.trim() || 'CPU';
}

function cpuFlags(): string[] {
  try {
    const info = readFileSync('/proc/cpuinfo', 'utf8');
    const line = info.split('\n').find((l) => l.startsWith('flags'));
    const all = new Set(line?.split(':')[1]?.trim().split(/\s+/) ?? []);
    return ['avx2', 'fma', 'avx512f', 'avx512bw', 'avx512_vnni', 'avx_vnni', 'amx_int8'].filter((f) => all.has(f));
  } catch {
    return [];
  }
}

/** One object describing the CPU backend on this machine; never throws. */
export function cpuDoctor(): Record<string, unknown> {
  const out: Record<string, unknown> = {
    device: cpuDeviceName(),
    cores: availableParallelism(),
    threads: defaultThreads(),
    threadsSetting: 'REPOKV_CPU_THREADS or --threads',
    simd: cpuFlags(),
    memory: { totalGiB: +(totalmem() / 2 ** 30).toFixed(1), freeGiB: +(freemem() / 2 ** 30).toFixed(1) },
  };
  try {
    const o = ort();
    out.onnxruntime = o.version;
    out.onnxruntimeTested = ORT_VERSION_TESTED;
    out.providers = o.backends.map((b) => b.name);
    out.ok = o.backends.some((b) => b.name === 'cpu');
    if (o.version !== ORT_VERSION_TESTED) out.warning = `onnxruntime-node ${o.version} is not the tested ${ORT_VERSION_TESTED}`;
  } catch (e) {
    out.ok = false;
    out.error = (e as Error).message;
  }
  return out;
}

/**
 * Refuses a model whose weights, as the CPU backend keeps them, would not fit in available memory —
 * before anything is loaded, with a sentence that names the model and the fix.
 */
export function checkCpuMemory(path: string, tensors: GGUFTensorInfo[], opts: { precision?: Precision; kvBytes?: number; available?: number } = {}): number {
  const precision = opts.precision ?? 'int8';
  let need = 0;
  for (const t of tensors) {
    need += estimatePackedBytes(t, precision);
    // The embedding table also stays on the host in its GGUF form (engine/backends/cpu/README.md).
    if (t.name === 'token_embd.weight') need += t.nBytes;
  }
  need += opts.kvBytes ?? 0;
  const avail = opts.available ?? availableMemory();
  if (need > avail) {
    const gb = (n: number) => (n / 2 ** 30).toFixed(1);
    throw new UserError(
      `${path}: the CPU backend needs about ${gb(need)} GiB for this model (weights${opts.kvBytes ? ' and KV cache' : ''}) but only ${gb(avail)} GiB of memory is available; ` +
        'use a smaller or more quantized model (e.g. Q4_K_M), a smaller --ctx, or close other programs',
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
