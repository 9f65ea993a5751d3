// cpuDoctor() facts and the memory check that refuses a model before loading it.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { checkCpuMemory, cpuDoctor } from '../../engine/backends/cpu/doctor.js';
import { UserError } from '../../engine/errors.js';
import { GGMLType } from '../../engine/gguf/types.js';
import type { GGUFTensorInfo } from '../../engine/gguf/reader.js';

test('cpuDoctor reports threads, onnxruntime version and the CPU provider', () => {
  const d = cpuDoctor();
  assert.equal(d.ok, true);
  assert.ok((d.threads as number) >= 1);
  assert.match(String(d.onnxruntime), /^\d+\.\d+\.\d+$/);
  assert.ok((d.providers as string[]).includes('cpu'));
});

test('checkCpuMemory refuses a model larger than available memory with one sentence', () => {
  const t = (name: string, k: number, n: number): GGUFTensorInfo => ({ name, dims: [k, n], type: GGMLType.Q8_0, offset: 0, fileOffset: 0, nElements: k * n, nBytes: (k * n * 34) / 32 });
  const tensors = [t('token_embd.weight', 4096, 128000), t('blk.0.ffn_up.weight', 4096, 14336)];
  const need = checkCpuMemory('m.gguf', tensors, { available: 64 * 2 ** 30 });
  assert.ok(need > 1.1 * 4096 * (128000 + 14336));
  assert.throws(
    () => checkCpuMemory('m.gguf', tensors, { available: 2 ** 28 }),
    (e: unknown) => e instanceof UserError && /m\.gguf: the CPU backend needs about .* GiB .* only 0\.3 GiB/.test((e as Error).message) && !(e as Error).message.includes('\n'),
  );
});
