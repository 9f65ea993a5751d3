// cpuDoctor() facts, `repokv doctor` listing both backends, and the one memory check that refuses a
// model before loading it (engine/memory.ts, run by Engine.load).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { cpuDoctor } from '../../engine/backends/cpu/doctor.js';
import { doctor } from '../../engine/commands/doctor.js';
import { Engine } from '../../engine/engine.js';
import { UserError } from '../../engine/errors.js';
import { GGMLType } from '../../engine/gguf/types.js';
import type { GGUFTensorInfo } from '../../engine/gguf/reader.js';
import { checkModelMemory } from '../../engine/memory.js';
import { testModel } from '../helpers/models.js';

test('cpuDoctor reports threads, onnxruntime version and the CPU provider', () => {
  const d = cpuDoctor();
  assert.equal(d.ok, true);
  assert.ok((d.threads as number) >= 1);
  assert.match(String(d.onnxruntime), /^\d+\.\d+\.\d+$/);
  assert.ok((d.providers as string[]).includes('cpu'));
});

test('repokv doctor lists both backends and says which one auto picks and why', async () => {
  const r = await doctor();
  assert.equal(r.cpu.ok, true);
  assert.ok('ok' in r.webgpu);
  assert.ok(r.autoBackend === 'cpu' || r.autoBackend === 'webgpu');
  assert.equal(r.autoBackend, r.webgpu.ok && r.webgpu.autoPicks ? 'webgpu' : 'cpu');
  assert.ok(r.autoReason.length > 10 && !r.autoReason.includes('\n'), r.autoReason);
});

test('checkModelMemory counts the CPU backend\'s packed weights and refuses with one sentence', () => {
  const t = (name: string, k: number, n: number): GGUFTensorInfo => ({ name, dims: [k, n], type: GGMLType.Q8_0, offset: 0, fileOffset: 0, nElements: k * n, nBytes: (k * n * 34) / 32 });
  const tensors = [t('token_embd.weight', 4096, 128000), t('blk.0.ffn_up.weight', 4096, 14336)];
  const need = checkModelMemory('m.gguf', tensors, { backend: 'cpu', available: 64 * 2 ** 30 });
  assert.ok(need > 1.1 * 4096 * (128000 + 14336));
  assert.ok(checkModelMemory('m.gguf', tensors, { backend: 'cpu', precision: 'f32', available: 64 * 2 ** 30 }) > 4 * 4096 * (128000 + 14336));
  assert.throws(
    () => checkModelMemory('m.gguf', tensors, { backend: 'cpu', available: 2 ** 28 }),
    (e: unknown) => e instanceof UserError && /m\.gguf: the cpu backend needs about .* GiB .* only 0\.3 GiB/.test((e as Error).message) && !(e as Error).message.includes('\n'),
  );
});

test('Engine.load refuses a model larger than the memory available, before loading it', async () => {
  const model = testModel('qwen2', 'q8_0');
  await assert.rejects(
    Engine.load({ model, backend: 'cpu', threads: 1, availableMemoryBytes: 2 ** 20 }),
    (e: unknown) => e instanceof UserError && e.message.startsWith(`${model}: the cpu backend needs about`) && /smaller or more quantized model/.test(e.message),
  );
  // The same model with room to spare loads.
  const e = await Engine.load({ model, backend: 'cpu', threads: 1, availableMemoryBytes: 2 ** 30 });
  e.dispose();
});
