// The engine process's stderr as the extension sees it: Dawn's start-up notices about clamped driver
// limits (printed by native code where the engine could not hide them) never reach the output channel
// nor the "engine exited" message; every other line does, split on line ends even across chunks.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { EngineClient } from '../../extension/engine-client.js';

test('Dawn\'s limit notices are dropped from the engine\'s stderr; other lines and the exit reason stay', async () => {
  const script = `
    const w = (s) => process.stderr.write(s);
    w('Warning: maxDynamicUniformBuffersPerPipelineLayout artificially reduced from 1000000 to 16 to fit dynamic offset allocation limit.\\n');
    w('Warning: maxDynamicStorageBuffersPerPipelineLayout artificially reduced from 1000000 to 16 to fit dyn');
    setTimeout(() => { w('amic offset allocation limit.\\nvulkan: loader error\\n'); }, 20);
    setTimeout(() => { w('repokv: something real went wrong\\n'); process.exit(3); }, 60);`;
  const logs: string[] = [];
  const c = new EngineClient({ command: process.execPath, args: ['-e', script], settings: { cacheDir: '/nonexistent' }, onLog: (l) => logs.push(l), maxRestarts: 0 });
  await assert.rejects(c.start(), /the engine exited during start \(code 3\): repokv: something real went wrong$/);
  assert.deepEqual(logs, ['vulkan: loader error', 'repokv: something real went wrong']);
  await c.stop();
});
