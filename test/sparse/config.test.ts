// Per-head sparse configuration: defaults for an uncalibrated model (MInference's fallback VS budget),
// budget scaling with the context, the dense threshold, and the stored JSON per model fingerprint
// (round trip, clear errors for another model or shape).
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { tmpdir } from 'node:os';
import {
  DEFAULT_SPARSE_THRESHOLD,
  defaultSparseConfig,
  layerPatterns,
  loadSparseConfig,
  saveSparseConfig,
  scalePattern,
  sparseConfigPath,
} from '../../engine/attention/sparse/config.js';

const dir = mkdtempSync(join(tmpdir(), 'repokv-sparse-'));
after(() => rmSync(dir, { recursive: true, force: true }));

test('defaults: VS (1000, 6096) per head at ≥ 32K, scaled down below it, dense under the threshold', () => {
  const cfg = defaultSparseConfig('abc', 2, 3);
  assert.equal(cfg.source, 'default');
  assert.equal(layerPatterns(cfg, 0, DEFAULT_SPARSE_THRESHOLD - 1), null);
  assert.deepEqual(layerPatterns(cfg, 1, 131072)![2], { kind: 'vertical-slash', vertical: 1000, slash: 6096 });
  assert.deepEqual(layerPatterns(cfg, 1, 32768)![0], { kind: 'vertical-slash', vertical: 1000, slash: 6096 });
  assert.deepEqual(scalePattern({ kind: 'vertical-slash', vertical: 1000, slash: 6096 }, 8192, 32768), { kind: 'vertical-slash', vertical: 250, slash: 1524 });
  assert.deepEqual(scalePattern({ kind: 'vertical-slash', vertical: 1000, slash: 6096 }, 100, 32768), { kind: 'vertical-slash', vertical: 30, slash: 100 });
  assert.deepEqual(scalePattern({ kind: 'block-sparse', blocks: 100 }, 4096, 32768), { kind: 'block-sparse', blocks: 13 });
  assert.deepEqual(scalePattern({ kind: 'a-shape', sink: 128, local: 3968 }, 65536, 32768), { kind: 'a-shape', sink: 128, local: 3968 });
});

test('stored per fingerprint: round trip, default when absent, one-sentence errors', () => {
  assert.equal(loadSparseConfig(dir, 'fp1', 2, 2).source, 'default');
  const cfg = defaultSparseConfig('fp1', 2, 2);
  cfg.source = 'calibrated';
  cfg.heads[1][0] = { kind: 'a-shape', sink: 64, local: 1024 };
  cfg.recall = [
    [0.99, 0.98],
    [0.97, 0.999],
  ];
  const path = saveSparseConfig(dir, cfg);
  assert.equal(path, sparseConfigPath(dir, 'fp1'));
  assert.deepEqual(loadSparseConfig(dir, 'fp1', 2, 2), cfg);
  assert.throws(() => loadSparseConfig(dir, 'fp1', 3, 2), /does not describe 3 layers of 2 heads; delete it or run `repokv calibrate` again/);
  writeFileSync(path, JSON.stringify({ ...cfg, fingerprint: 'other' }));
  assert.throws(() => loadSparseConfig(dir, 'fp1', 2, 2), /belongs to another model/);
  writeFileSync(path, '{');
  assert.throws(() => loadSparseConfig(dir, 'fp1', 2, 2), /is not valid JSON/);
});
