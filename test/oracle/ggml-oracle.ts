// Builds and runs test/oracle/ggml-dequant.c: ggml's own (de)quantization from the libggml-base.so
// that node-llama-cpp ships. Used by the oracle tests; fails loudly (never skips) when gcc or the
// library is missing, because then nothing would have been proven.

import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const root = join(here, '..', '..');
const source = join(here, 'ggml-dequant.c');

/** The libggml-base.so of node-llama-cpp's prebuilt CPU binaries for this platform. */
export function ggmlLibraryPath(): string {
  const p = join(root, 'node_modules', '@node-llama-cpp', `${process.platform}-${process.arch}`, 'bins', `${process.platform}-${process.arch}`, 'libggml-base.so');
  if (!existsSync(p)) {
    throw new Error(`ggml oracle: ${p} is missing; install the pinned node-llama-cpp (npm i -E node-llama-cpp@3.21.1) with its prebuilt binaries for ${process.platform}-${process.arch}`);
  }
  return p;
}

let built: string | null = null;

/** Compiles the oracle once per source version (cached under the OS temp dir). */
export function buildOracle(): string {
  if (built) return built;
  const src = readFileSync(source);
  const hash = createHash('sha256').update(src).digest('hex').slice(0, 16);
  const dir = join(tmpdir(), 'repokv-ggml-oracle');
  const exe = join(dir, `ggml-dequant-${hash}`);
  if (!existsSync(exe)) {
    mkdirSync(dir, { recursive: true });
    const tmp = `${exe}.tmp-${process.pid}`;
    const r = spawnSync('gcc', ['-O1', '-std=c11', '-Wall', '-o', tmp, source, '-ldl'], { encoding: 'utf8' });
    if (r.error) throw new Error(`ggml oracle: cannot run gcc (${(r.error as NodeJS.ErrnoException).code ?? r.error.message}); install gcc (apt-get install gcc) to run the llama.cpp comparison tests`);
    if (r.status !== 0) throw new Error(`ggml oracle: gcc failed to compile ${source}:\n${r.stderr}`);
    renameSync(tmp, exe);
  }
  built = exe;
  return exe;
}

function run(args: string[]): string {
  const r = spawnSync(buildOracle(), [ggmlLibraryPath(), ...args], { encoding: 'utf8', maxBuffer: 1 << 20 });
  if (r.error) throw new Error(`ggml oracle: cannot run (${r.error.message})`);
  if (r.status !== 0) throw new Error(`ggml oracle ${args.join(' ')} failed (status ${r.status}, signal ${r.signal}): ${r.stderr}`);
  return r.stdout;
}

function withTemp<T>(fn: (dir: string) => T): T {
  const dir = mkdtempSync(join(tmpdir(), 'repokv-oracle-'));
  try {
    return fn(dir);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

export interface GGMLTraits {
  name: string;
  blockSize: number;
  typeSize: number;
  hasToFloat: boolean;
}

export function ggmlTraits(type: number): GGMLTraits {
  const [name, blck, size, toFloat] = run(['info', String(type)]).trim().split(/\s+/);
  return { name, blockSize: Number(blck), typeSize: Number(size), hasToFloat: toFloat === '1' };
}

/** ggml_get_type_traits(type)->to_float on the encoded blocks. */
export function ggmlDequantize(type: number, blocks: Uint8Array, nElements: number): Float32Array {
  return withTemp((dir) => {
    const inp = join(dir, 'in.bin');
    const out = join(dir, 'out.bin');
    writeFileSync(inp, blocks);
    run(['dequant', String(type), String(nElements), inp, out]);
    const b = readFileSync(out);
    return new Float32Array(b.buffer.slice(b.byteOffset, b.byteOffset + b.byteLength));
  });
}

/** ggml_quantize_chunk(type, x, ..., imatrix = NULL) over nRows rows of perRow floats. */
export function ggmlQuantize(type: number, x: Float32Array, nRows: number, perRow: number): Uint8Array {
  return withTemp((dir) => {
    const inp = join(dir, 'in.bin');
    const out = join(dir, 'out.bin');
    writeFileSync(inp, new Uint8Array(x.buffer, x.byteOffset, x.byteLength));
    run(['quant', String(type), String(nRows), String(perRow), inp, out]);
    return new Uint8Array(readFileSync(out));
  });
}
