// GGUF reader: parses the header (metadata + tensor infos) with bounded reads from a file descriptor
// and reads tensor data on demand, one tensor at a time, so a multi-gigabyte file is never held in one
// Buffer. Every length and offset is checked against the file size before anything is allocated: a
// corrupt or hostile header ends in a GGUFError naming the file and the problem, never a crash or a hang.

import { closeSync, fstatSync, openSync, readSync } from 'node:fs';
import {
  GGML_MAX_DIMS,
  GGUF_DEFAULT_ALIGNMENT,
  GGUF_MAGIC,
  GGUF_SCALAR_SIZE,
  GGUFValueType,
  TYPE_TRAITS,
  type GGMLType,
} from './types.js';

export class GGUFError extends Error {
  readonly problem: string;
  constructor(
    readonly file: string,
    problem: string,
  ) {
    // Names and keys come from the file itself: a damaged one may hold newlines, terminal escapes or
    // kilobytes of garbage. Keep the message one printable line of sensible length.
    const clean = printableProblem(problem);
    super(`${printableText(file)}: ${clean}`);
    this.problem = clean;
    this.name = 'GGUFError';
  }
}

/** Control characters (and U+2028/2029) escaped as \xNN / \uNNNN. */
function printableText(s: string): string {
  return s.replace(/[\u0000-\u001f\u007f-\u009f\u2028\u2029]/g, (c) => {
    const code = c.charCodeAt(0);
    return code < 0x100 ? `\\x${code.toString(16).padStart(2, '0')}` : `\\u${code.toString(16)}`;
  });
}

/** Printable, with every quoted name cut to 80 characters and the whole to 500. */
function printableProblem(problem: string): string {
  const cut = (x: string, n: number) => (x.length > n ? `${x.slice(0, n - 1)}…` : x);
  return cut(printableText(problem).replace(/"([^"]{81,})"/g, (_, inner: string) => `"${cut(inner, 80)}"`), 500);
}

export type GGUFScalar = number | bigint | boolean | string;
/** An array value; `items` are scalars, or GGUFArray for nested arrays. */
export interface GGUFArray {
  elemType: GGUFValueType;
  items: (GGUFScalar | GGUFArray)[];
}
export interface GGUFMetaValue {
  type: GGUFValueType;
  value: GGUFScalar | GGUFArray;
}

export interface GGUFTensorInfo {
  name: string;
  /** ne[0] first (the contiguous dimension), as ggml stores them. */
  dims: number[];
  type: GGMLType;
  /** Offset relative to the start of the data section, as written in the file. */
  offset: number;
  /** Absolute file offset of the first byte. */
  fileOffset: number;
  nElements: number;
  nBytes: number;
}

const MAX_STRING = 1 << 30; // 1 GiB; a longer metadata string is surely corruption
const MAX_NAME = 64; // GGML_MAX_NAME: llama.cpp refuses a tensor name of 64 bytes or more
// The largest real metadata arrays are vocabularies (~256k tokens, ~300k merges); a longer one is
// corruption, and reading it would build a JS array of many gigabytes even when the file is big.
const MAX_ARRAY = 1 << 26;

/** Sequential reader over a file descriptor with a small window buffer and strict bounds. */
class BoundedReader {
  private buf = Buffer.alloc(0);
  private bufStart = 0;
  pos = 0;

  constructor(
    private readonly fd: number,
    readonly size: number,
    private readonly file: string,
  ) {}

  fail(problem: string): never {
    throw new GGUFError(this.file, problem);
  }

  get remaining(): number {
    return this.size - this.pos;
  }

  /** Ensures bytes [pos, pos+n) are in the window; returns the window offset of pos. */
  private window(n: number, what: string): number {
    if (n > this.remaining) this.fail(`file is truncated: ${what} at byte ${this.pos} needs ${n} bytes, ${this.remaining} remain`);
    const off = this.pos - this.bufStart;
    if (off >= 0 && off + n <= this.buf.length) return off;
    const want = Math.min(Math.max(n, 1 << 20), this.remaining);
    if (this.buf.length < want) this.buf = Buffer.alloc(want);
    let got = 0;
    while (got < want) {
      const r = readSync(this.fd, this.buf, got, want - got, this.pos + got);
      if (r <= 0) this.fail(`read failed at byte ${this.pos + got}`);
      got += r;
    }
    this.bufStart = this.pos;
    return 0;
  }

