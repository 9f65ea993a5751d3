// The adapter and device: found (or a failure naming the fix), features and limits reported, the
// subgroup size read from the adapter, and the no-adapter path ending in the one-sentence UserError.
// Start-up is quiet: Dawn's limit notices never reach stderr (quiet-stderr.ts), other native output
// does, and the device asks only for the limits the kernels need.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { create } from 'webgpu';
import { UserError } from '../../engine/errors.js';
import { NEEDED_LIMITS, NO_ADAPTER_MESSAGE, createGpuContext, gpu, requestAdapter } from '../../engine/backends/webgpu/device.js';
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

const root = fileURLToPath(new URL('../..', import.meta.url));
const NOTICE = /artificially reduced/;

/**
 * A command's stderr as a terminal user or a log file gets it: through a real pipe (sh's `|`) or a
 * file. (Node's own child_process stdio pipes are socket pairs, which quiet-stderr.ts cannot reopen.)
 */
function stderrOf(args: string[], how: 'pipe' | 'file', env: Record<string, string> = {}): { status: number | null; stderr: string } {
  const script = how === 'pipe' ? '"$0" "$@" 2>&1 >/dev/null | cat' : 'f=$(mktemp); "$0" "$@" 2>"$f" >/dev/null; s=$?; cat "$f"; rm -f "$f"; exit $s';
  const r = spawnSync('sh', ['-c', script, process.execPath, ...args], { cwd: root, encoding: 'utf8', env: { ...process.env, ...env }, timeout: 60_000 });
  return { status: r.status, stderr: r.stdout };
}

test('quiet start-up: repokv doctor prints nothing on stderr, to a pipe or a file (REPOKV_DAWN_STDERR=keep shows what was hidden)', () => {
  for (const how of ['pipe', 'file'] as const) {
    const r = stderrOf(['bin/repokv.js', 'doctor', '--json'], how);
    assert.equal(r.status, 0, r.stderr);
    assert.equal(r.stderr, '', `stderr of repokv doctor (${how})`);
  }
  const loud = stderrOf(['bin/repokv.js', 'doctor', '--json'], 'file', { REPOKV_DAWN_STDERR: 'keep' });
  if (process.platform === 'linux') assert.match(loud.stderr, NOTICE, 'the notices this removes (Dawn on Vulkan prints them at adapter enumeration)');
});

test('quiet start-up removes only the two notices: other native stderr output and later writes still arrive', () => {
  const script = `
    import { writeSync } from 'node:fs';
    import { quietNativeStderr } from './engine/backends/webgpu/quiet-stderr.ts';
    const v = quietNativeStderr(() => {
      writeSync(2, 'Warning: maxDynamicUniformBuffersPerPipelineLayout artificially reduced from 1000000 to 16 to fit dynamic offset allocation limit.\\n');
      writeSync(2, 'ERROR: [Loader Message] something a user should see\\n');
      writeSync(2, 'Warning: maxDynamicStorageBuffersPerPipelineLayout artificially reduced from 1000000 to 16 to fit dynamic offset allocation limit.\\n');
      return 42;
    });
    console.error('after ' + v);
  `;
  for (const how of ['pipe', 'file'] as const) {
    const r = stderrOf(['--import', 'tsx', '--input-type=module', '-e', script], how);
    assert.equal(r.status, 0, r.stderr);
    if (process.platform === 'linux') assert.equal(r.stderr, 'ERROR: [Loader Message] something a user should see\nafter 42\n', how);
  }
});

test('the device asks only for the limits the kernels are sized by', async () => {
  const ctx = await createGpuContext();
  const a = await requestAdapter();
  const got = ctx.device.limits as unknown as Record<string, number>;
  const offered = a.limits as unknown as Record<string, number>;
  for (const [k, { cap }] of Object.entries(NEEDED_LIMITS)) assert.equal(got[k], Math.min(offered[k], cap ?? Infinity), k);
  // One it does not need stays at the WebGPU default even where the adapter offers more.
  assert.equal(got.maxTextureDimension2D, 8192);
  ctx.device.destroy();
});
