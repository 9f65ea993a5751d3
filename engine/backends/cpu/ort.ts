// The thin layer over onnxruntime-node that the CPU backend uses.
//
// Sessions are run through the package's own native binding (`dist/binding.js`), whose `run` is
// synchronous. The public `InferenceSession.run` wraps that same call in a Promise resolved from
// setImmediate; measured here that hop costs more than a whole single-row 896×896 product (see
// README.md, "per-run overhead"), and the Backend interface is synchronous up to `read`. The binding is
// internal to onnxruntime-node, so the version is pinned (package.json) and checked below.

import { createRequire } from 'node:module';
import { availableParallelism } from 'node:os';
import type { InferenceSession, Tensor as OrtTensor } from 'onnxruntime-common';

const require = createRequire(import.meta.url);

interface BindingSession {
  loadModel(buffer: ArrayBuffer, byteOffset: number, byteLength: number, options: InferenceSession.SessionOptions): void;
  readonly inputMetadata: { name: string }[];
  readonly outputMetadata: { name: string }[];
  run(feeds: Record<string, OrtTensor>, fetches: Record<string, OrtTensor | null>, options: object): Record<string, { data: unknown; dims: readonly number[]; type: string }>;
  dispose(): void;
}

interface OrtModules {
  Tensor: typeof OrtTensor;
  Session: new () => BindingSession;
  version: string;
  backends: { name: string; bundled: boolean }[];
}

let mods: OrtModules | null = null;

/** The tested onnxruntime-node version; the synchronous binding is internal API. */
export const ORT_VERSION_TESTED = '1.30.0';

export function ort(): OrtModules {
  if (mods) return mods;
  let binding: { binding: { InferenceSession: new () => BindingSession; listSupportedBackends: () => { name: string; bundled: boolean }[] }; initOrt: () => void };
  let common: { Tensor: typeof OrtTensor };
  let version: string;
  try {
    binding = require('onnxruntime-node/dist/binding.js');
    common = require('onnxruntime-common');
    version = (require('onnxruntime-node/package.json') as { version: string }).version;
  } catch (e) {
    throw new Error(`the CPU backend needs the npm package onnxruntime-node (${(e as Error).message.split('\n')[0]}); reinstall with \`ONNXRUNTIME_NODE_INSTALL=skip npm ci\``);
  }
  binding.initOrt();
  mods = { Tensor: common.Tensor, Session: binding.binding.InferenceSession, version, backends: binding.binding.listSupportedBackends() };
  return mods;
}

export interface SessionConfig {
  /** Intra-op threads (default: the machine's cores). */
  threads?: number;
  /** Initializer bytes referenced by the model as external files (GraphBuilder.externalData). */
  externalData?: { path: string; data: Uint8Array }[];
}

export function defaultThreads(): number {
  const env = Number(process.env.REPOKV_CPU_THREADS);
  if (Number.isInteger(env) && env > 0) return env;
  return availableParallelism();
}

/** One loaded graph. Inputs and outputs are f32 unless a Tensor is passed. */
export class Graph {
  private s: BindingSession;
  readonly inputNames: string[];
  readonly outputNames: string[];

  constructor(model: Uint8Array, cfg: SessionConfig = {}) {
    const { Session } = ort();
    this.s = new Session();
    const threads = cfg.threads ?? defaultThreads();
    this.s.loadModel(model.buffer as ArrayBuffer, model.byteOffset, model.byteLength, {
      executionProviders: ['cpu'],
      intraOpNumThreads: threads,
      interOpNumThreads: 1,
      executionMode: 'sequential',
      graphOptimizationLevel: 'all',
      ...(cfg.externalData?.length ? { externalData: cfg.externalData } : {}),
      // Many sessions (one per segment) each keeping an arena sized for its largest batch would hold
      // GBs; measured: no arena costs nothing visible at decode and frees prefill temporaries.
      enableCpuMemArena: process.env.REPOKV_ORT_ARENA === '1',
      enableMemPattern: false,
      // REPOKV_ORT_PROFILE=/path/prefix: onnxruntime's per-node profile, one JSON per session.
      ...(process.env.REPOKV_ORT_PROFILE ? { enableProfiling: true, profileFilePrefix: process.env.REPOKV_ORT_PROFILE } : {}),
      extra: {
        session: {
          // No spinning: each graph's pool sleeps between runs instead of competing for the cores
          // with the next graph's (README: 76 ms vs 19–27 ms for 24 sessions). REPOKV_ORT_SPIN=1 to compare.
          intra_op: { allow_spinning: process.env.REPOKV_ORT_SPIN ?? '0' },
          force_spinning_stop: '1',
        },
      },
    } as InferenceSession.SessionOptions);
    this.inputNames = this.s.inputMetadata.map((m) => m.name);
    this.outputNames = this.s.outputMetadata.map((m) => m.name);
  }

  /** Runs synchronously; `fetch` may name a subset of outputs, or pass preallocated tensors. */
  run(feeds: Record<string, OrtTensor>, fetches?: Record<string, OrtTensor | null>): Record<string, { data: unknown; dims: readonly number[] }> {
    const f: Record<string, OrtTensor | null> = fetches ?? Object.fromEntries(this.outputNames.map((n) => [n, null]));
    return this.s.run(feeds, f, {});
  }

  /** Ends profiling (REPOKV_ORT_PROFILE) so the JSON file is written. */
  endProfiling(): void {
    (this.s as unknown as { endProfiling(): void }).endProfiling();
  }

  dispose(): void {
    if (process.env.REPOKV_ORT_PROFILE) this.endProfiling();
    this.s.dispose();
  }
}

export function f32Tensor(data: Float32Array, dims: readonly number[]): OrtTensor {
  return new (ort().Tensor)('float32', data, dims);
}

/** A KV cache slab: halves (Uint16Array, 'float16') or floats. */
export function kvTensor(data: Float32Array | Uint16Array, dims: readonly number[]): OrtTensor {
  return data instanceof Uint16Array ? new (ort().Tensor)('float16', data, dims) : new (ort().Tensor)('float32', data, dims);
}

export function i64Tensor(data: BigInt64Array, dims: readonly number[]): OrtTensor {
  return new (ort().Tensor)('int64', data, dims);
}

export function i32Tensor(data: Int32Array, dims: readonly number[]): OrtTensor {
  return new (ort().Tensor)('int32', data, dims);
}