  u8(what: string): number {
    const o = this.window(1, what);
    this.pos += 1;
    return this.buf[o];
  }
  i8(what: string): number {
    const o = this.window(1, what);
    this.pos += 1;
    return this.buf.readInt8(o);
  }
  u16(what: string): number {
    const o = this.window(2, what);
    this.pos += 2;
    return this.buf.readUInt16LE(o);
  }
  i16(what: string): number {
    const o = this.window(2, what);
    this.pos += 2;
    return this.buf.readInt16LE(o);
  }
  u32(what: string): number {
    const o = this.window(4, what);
    this.pos += 4;
    return this.buf.readUInt32LE(o);
  }
  i32(what: string): number {
    const o = this.window(4, what);
    this.pos += 4;
    return this.buf.readInt32LE(o);
  }
  f32(what: string): number {
    const o = this.window(4, what);
    this.pos += 4;
    return this.buf.readFloatLE(o);
  }
  f64(what: string): number {
    const o = this.window(8, what);
    this.pos += 8;
    return this.buf.readDoubleLE(o);
  }
  u64big(what: string): bigint {
    const o = this.window(8, what);
    this.pos += 8;
    return this.buf.readBigUInt64LE(o);
  }
  i64big(what: string): bigint {
    const o = this.window(8, what);
    this.pos += 8;
    return this.buf.readBigInt64LE(o);
  }
  /** A u64 that must be a count or offset no larger than `max`. */
  count(what: string, max: number): number {
    const v = this.u64big(what);
    if (v > BigInt(max)) this.fail(`${what} is ${v}, more than this file can hold (at most ${max})`);
    return Number(v);
  }
  string(what: string, maxLen = MAX_STRING): string {
    const len = this.count(`length of ${what}`, Math.min(maxLen, this.remaining));
    const o = this.window(len, what);
    this.pos += len;
    return this.buf.toString('utf8', o, o + len);
  }
}

function readValue(r: BoundedReader, type: number, key: string, depth: number): GGUFScalar | GGUFArray {
  switch (type) {
    case GGUFValueType.UINT8:
      return r.u8(key);
    case GGUFValueType.INT8:
      return r.i8(key);
    case GGUFValueType.UINT16:
      return r.u16(key);
    case GGUFValueType.INT16:
      return r.i16(key);
    case GGUFValueType.UINT32:
      return r.u32(key);
    case GGUFValueType.INT32:
      return r.i32(key);
    case GGUFValueType.FLOAT32:
      return r.f32(key);
    case GGUFValueType.BOOL: {
      const b = r.u8(key);
      if (b > 1) r.fail(`metadata "${key}" has invalid bool byte ${b}`);
      return b === 1;
    }
    case GGUFValueType.STRING:
      return r.string(`metadata "${key}"`);
    case GGUFValueType.UINT64: {
      const v = r.u64big(key);
      return v <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(v) : v;
    }
    case GGUFValueType.INT64: {
      const v = r.i64big(key);
      return v <= BigInt(Number.MAX_SAFE_INTEGER) && v >= BigInt(Number.MIN_SAFE_INTEGER) ? Number(v) : v;
    }
    case GGUFValueType.FLOAT64:
      return r.f64(key);
    case GGUFValueType.ARRAY: {
      if (depth > 8) r.fail(`metadata "${key}" nests arrays more than 8 deep`);
      const elemType = r.u32(`element type of "${key}"`);
      if (!(elemType in GGUFValueType)) r.fail(`metadata "${key}" has unknown array element type ${elemType}`);
      // Every element takes at least one byte (8 for strings and arrays: their length prefix), so a
      // length the rest of the file cannot hold is rejected before anything is allocated.
      const minElem = GGUF_SCALAR_SIZE[elemType as GGUFValueType] ?? (elemType === GGUFValueType.ARRAY ? 12 : 8);
      const n = r.count(`length of array "${key}"`, Math.min(MAX_ARRAY, Math.floor(r.remaining / minElem)));
      const items: (GGUFScalar | GGUFArray)[] = new Array(n);
      for (let i = 0; i < n; i++) items[i] = readValue(r, elemType, key, depth + 1);
      return { elemType, items };
    }
    default:
      return r.fail(`metadata "${key}" has unknown value type ${type}`);
  }
}

export interface OpenOptions {
  /** Skip the tensor-info table (metadata only), e.g. for quick model listing. */
  metadataOnly?: boolean;
}

