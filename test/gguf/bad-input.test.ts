// Bad model files: each problem ends in one GGUFError naming the file and the problem (and, through
// the CLI, a non-zero exit without a stack trace); absurd counts are refused before anything is
// allocated. Then a seeded mutation fuzzer: thousands of damaged headers must each parse or throw a
// GGUFError — never another exception, a hang, or a large allocation.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { GGUFError, GGUFFile, type GGUFMetaValue } from '../../engine/gguf/reader.js';
import { readHParams } from '../../engine/gguf/hparams.js';
import { dequantizeTensor, quantize } from '../../engine/gguf/quant.js';
import { GGMLType, GGUFValueType } from '../../engine/gguf/types.js';
import { encodeGGUF, meta } from '../../engine/gguf/writer.js';
import { inspectModel } from '../../engine/commands/inspect.js';
import { Rng, syntheticModel, tensorValues } from '../../engine/model/synthetic.js';

const root = new URL('../..', import.meta.url).pathname;
const dir = mkdtempSync(join(tmpdir(), 'repokv-bad-'));
process.on('exit', () => rmSync(dir, { recursive: true, force: true }));

/**
 * A small valid model (1 layer, tokenizer-free) whose header holds every metadata value type, plus
 * two quantized tensors the architecture does not use, so that a mutation can hit every code path.
 */
function validModel(arch = 'llama'): Buffer {
  const plan = syntheticModel({ arch: 'llama', shape: { nLayers: 1, nEmbd: 32, nHeads: 2, nKVHeads: 1, nFF: 64, nVocab: 64, contextLength: 128, tied: false }, type: 'f16', seed: 1, tokenizer: 'none' });
  const md: [string, GGUFMetaValue][] = plan.metadata.map(([k, v]) => [k, k === 'general.architecture' ? meta.str(arch) : v]);
  md.push(
    ['test.u8', { type: GGUFValueType.UINT8, value: 200 }],
    ['test.i8', { type: GGUFValueType.INT8, value: -3 }],
    ['test.u16', { type: GGUFValueType.UINT16, value: 65000 }],
    ['test.i16', { type: GGUFValueType.INT16, value: -300 }],
    ['test.i32', meta.i32(-70000)],
    ['test.u64', meta.u64(2n ** 40n)],
    ['test.i64', { type: GGUFValueType.INT64, value: -(2n ** 40n) }],
    ['test.f64', meta.f64(Math.PI)],
    ['test.bool', meta.bool(true)],
    ['tokenizer.ggml.tokens', meta.arr(GGUFValueType.STRING, Array.from({ length: 64 }, (_, i) => `t${i}`))],
    ['test.nested', meta.arr(GGUFValueType.ARRAY, [{ elemType: GGUFValueType.INT32, items: [1, 2, 3] }, { elemType: GGUFValueType.STRING, items: ['a', 'bc'] }])],
    ['tokenizer.chat_template', meta.str('{{ messages }}\nline two')],
  );
  const rng = new Rng(5);
  const tensors = plan.tensors.map((t) => ({ name: t.name, dims: t.dims, type: t.type, data: quantize(t.type, tensorValues(plan, t)) }));
  tensors.push({ name: 'extra.q4k', dims: [256, 2], type: GGMLType.Q4_K, data: quantize(GGMLType.Q4_K, rng.fillNormal(new Float32Array(512), 1)) });
  tensors.push({ name: 'extra.q8', dims: [64], type: GGMLType.Q8_0, data: quantize(GGMLType.Q8_0, rng.fillNormal(new Float32Array(64), 1)) });
  return encodeGGUF({ metadata: md, tensors });
}

let fileNo = 0;
function file(bytes: Uint8Array, name = `f${fileNo++}.gguf`): string {
  const p = join(dir, name);
  writeFileSync(p, bytes);
  return p;
}

