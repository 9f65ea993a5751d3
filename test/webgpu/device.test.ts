// The adapter and device: found (or a failure naming the fix), features and limits reported, the
// subgroup size read from the adapter, and the no-adapter path ending in the one-sentence UserError.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { create } from 'webgpu';
import { UserError } from '../../engine/errors.js';
import { NO_ADAPTER_MESSAGE, createGpuContext, gpu, requestAdapter } from '../../engine/backends/webgpu/device.js';
import { webgpuDoctor } from '../../engine/backends/webgpu/doctor.js';

test('a WebGPU adapter is present (CI: scripts/setup-vulkan.sh installs lavapipe)', async () => {
  const ctx = await createGpuContext();
  const a = ctx.adapter;
  console.log(`# adapter: ${JSON.stringify(a)}`);
  console.log(`# using: shader-f16=${ctx.f16} subgroups=${ctx.subgroups}`);
  console.log(`# limits: maxStorageBufferBindingSize=${ctx.device.limits.maxStorageBufferBindingSize} maxBufferSize=${ctx.device.limits.maxBufferSize} maxComputeWorkgroupStorageSize=${ctx.device.limits.maxComputeWorkgroupStorageSize}`);
  assert.ok(ctx.device.limits.maxStorageBufferBindingSize >= 128 * 2 ** 20);
  if (/llvmpipe|lavapipe/i.test(a.device + a.description)) assert.equal(a.software, true);
  if (ctx.subgroups) assert.ok(a.subgroupMinSize >= 4 && a.subgroupMaxSize >= a.subgroupMinSize);
  ctx.device.destroy();
});

test('no adapter: a UserError in one sentence naming the fix', async () => {
  assert.ok(gpu());
  // A real Dawn instance restricted to an adapter name that does not exist finds nothing.
  const none = create(['adapter=no-such-adapter-for-this-test']);
  await assert.rejects(requestAdapter(none), (e: unknown) => {
    assert.ok(e instanceof UserError);
    assert.equal(e.message, NO_ADAPTER_MESSAGE);
    assert.match(e.message, /setup-vulkan\.sh/);
    assert.equal(e.message.split(/(?<=\.)\s/).length, 1);
    return true;
  });
});

test('webgpuDoctor reports adapter, features, limits and a working kernel', async () => {
  const r = await webgpuDoctor();
  assert.equal(r.ok, true, r.error);
  assert.equal(r.kernelCheck, true);
  assert.ok(r.limits && r.limits.maxStorageBufferBindingSize > 0);
  assert.ok(r.adapterFeatures && r.adapterFeatures.length > 0);
});

test('repokv doctor: the WebGPU section, and auto never picks a software adapter', async () => {
  const { doctor } = await import('../../engine/commands/doctor.js');
  const r = await doctor();
  assert.equal(r.webgpu.ok, true);
  assert.equal(r.autoBackend, r.webgpu.adapter!.software ? 'cpu' : 'webgpu');
});