export class GGUFFile {
  readonly tensors: GGUFTensorInfo[] = [];
  readonly metadata = new Map<string, GGUFMetaValue>();
  version = 0;
  alignment = GGUF_DEFAULT_ALIGNMENT;
  /** Absolute offset of the tensor data section. */
  dataOffset = 0;
  readonly size: number;
  private fd: number | null;
  private byName = new Map<string, GGUFTensorInfo>();

  private constructor(
    readonly path: string,
    fd: number,
    size: number,
  ) {
    this.fd = fd;
    this.size = size;
  }

  /** Opens and parses a GGUF file. Throws GGUFError (with the file name) on any problem. */
  static open(path: string, opts: OpenOptions = {}): GGUFFile {
    let fd: number;
    try {
      fd = openSync(path, 'r');
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      const why = code === 'ENOENT' ? 'no such file' : code === 'EACCES' ? 'permission denied' : code === 'EISDIR' ? 'is a directory, not a model file' : String((e as Error).message);
      throw new GGUFError(path, `cannot open model file (${why})`);
    }
    try {
      const st = fstatSync(fd);
      if (!st.isFile()) throw new GGUFError(path, 'is not a regular file');
      const f = new GGUFFile(path, fd, st.size);
      f.parse(opts);
      return f;
    } catch (e) {
      closeSync(fd);
      if (e instanceof GGUFError) throw e;
      throw new GGUFError(path, `cannot read model file (${(e as Error).message})`);
    }
  }

  private parse(opts: OpenOptions): void {
    const r: BoundedReader = new BoundedReader(this.fd!, this.size, this.path); // (annotated: r.fail() narrows)
    if (this.size < 4) r.fail('not a GGUF file (too short to hold the magic number)');
    const magic = r.u32('magic');
    if (magic !== GGUF_MAGIC) {
      const m = Buffer.alloc(4);
      m.writeUInt32LE(magic);
      r.fail(`not a GGUF file (magic is ${JSON.stringify(m.toString('latin1'))}, expected "GGUF")`);
    }
    this.version = r.u32('version');
    if (this.version === 1) r.fail('GGUF version 1 is not supported (re-convert the model with a current llama.cpp)');
    if (this.version !== 2 && this.version !== 3) r.fail(`unsupported GGUF version ${this.version} (2 and 3 are supported)`);
    // A tensor info takes at least 8+1+4+8+4+8 bytes; a key-value at least 8+1+4+1.
    const nTensors = r.count('tensor count', Math.floor(r.remaining / 33));
    const nKV = r.count('metadata count', Math.floor(r.remaining / 14));
    for (let i = 0; i < nKV; i++) {
      const key = r.string(`key of metadata entry ${i}`, 65535);
      const type = r.u32(`type of "${key}"`);
      if (!(type in GGUFValueType)) r.fail(`metadata "${key}" has unknown value type ${type}`);
      if (this.metadata.has(key)) r.fail(`metadata key "${key}" appears twice`);
      this.metadata.set(key, { type, value: readValue(r, type, key, 0) });
    }
    const al = this.metadata.get('general.alignment');
    if (al) {
      const a = al.value;
      if (typeof a !== 'number' || !Number.isInteger(a) || a <= 0 || a > 1 << 30 || (a & (a - 1)) !== 0) {
        r.fail(`general.alignment ${typeof a === 'object' ? 'is an array' : String(a)}, not a power of two up to 2^30`);
      }
      this.alignment = a;
    }
    if (opts.metadataOnly) return;
    for (let i = 0; i < nTensors; i++) {
      const name = r.string(`name of tensor ${i}`);
      if (Buffer.byteLength(name) >= MAX_NAME) r.fail(`tensor ${i} has a name of ${Buffer.byteLength(name)} bytes ("${name}"); llama.cpp allows at most ${MAX_NAME - 1}`);
      if (this.byName.has(name)) r.fail(`tensor "${name}" appears twice`);
      const nDims = r.u32(`dimension count of "${name}"`);
      if (nDims < 1 || nDims > GGML_MAX_DIMS) r.fail(`tensor "${name}" has ${nDims} dimensions (1 to ${GGML_MAX_DIMS} allowed)`);
      const dims: number[] = [];
      let nElements = 1;
      for (let d = 0; d < nDims; d++) {
        const ne = r.count(`dimension ${d} of "${name}"`, this.size * 8);
        if (ne === 0) r.fail(`tensor "${name}" has a zero-sized dimension`);
        dims.push(ne);
        nElements *= ne;
        if (nElements > this.size * 8) r.fail(`tensor "${name}" has ${nElements}+ elements, more than the file can hold`);
      }
      const type = r.u32(`type of "${name}"`) as GGMLType;
      const tr = TYPE_TRAITS[type];
      if (!tr) r.fail(`tensor "${name}" has unknown tensor type ${type}`);
      if (dims[0] % tr.blockSize !== 0) r.fail(`tensor "${name}" row of ${dims[0]} is not a multiple of ${tr.name}'s block size ${tr.blockSize}`);
      const offset = r.count(`data offset of "${name}"`, this.size);
      if (offset % this.alignment !== 0) r.fail(`tensor "${name}" data offset ${offset} is not aligned to ${this.alignment}`);
      const nBytes = (nElements / tr.blockSize) * tr.typeSize;
      const info: GGUFTensorInfo = { name, dims, type, offset, fileOffset: 0, nElements, nBytes };
      this.tensors.push(info);
      this.byName.set(name, info);
    }
    this.dataOffset = Math.ceil(r.pos / this.alignment) * this.alignment;
    for (const t of this.tensors) {
      t.fileOffset = this.dataOffset + t.offset;
      if (t.fileOffset + t.nBytes > this.size) {
        r.fail(`tensor "${t.name}" data (${t.nBytes} bytes at offset ${t.fileOffset}) runs past the end of the file (${this.size} bytes); the file is truncated or corrupt`);
      }
    }
  }

