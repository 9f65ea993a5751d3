// Facts about the CPU backend for `repokv doctor`. (The memory check before a model loads, for every
// backend, is engine/memory.ts.)

import { readFileSync } from 'node:fs';
import { availableParallelism, cpus, totalmem } from 'node:os';
import { availableMemory } from '../../memory.js';
import { defaultThreads, ort, ORT_VERSION_TESTED } from './ort.js';

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
    memory: { totalGiB: +(totalmem() / 2 ** 30).toFixed(1), availableGiB: +(availableMemory() / 2 ** 30).toFixed(1) },
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
