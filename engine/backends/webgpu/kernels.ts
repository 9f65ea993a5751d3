// WGSL sources from the package's kernels/ folder, a tiny preprocessor, and the pipeline cache.
//
// Preprocessor (the ggml pre_wgsl habit, kept minimal):
// - `#include "file.wgsl"` pastes another kernels/ file once;
// - `#if NAME` / `#else` / `#endif` keep lines when the define NAME is true (nestable);
// - numeric defines become `const NAME: u32 = <n>u;` lines at the top, so kernels size their arrays
//   and loops with them (head dim, tile sizes, weight type);
// - `enable f16;` / `enable subgroups;` are emitted by the host from the F16 / SUBGROUPS defines,
//   because WGSL wants enables before every declaration.

import { existsSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

export type Defines = Record<string, number | boolean>;

/** The package root: the first folder above this module holding both package.json and kernels/ (works from sources and from dist/). */
function findKernelDir(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  for (let i = 0; i < 8; i++) {
    if (existsSync(join(dir, 'package.json')) && existsSync(join(dir, 'kernels'))) return join(dir, 'kernels');
    const up = dirname(dir);
    if (up === dir) break;
    dir = up;
  }
  throw new Error('kernels/ folder not found above ' + fileURLToPath(import.meta.url));
}

let kernelDir: string | undefined;
const sourceCache = new Map<string, string>();

export function kernelSource(file: string): string {
  kernelDir ??= findKernelDir();
  let s = sourceCache.get(file);
  if (s === undefined) {
    s = readFileSync(join(kernelDir, file), 'utf8');
    sourceCache.set(file, s);
  }
  return s;
}

/** Expands includes and conditionals of `file` under `defines`, and prepends enables and constants. */
export function preprocess(file: string, defines: Defines): string {
  const included = new Set<string>();
  const out: string[] = [];
  const expand = (name: string): void => {
    if (included.has(name)) return;
    included.add(name);
    const stack: { keep: boolean; parentKeep: boolean }[] = [];
    const keeping = (): boolean => stack.every((s) => s.keep);
    const lines = kernelSource(name).split('\n');
    lines.forEach((line, n) => {
      const t = line.trim();
      const m = /^#(\w+)\s*(.*)$/.exec(t);
      if (!m) {
        if (keeping()) out.push(line);
        return;
      }
      const [, dir, arg] = m;
      if (dir === 'if') {
        const neg = arg.startsWith('!');
        const v = Boolean(defines[neg ? arg.slice(1).trim() : arg.trim()]);
        stack.push({ keep: neg ? !v : v, parentKeep: keeping() });
      } else if (dir === 'else') {
        const top = stack[stack.length - 1];
        if (!top) throw new Error(`${name}:${n + 1}: #else without #if`);
        top.keep = !top.keep;
      } else if (dir === 'endif') {
        if (!stack.pop()) throw new Error(`${name}:${n + 1}: #endif without #if`);
      } else if (dir === 'include') {
        if (keeping()) expand(arg.replace(/^"|"$/g, ''));
      } else {
        throw new Error(`${name}:${n + 1}: unknown directive #${dir}`);
      }
    });
    if (stack.length) throw new Error(`${name}: unterminated #if`);
  };
  expand(file);
  const head: string[] = [];
  if (defines.F16) head.push('enable f16;');
  if (defines.SUBGROUPS) head.push('enable subgroups;');
  for (const [k, v] of Object.entries(defines)) {
    if (typeof v === 'number') head.push(`const ${k}: u32 = ${v >>> 0}u;`);
  }
  return head.join('\n') + '\n' + out.join('\n');
}

export class PipelineCache {
  private pipelines = new Map<string, GPUComputePipeline>();
  constructor(private device: GPUDevice) {}

  get size(): number {
    return this.pipelines.size;
  }

  /** The compute pipeline for `file`'s `entry` under `defines`, compiled once. */
  get(file: string, entry: string, defines: Defines = {}): GPUComputePipeline {
    const key = `${file}:${entry}:${Object.entries(defines)
      .sort(([a], [b]) => (a < b ? -1 : 1))
      .map(([k, v]) => `${k}=${v}`)
      .join(',')}`;
    let p = this.pipelines.get(key);
    if (!p) {
      const code = preprocess(file, defines);
      const module = this.device.createShaderModule({ code, label: key });
      p = this.device.createComputePipeline({ layout: 'auto', compute: { module, entryPoint: entry }, label: key });
      this.pipelines.set(key, p);
    }
    return p;
  }
}
