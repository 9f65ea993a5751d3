// `repokv doctor [--json]`: what this machine offers the engine — the WebGPU adapter (features,
// limits, software or not) and which backend `auto` would pick. Each backend contributes one
// `<name>Doctor()` section (engine/backends/<name>/doctor.ts); the CPU section joins here.
import { webgpuDoctor, type WebGPUDoctorReport } from '../backends/webgpu/doctor.js';
import { parseArgs } from './args.js';

export interface DoctorReport {
  node: string;
  platform: string;
  webgpu: WebGPUDoctorReport;
  /** The backend `--backend auto` would use. */
  autoBackend: 'webgpu' | 'cpu';
}

export async function doctor(): Promise<DoctorReport> {
  const webgpu = await webgpuDoctor();
  return {
    node: process.version,
    platform: `${process.platform}-${process.arch}`,
    webgpu,
    autoBackend: webgpu.ok && webgpu.autoPicks ? 'webgpu' : 'cpu',
  };
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
    console.log([`repokv doctor (Node ${r.node}, ${r.platform})`, ...formatWebGPU(r.webgpu), `  backend auto → ${r.autoBackend}`].join('\n'));
  }
  return 0;
}