  tensor(name: string): GGUFTensorInfo | undefined {
    return this.byName.get(name);
  }

  /** Reads one tensor's raw bytes (its encoded blocks) into a fresh Buffer. */
  readTensorBytes(t: GGUFTensorInfo): Buffer {
    return this.readRange(t.fileOffset, t.nBytes, `tensor "${t.name}"`);
  }

  /** Reads `length` bytes at absolute offset `pos`. */
  readRange(pos: number, length: number, what = 'data'): Buffer {
    if (this.fd === null) throw new GGUFError(this.path, 'file is closed');
    if (pos + length > this.size) throw new GGUFError(this.path, `${what} runs past the end of the file`);
    const out = Buffer.allocUnsafeSlow(length); // own ArrayBuffer: typed-array views need no copy
    let got = 0;
    while (got < length) {
      const n = readSync(this.fd, out, got, Math.min(length - got, 1 << 30), pos + got);
      if (n <= 0) throw new GGUFError(this.path, `read of ${what} failed at byte ${pos + got} (file changed while open?)`);
      got += n;
    }
    return out;
  }

  close(): void {
    if (this.fd !== null) {
      closeSync(this.fd);
      this.fd = null;
    }
  }

  // ---- typed metadata access -------------------------------------------------------------------

  has(key: string): boolean {
    return this.metadata.has(key);
  }

  get(key: string): GGUFScalar | GGUFArray | undefined {
    return this.metadata.get(key)?.value;
  }

  getString(key: string): string | undefined {
    const v = this.get(key);
    if (v === undefined) return undefined;
    if (typeof v !== 'string') throw new GGUFError(this.path, `metadata "${key}" should be a string`);
    return v;
  }

  getNumber(key: string): number | undefined {
    const v = this.get(key);
    if (v === undefined) return undefined;
    if (typeof v === 'bigint') return Number(v);
    if (typeof v === 'boolean') return v ? 1 : 0;
    if (typeof v !== 'number') throw new GGUFError(this.path, `metadata "${key}" should be a number`);
    return v;
  }

  getBool(key: string): boolean | undefined {
    const v = this.get(key);
    if (v === undefined) return undefined;
    if (typeof v === 'boolean') return v;
    if (typeof v === 'number') return v !== 0;
    throw new GGUFError(this.path, `metadata "${key}" should be a bool`);
  }

  getArray(key: string): GGUFArray | undefined {
    const v = this.get(key);
    if (v === undefined) return undefined;
    if (typeof v !== 'object') throw new GGUFError(this.path, `metadata "${key}" should be an array`);
    return v;
  }

  requireNumber(key: string): number {
    const v = this.getNumber(key);
    if (v === undefined) throw new GGUFError(this.path, `required metadata "${key}" is missing`);
    return v;
  }
}