/** Everything a user command does with a model header: parse, read hyper-parameters, inspect, read tensors. */
function useModel(path: string): void {
  const f = GGUFFile.open(path);
  try {
    readHParams(f);
    for (const t of f.tensors) dequantizeTensor(f, t);
  } finally {
    f.close();
  }
  inspectModel(path);
}

function refuses(path: string, problem: RegExp): void {
  assert.throws(
    () => useModel(path),
    (e: unknown) => {
      assert.ok(e instanceof GGUFError, `expected GGUFError, got ${(e as Error)?.stack ?? String(e)}`);
      assert.ok(e.message.startsWith(`${path}: `), `names the file: ${e.message}`);
      assert.match(e.message, problem);
      assert.ok(!e.message.includes('\n'), 'one line');
      return true;
    },
  );
}

/** Byte offset just after the first occurrence of `s` (a key or tensor name) in the header. */
function after(buf: Buffer, s: string): number {
  const i = buf.indexOf(Buffer.from(s, 'utf8'));
  assert.ok(i > 0, `"${s}" not found`);
  return i + Buffer.byteLength(s);
}

const base = validModel();
const cases: { name: string; bytes: Buffer; problem: RegExp }[] = [];
{
  cases.push({ name: 'empty file', bytes: Buffer.alloc(0), problem: /not a GGUF file \(too short/ });
  cases.push({ name: 'wrong magic', bytes: Buffer.concat([Buffer.from('GGML'), base.subarray(4)]), problem: /not a GGUF file \(magic is "GGML", expected "GGUF"\)/ });
  const v1 = Buffer.from(base);
  v1.writeUInt32LE(1, 4);
  cases.push({ name: 'version 1', bytes: v1, problem: /GGUF version 1 is not supported/ });
  cases.push({ name: 'truncated in the header', bytes: base.subarray(0, 700), problem: /file is truncated/ });
  cases.push({ name: 'truncated in the tensor data', bytes: base.subarray(0, base.length - 100), problem: /runs past the end of the file.*truncated or corrupt/ });
  const count = Buffer.from(base);
  count.writeBigUInt64LE(2n ** 62n, 8);
  cases.push({ name: 'absurd tensor count', bytes: count, problem: /tensor count is 4611686018427387904, more than this file can hold/ });
  const kvCount = Buffer.from(base);
  kvCount.writeBigUInt64LE(2n ** 64n - 1n, 16);
  cases.push({ name: 'absurd metadata count', bytes: kvCount, problem: /metadata count is 18446744073709551615/ });
  const arr = Buffer.from(base);
  arr.writeBigUInt64LE(2n ** 61n, after(arr, 'tokenizer.ggml.tokens') + 8); // key, u32 ARRAY, u32 STRING, u64 length
  cases.push({ name: 'absurd array length', bytes: arr, problem: /length of array "tokenizer.ggml.tokens" is 2305843009213693952, more than this file can hold/ });
  const str = Buffer.from(base);
  str.writeBigUInt64LE(2n ** 50n, after(str, 'tokenizer.chat_template') + 4);
  cases.push({ name: 'absurd string length', bytes: str, problem: /length of metadata "tokenizer.chat_template" is 1125899906842624/ });
  const ttype = Buffer.from(base);
  const q8 = after(ttype, 'extra.q8'); // name, u32 n_dims = 1, u64 ne0, u32 type, u64 offset
  ttype.writeUInt32LE(99, q8 + 4 + 8);
  cases.push({ name: 'unknown tensor type', bytes: ttype, problem: /tensor "extra.q8" has unknown tensor type 99/ });
  const off = Buffer.from(base);
  off.writeBigUInt64LE(BigInt(base.length - 64), q8 + 4 + 8 + 4);
  cases.push({ name: 'tensor offset past the end', bytes: off, problem: /tensor "extra.q8" data \(68 bytes at offset \d+\) runs past the end of the file/ });
  const far = Buffer.from(base);
  far.writeBigUInt64LE(2n ** 63n, q8 + 4 + 8 + 4);
  cases.push({ name: 'tensor offset beyond any file', bytes: far, problem: /data offset of "extra.q8" is 9223372036854775808, more than this file can hold/ });
  const dims = Buffer.from(base);
  dims.writeUInt32LE(7, q8);
  cases.push({ name: 'too many dimensions', bytes: dims, problem: /tensor "extra.q8" has 7 dimensions \(1 to 4 allowed\)/ });
  const vtype = Buffer.from(base);
  vtype.writeUInt32LE(13, after(vtype, 'test.f64'));
  cases.push({ name: 'unknown metadata value type', bytes: vtype, problem: /metadata "test.f64" has unknown value type 13/ });
  cases.push({ name: 'unknown architecture', bytes: validModel('gpt2'), problem: /architecture "gpt2" is not supported \(RepoKV runs llama, qwen2, qwen3\)/ });
}

for (const c of cases) {
  test(`bad input: ${c.name}`, () => refuses(file(c.bytes, `${c.name.replace(/\W+/g, '-')}.gguf`), c.problem));
}

test('absurd counts are refused without allocating', () => {
  const huge = cases.filter((c) => c.name.startsWith('absurd')).map((c) => file(c.bytes));
  const before = process.memoryUsage();
  for (let i = 0; i < 200; i++) for (const p of huge) assert.throws(() => GGUFFile.open(p), GGUFError);
  const now = process.memoryUsage();
  assert.ok(now.arrayBuffers - before.arrayBuffers < 32 << 20, `array buffers grew by ${now.arrayBuffers - before.arrayBuffers} bytes`);
  assert.ok(now.rss - before.rss < 128 << 20, `rss grew by ${now.rss - before.rss} bytes`);
});

test('missing, unreadable or non-file paths', () => {
  refuses(join(dir, 'does-not-exist.gguf'), /cannot open model file \(no such file\)/);
  const sub = join(dir, 'a-folder.gguf');
  mkdirSync(sub);
  refuses(sub, /is a directory, not a model file|is not a regular file/);
});

test('the CLI prints one line and exits non-zero, without a stack trace', () => {
  const picks = ['wrong magic', 'truncated in the tensor data', 'absurd array length', 'unknown tensor type', 'unknown architecture'];
  for (const c of cases.filter((x) => picks.includes(x.name))) {
    const p = file(c.bytes, `cli-${c.name.replace(/\W+/g, '-')}.gguf`);
    const r = spawnSync(process.execPath, [join(root, 'bin/repokv.js'), 'inspect', p], { encoding: 'utf8' });
    assert.notEqual(r.status, 0, c.name);
    assert.equal(r.stdout, '', `${c.name}: nothing on stdout`);
    const lines = r.stderr.trimEnd().split('\n');
    assert.equal(lines.length, 1, `${c.name}: one line, got:\n${r.stderr}`);
    assert.ok(lines[0].startsWith(`repokv: ${p}: `), lines[0]);
    assert.match(lines[0], c.problem);
  }
});

// REPOKV_FUZZ_SEED / REPOKV_FUZZ_N run other or longer campaigns locally; CI runs the fixed one.
test('mutation fuzz: damaged headers parse or throw GGUFError, quickly and without large allocations', (t) => {
  const rng = new Rng(Number(process.env.REPOKV_FUZZ_SEED ?? 20240611));
  const path = join(dir, 'fuzz.gguf');
  const f0 = GGUFFile.open(file(base));
  const headerEnd = f0.dataOffset;
  f0.close();
  const interesting = [0n, 1n, 2n, 3n, 4n, 7n, 8n, 9n, 12n, 31n, 32n, 255n, 256n, 65535n, 2n ** 31n - 1n, 2n ** 31n, 2n ** 32n - 1n, 2n ** 32n, 2n ** 53n, 2n ** 63n, 2n ** 64n - 1n];
  const baseFile = GGUFFile.open(file(base));
  const archKeys = [...baseFile.metadata.keys()].filter((k) => k.startsWith('llama.'));
  baseFile.close();
  const outcomes = { parsed: 0, refused: 0 };
  const problems = new Map<string, number>();
  const started = performance.now();
  let slowest = 0;
  let peakBuffers = 0;
  const n = Number(process.env.REPOKV_FUZZ_N ?? 3000);
  for (let i = 0; i < n; i++) {
    let b = Buffer.from(base);
    const kind = rng.int(7);
    const at = () => rng.int(headerEnd); // mutations aim at the header, where the parser lives
    if (kind === 0) {
      for (let k = 1 + rng.int(8); k > 0; k--) b[at()] ^= 1 << rng.int(8);
    } else if (kind === 1) {
      const o = Math.min(at(), b.length - 8);
      b.writeBigUInt64LE(interesting[rng.int(interesting.length)], o);
    } else if (kind === 2) {
      const o = Math.min(at(), b.length - 4);
      b.writeUInt32LE(Number(interesting[rng.int(12)]) + rng.int(3), o); // types, dims, small counts
    } else if (kind === 3) {
      b = b.subarray(0, rng.int(b.length)); // truncated anywhere
    } else if (kind === 4) {
      const o = at();
      const k = 1 + rng.int(16);
      b = rng.int(2) ? Buffer.concat([b.subarray(0, o), b.subarray(o + k)]) : Buffer.concat([b.subarray(0, o), Buffer.from(Array.from({ length: k }, () => rng.int(256))), b.subarray(o)]);
    } else if (kind === 5) {
      for (let k = 0; k < 64; k++) b[at()] = rng.int(256); // heavy damage
    } else {
      // A plausible file with one wrong hyper-parameter: the value (u32 or f32) of an architecture key.
      const key = archKeys[rng.int(archKeys.length)];
      b.writeUInt32LE(rng.int(2) ? Number(interesting[rng.int(interesting.length)] & 0xffffffffn) : rng.u32(), after(b, key) + 4);
    }
    writeFileSync(path, b);
    const t0 = performance.now();
    try {
      useModel(path);
      outcomes.parsed++;
    } catch (e) {
      if (!(e instanceof GGUFError)) {
        writeFileSync(join(dir, 'fuzz-failure.gguf'), b);
        assert.fail(`mutation ${i} (kind ${kind}) threw ${(e as Error)?.stack ?? String(e)}`);
      }
      assert.ok(!e.message.includes('\n') && e.message.startsWith(path), `mutation ${i}: ${e.message}`);
      outcomes.refused++;
      const key = e.problem.replace(/"[^"]*"/g, '"…"').replace(/\d+/g, 'N').slice(0, 60);
      problems.set(key, (problems.get(key) ?? 0) + 1);
    }
    slowest = Math.max(slowest, performance.now() - t0);
    peakBuffers = Math.max(peakBuffers, process.memoryUsage().arrayBuffers);
  }
  const seconds = (performance.now() - started) / 1000;
  const common = [...problems].sort((a, b) => b[1] - a[1]).slice(0, 6).map(([k, v]) => `${v}x ${k}`).join('; ');
  t.diagnostic(`fuzz: ${n} mutations in ${seconds.toFixed(1)} s, ${outcomes.parsed} parsed, ${outcomes.refused} refused; slowest ${slowest.toFixed(1)} ms; peak array buffers ${(peakBuffers / 2 ** 20).toFixed(1)} MiB; most common: ${common}`);
  assert.ok(slowest < 2000, `one mutation took ${slowest} ms`);
  assert.ok(peakBuffers < 64 << 20, `array buffers reached ${peakBuffers} bytes`);
  assert.ok(outcomes.refused > n / 4 && outcomes.parsed > 0, 'the mutations both break and spare the file');
});
