// `repokv doctor [--json]`: what this machine offers the engine — each backend's section (the WebGPU
// adapter: features, limits, software or not; the CPU: cores, threads, SIMD, onnxruntime, memory),
// which backend `auto` would pick, and why. Each backend contributes one `<name>Doctor()` section
// (engine/backends/<name>/doctor.ts).
import { cpuDoctor } from '../backends/cpu/doctor.js';
import { webgpuDoctor, type WebGPUDoctorReport } from '../backends/webgpu/doctor.js';
import { parseArgs } from './args.js';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { cacheDir } from '../paths.js';
import { DEFAULT_SPARSE_THRESHOLD, DEFAULT_VS } from '../attention/sparse/config.js';
import { DEFAULT_RETRIEVAL_CONFIG } from '../attention/retrieval/manager.js';

export interface DoctorReport {
  node: string;
  platform: string;
  webgpu: WebGPUDoctorReport;
  cpu: ReturnType<typeof cpuDoctor>;
  /** The backend `--backend auto` would use (engine.ts createBackend: a hardware GPU, else the CPU). */
  autoBackend: 'webgpu' | 'cpu';
  /** Why, in one sentence. */
  autoReason: string;
  /** How attention runs by context length (issue 8 sparse prefill, issue 9 retrieval decode). */
  longContext: LongContextReport;
}

export interface LongContextReport {
  sparseThreshold: number;
  sparseDefault: string;
  /** Models with a `repokv calibrate` config in the KV cache folder. */
  calibrated: { dir: string; source: string; referenceLength: number; threshold: number }[];
  retrieval: { default: 'off'; minContext: number; budgets: string };
  summary: string;
}

function longContext(): LongContextReport {
  const root = join(cacheDir(), 'kv');
  const calibrated: LongContextReport['calibrated'] = [];
  try {
    for (const d of readdirSync(root)) {
      try {
        const c = JSON.parse(readFileSync(join(root, d, 'sparse.json'), 'utf8')) as { source: string; referenceLength: number; threshold: number };
        calibrated.push({ dir: join(root, d), source: c.source, referenceLength: c.referenceLength, threshold: c.threshold });
      } catch {
        // no config in this model's folder
      }
    }
  } catch {
    // no cache yet
  }
  const r = DEFAULT_RETRIEVAL_CONFIG;
  const vs = `vertical-slash ${DEFAULT_VS.kind === 'vertical-slash' ? `${DEFAULT_VS.vertical}/${DEFAULT_VS.slash}` : ''}`;
  return {
    sparseThreshold: DEFAULT_SPARSE_THRESHOLD,
    sparseDefault: vs,
    calibrated,
    retrieval: { default: 'off', minContext: r.minContext, budgets: `sink ${r.sink} + window ${r.window} + top-${r.topK} (${r.kind} index)` },
    summary:
      `prefill dense up to ${DEFAULT_SPARSE_THRESHOLD} tokens of context, sparse above (${vs} per head, or the config \`repokv calibrate\` stored: ${calibrated.length} model${calibrated.length === 1 ? '' : 's'}); ` +
      `decode dense, or retrieval attention from ${r.minContext} tokens when turned on (sink ${r.sink} + window ${r.window} + top-${r.topK})`,
  };
}

export async function doctor(): Promise<DoctorReport> {
  const webgpu = await webgpuDoctor();
  const cpu = cpuDoctor();
  const gpu = webgpu.ok && webgpu.autoPicks;
  let autoReason: string;
  if (gpu) autoReason = `a hardware GPU adapter (${webgpu.adapter?.device || webgpu.adapter?.description || 'WebGPU'}) passed the kernel check`;
  else if (webgpu.ok) autoReason = `the only WebGPU adapter (${webgpu.adapter?.device || webgpu.adapter?.description}) is a software one, which auto never picks`;
  else autoReason = 'no usable WebGPU adapter';
  if (!gpu) autoReason += cpu.ok ? `; the CPU backend (onnxruntime ${String(cpu.onnxruntime)}, ${String(cpu.threads)} threads) runs instead` : `, and the CPU backend is unavailable too (${String(cpu.error)})`;
  return { node: process.version, platform: `${process.platform}-${process.arch}`, webgpu, cpu, autoBackend: gpu ? 'webgpu' : 'cpu', autoReason, longContext: longContext() };
}

function formatCpu(c: ReturnType<typeof cpuDoctor>): string[] {
  if (!c.ok) return [`  CPU: unavailable — ${String(c.error ?? 'onnxruntime has no CPU provider')}`];
  const mem = c.memory as { totalGiB: number; availableGiB: number };
  return [
    `  CPU: ${String(c.device)} — ${String(c.cores)} cores, ${String(c.threads)} threads (${String(c.threadsSetting)})`,
    `    SIMD: ${(c.simd as string[]).join(', ') || 'none detected'}`,
    `    onnxruntime ${String(c.onnxruntime)} (providers: ${(c.providers as string[]).join(', ')})${c.warning ? ` — ${String(c.warning)}` : ''}`,
    `    memory: ${mem.availableGiB} GiB available of ${mem.totalGiB} GiB`,
  ];
}

function formatWebGPU(w: WebGPUDoctorReport): string[] {
  if (!w.ok) return [`  WebGPU: unavailable — ${w.error}`];
  const a = w.adapter!;
  const lines = [
    `  WebGPU: ${a.device || a.description} (${a.vendor}${a.architecture ? ', ' + a.architecture : ''})${a.software ? ' — software adapter, used only when asked (--backend webgpu)' : ''}`,
    `    driver: ${a.description}`,
    `    using: shader-f16 ${w.using!.shaderF16 ? 'yes' : 'no'}, subgroups ${w.using!.subgroups ? `yes (size ${a.subgroupMinSize}${a.subgroupMaxSize !== a.subgroupMinSize ? '–' + a.subgroupMaxSize : ''})` : 'no'}`,
    `    kernel check: ${w.kernelCheck ? 'ok' : 'FAILED'}`,
    `    limits: ${Object.entries(w.limits!)
      .map(([k, v]) => `${k}=${v}`)
      .join(', ')}`,
  ];
  return lines;
}

export async function run(args: string[]): Promise<number> {
  const p = parseArgs(args, ['json']);
  const r = await doctor();
  if (p.flags.has('json')) {
    console.log(JSON.stringify(r, null, 2));
  } else {
    console.log([`repokv doctor (Node ${r.node}, ${r.platform})`, ...formatWebGPU(r.webgpu), ...formatCpu(r.cpu), `  backend auto → ${r.autoBackend}: ${r.autoReason}`, `  long contexts: ${r.longContext.summary}`].join('\n'));
  }
  return 0;
}
