// GGUF writer (version 3): metadata of any value type (nested arrays included) and tensors already
// encoded in their ggml type. Output is deterministic: the same inputs give the same bytes. Files are
// written to a temporary name and renamed into place, so a killed process never leaves a half file.

import { closeSync, fsyncSync, openSync, renameSync, unlinkSync, writeSync } from 'node:fs';
import { GGUF_DEFAULT_ALIGNMENT, GGUF_MAGIC, GGUFValueType, TYPE_TRAITS, type GGMLType } from './types.js';
import type { GGUFArray, GGUFMetaValue, GGUFScalar } from './reader.js';

export interface GGUFWriteTensor {
  name: string;
  /** ne[0] first. */
  dims: number[];
  type: GGMLType;
  /** Encoded blocks, exactly the type's byte size for these dims. */
  data: Uint8Array;
}

export interface GGUFWriteInput {
  metadata: Iterable<[string, GGUFMetaValue]>;
  tensors: GGUFWriteTensor[];
  version?: 2 | 3;
}

/** Helpers to build typed metadata values. */
export const meta = {
  str: (v: string): GGUFMetaValue => ({ type: GGUFValueType.STRING, value: v }),
  u32: (v: number): GGUFMetaValue => ({ type: GGUFValueType.UINT32, value: v }),
  i32: (v: number): GGUFMetaValue => ({ type: GGUFValueType.INT32, value: v }),
  u64: (v: number | bigint): GGUFMetaValue => ({ type: GGUFValueType.UINT64, value: v }),
  f32: (v: number): GGUFMetaValue => ({ type: GGUFValueType.FLOAT32, value: v }),
  f64: (v: number): GGUFMetaValue => ({ type: GGUFValueType.FLOAT64, value: v }),
  bool: (v: boolean): GGUFMetaValue => ({ type: GGUFValueType.BOOL, value: v }),
  arr: (elemType: GGUFValueType, items: (GGUFScalar | GGUFArray)[]): GGUFMetaValue => ({
    type: GGUFValueType.ARRAY,
    value: { elemType, items },
  }),
};

/** Growable little-endian byte sink. */
class Sink {
  buf = Buffer.alloc(1 << 16);
  len = 0;
  private need(n: number): void {
    if (this.len + n <= this.buf.length) return;
    let cap = this.buf.length * 2;
    while (cap < this.len + n) cap *= 2;
    const b = Buffer.alloc(cap);
    this.buf.copy(b, 0, 0, this.len);
    this.buf = b;
  }
  u8(v: number) {
    this.need(1);
    this.buf.writeUInt8(v, this.len);
    this.len += 1;
  }
  i8(v: number) {
    this.need(1);
    this.buf.writeInt8(v, this.len);
    this.len += 1;
  }
  u16(v: number) {
    this.need(2);
    this.buf.writeUInt16LE(v, this.len);
    this.len += 2;
  }
  i16(v: number) {
    this.need(2);
    this.buf.writeInt16LE(v, this.len);
    this.len += 2;
  }
  u32(v: number) {
    this.need(4);
    this.buf.writeUInt32LE(v, this.len);
    this.len += 4;
  }
  i32(v: number) {
    this.need(4);
    this.buf.writeInt32LE(v, this.len);
    this.len += 4;
  }
  f32(v: number) {
    this.need(4);
    this.buf.writeFloatLE(v, this.len);
    this.len += 4;
  }
  f64(v: number) {
    this.need(8);
    this.buf.writeDoubleLE(v, this.len);
    this.len += 8;
  }
  u64(v: number | bigint) {
    this.need(8);
    this.buf.writeBigUInt64LE(BigInt(v), this.len);
    this.len += 8;
  }
  i64(v: number | bigint) {
    this.need(8);
    this.buf.writeBigInt64LE(BigInt(v), this.len);
    this.len += 8;
  }
  str(s: string) {
    const b = Buffer.from(s, 'utf8');
    this.u64(b.length);
    this.bytes(b);
  }
  bytes(b: Uint8Array) {
    this.need(b.length);
    this.buf.set(b, this.len);
    this.len += b.length;
  }
  pad(alignment: number) {
    const n = (alignment - (this.len % alignment)) % alignment;
    this.need(n);
    this.buf.fill(0, this.len, this.len + n);
    this.len += n;
  }
}

function writeValue(s: Sink, type: GGUFValueType, v: GGUFScalar | GGUFArray, key: string): void {
  const num = (): number => {
    if (typeof v === 'number') return v;
    if (typeof v === 'boolean') return v ? 1 : 0;
    throw new Error(`metadata "${key}": expected a number for ${GGUFValueType[type]}`);
  };
  switch (type) {
    case GGUFValueType.UINT8:
      return s.u8(num());
    case GGUFValueType.INT8:
      return s.i8(num());
    case GGUFValueType.UINT16:
      return s.u16(num());
    case GGUFValueType.INT16:
      return s.i16(num());
    case GGUFValueType.UINT32:
      return s.u32(num());
    case GGUFValueType.INT32:
      return s.i32(num());
    case GGUFValueType.FLOAT32:
      return s.f32(num());
    case GGUFValueType.FLOAT64:
      return s.f64(num());
    case GGUFValueType.BOOL:
      return s.u8(v ? 1 : 0);
    case GGUFValueType.UINT64:
      return s.u64(typeof v === 'bigint' ? v : num());
    case GGUFValueType.INT64:
      return s.i64(typeof v === 'bigint' ? v : num());
    case GGUFValueType.STRING:
      if (typeof v !== 'string') throw new Error(`metadata "${key}": expected a string`);
      return s.str(v);
    case GGUFValueType.ARRAY: {
      if (typeof v !== 'object' || v === null || !('items' in v)) throw new Error(`metadata "${key}": expected an array`);
      s.u32(v.elemType);
      s.u64(v.items.length);
      for (const it of v.items) writeValue(s, v.elemType, it, key);
      return;
    }
    default:
      throw new Error(`metadata "${key}": unknown value type ${type}`);
  }
}

/**
 * A tensor whose bytes are produced only when the writer reaches it (writeGGUFStream), so a large
 * model is never held in memory whole.
 */
export interface GGUFTensorSource {
  name: string;
  /** ne[0] first. */
  dims: number[];
  type: GGMLType;
  /** Returns the encoded blocks, exactly the type's byte size for these dims. Called once, in file order. */
  produce: () => Uint8Array;
}

export interface GGUFStreamInput {
  metadata: Iterable<[string, GGUFMetaValue]>;
  tensors: GGUFTensorSource[];
  version?: 2 | 3;
}

/** Bytes a tensor of this type and shape takes (throws when the shape is not whole blocks). */
function expectedBytes(t: { name: string; dims: number[]; type: GGMLType }): number {
  const tr = TYPE_TRAITS[t.type];
  if (!tr) throw new Error(`tensor "${t.name}": unknown type ${t.type}`);
  const n = t.dims.reduce((a, b) => a * b, 1);
  if (t.dims.length === 0 || (t.dims[0] ?? 0) % tr.blockSize !== 0) throw new Error(`tensor "${t.name}": row of ${t.dims[0]} is not a multiple of ${tr.name}'s block of ${tr.blockSize}`);
  return (n / tr.blockSize) * tr.typeSize;
}

function checkData(t: { name: string; dims: number[]; type: GGMLType }, data: Uint8Array): void {
  const expect = expectedBytes(t);
  if (data.length !== expect) throw new Error(`tensor "${t.name}": ${data.length} bytes given, ${TYPE_TRAITS[t.type].name} ${t.dims.join('x')} needs ${expect}`);
}

/** Encodes the header (everything before the tensor data, padded to the alignment). */
export function encodeHeader(input: GGUFWriteInput): { header: Buffer; offsets: number[]; alignment: number } {
  for (const t of input.tensors) checkData(t, t.data);
  return encodeHeaderOf(input.metadata, input.tensors, input.version);
}

function encodeHeaderOf(
  metadata: Iterable<[string, GGUFMetaValue]>,
  tensors: { name: string; dims: number[]; type: GGMLType }[],
  version: 2 | 3 | undefined,
): { header: Buffer; offsets: number[]; alignment: number } {
  const entries = [...metadata];
  const alignEntry = entries.find(([k]) => k === 'general.alignment');
  const alignment = alignEntry ? Number(alignEntry[1].value) : GGUF_DEFAULT_ALIGNMENT;
  const s = new Sink();
  s.u32(GGUF_MAGIC);
  s.u32(version ?? 3);
  s.u64(tensors.length);
  s.u64(entries.length);
  for (const [k, v] of entries) {
    s.str(k);
    s.u32(v.type);
    writeValue(s, v.type, v.value, k);
  }
  const offsets: number[] = [];
  let off = 0;
  for (const t of tensors) {
    const nBytes = expectedBytes(t);
    s.str(t.name);
    s.u32(t.dims.length);
    for (const d of t.dims) s.u64(d);
    s.u32(t.type);
    s.u64(off);
    offsets.push(off);
    off += Math.ceil(nBytes / alignment) * alignment;
  }
  s.pad(alignment);
  return { header: s.buf.subarray(0, s.len), offsets, alignment };
}

/** Writes a GGUF file atomically (temporary file, fsync, rename). */
export function writeGGUF(path: string, input: GGUFWriteInput): void {
  const { header, alignment } = encodeHeader(input);
  writeAtomic(path, header, alignment, input.tensors.map((t) => () => t.data));
}

/**
 * Writes a GGUF file atomically, asking each tensor for its bytes only when they are written: memory
 * holds one tensor at a time. Same bytes as writeGGUF given the same tensors.
 */
export function writeGGUFStream(path: string, input: GGUFStreamInput): void {
  const { header, alignment } = encodeHeaderOf(input.metadata, input.tensors, input.version);
  writeAtomic(
    path,
    header,
    alignment,
    input.tensors.map((t) => () => {
      const data = t.produce();
      checkData(t, data);
      return data;
    }),
  );
}

function writeAtomic(path: string, header: Uint8Array, alignment: number, parts: (() => Uint8Array)[]): void {
  const tmp = `${path}.tmp-${process.pid}`;
  const fd = openSync(tmp, 'w');
  try {
    writeAll(fd, header);
    const zeros = Buffer.alloc(alignment);
    for (const part of parts) {
      const data = part();
      writeAll(fd, data);
      const pad = (alignment - (data.length % alignment)) % alignment;
      if (pad) writeAll(fd, zeros.subarray(0, pad));
    }
    fsyncSync(fd);
    closeSync(fd);
    renameSync(tmp, path);
  } catch (e) {
    try {
      closeSync(fd);
    } catch {
      /* already closed */
    }
    try {
      unlinkSync(tmp);
    } catch {
      /* nothing to remove */
    }
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'ENOSPC') throw new Error(`cannot write ${path}: the disk is full; free some space and try again`);
    throw e;
  }
}

/** Encodes a whole GGUF file in memory (small files: tests, fuzzing). */
export function encodeGGUF(input: GGUFWriteInput): Buffer {
  const { header, alignment } = encodeHeader(input);
  const parts: Buffer[] = [header];
  for (const t of input.tensors) {
    parts.push(Buffer.from(t.data.buffer, t.data.byteOffset, t.data.byteLength));
    const pad = (alignment - (t.data.length % alignment)) % alignment;
    if (pad) parts.push(Buffer.alloc(pad));
  }
  return Buffer.concat(parts);
}

function writeAll(fd: number, b: Uint8Array): void {
  let off = 0;
  while (off < b.length) off += writeSync(fd, b, off, b.length - off);
}
