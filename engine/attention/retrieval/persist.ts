// Index files: one binary file per (prefix, layer, KV head), named by the caller from the same content
// address as the KV pages it indexes (e.g. the last covered page's hash), beside them.
//
// Layout (little-endian):
//   0   magic "RKVRIDX\0"          8 bytes
//   8   format version u32          FORMAT_VERSION
//   12  kind u32                    1 flat, 2 IVF, 3 graph
//   16  d, base, size u32 ×3        key shape and the positions covered
//   28  flags u32                   bit 0: the keys are in the file
//   32  keys digest                 16 bytes: SHA-256 of sampled key rows (a file is never used with
//                                   other keys than it was built on)
//   48  body length u32, body       the index structure (its serialize())
//   ..  [keys f32 [size, d]]        only with flag bit 0
//   end checksum                    16 bytes: engine/kv's page checksum, SHA-256(address ‖ kind ‖ all
//                                   bytes before it) truncated — binds the file to its address, so a
//                                   torn, flipped, truncated or misfiled index is detected on load.
// Writes go to a temporary file, fsynced, renamed over the target: a reader sees the old file or the
// new one, never a mix. A bad file loads as null (and a reason): the caller rebuilds.
import { createHash } from 'node:crypto';
import { closeSync, fsyncSync, mkdirSync, openSync, readFileSync, renameSync, rmSync, writeSync } from 'node:fs';
import { dirname } from 'node:path';
import { checksum } from '../../kv/disk-schema.js';
import { FlatIndex } from './flat.js';
import { GraphIndex } from './graph.js';
import { IVFIndex } from './ivf.js';
import type { IndexKind, RetrievalIndex } from './types.js';
import { KeyStore } from './vectors.js';

export const FORMAT_VERSION = 1;
const MAGIC = Uint8Array.from([0x52, 0x4b, 0x56, 0x52, 0x49, 0x44, 0x58, 0x00]); // "RKVRIDX\0"
const KINDS: IndexKind[] = ['flat', 'ivf', 'graph'];
const HEADER = 52;
const SUM = 16;

export class IndexFileError extends Error {}

/** SHA-256 (16 bytes) of rows 0, s, 2s, … and the last of keys [size, d] — cheap, catches other keys. */
export function keysDigest(keys: Float32Array, size: number, d: number): Uint8Array {
  const h = createHash('sha256');
  h.update(Uint32Array.of(size, d));
  const stride = Math.max(1, Math.floor(size / 64));
  const row = (r: number) => h.update(new Uint8Array(keys.buffer, keys.byteOffset + r * d * 4, d * 4));
  for (let r = 0; r < size; r += stride) row(r);
  if (size) row(size - 1);
  return new Uint8Array(h.digest().subarray(0, 16));
}

function fileSum(address: string, kind: number, bytes: Uint8Array): Uint8Array {
  return checksum(new TextEncoder().encode(address), kind, bytes);
}

/** The file's bytes for `index` at `address`; `withKeys` stores the keys too (default: they live in the KV pages). */
export function encodeIndex(index: RetrievalIndex, address: string, withKeys = false): Uint8Array {
  const body = index.serialize();
  const keys = index.keys.rows();
  const keyBytes = withKeys ? keys.byteLength : 0;
  const total = HEADER + body.length + keyBytes + SUM;
  const out = new Uint8Array(total);
  const dv = new DataView(out.buffer);
  out.set(MAGIC, 0);
  const kind = KINDS.indexOf(index.kind) + 1;
  dv.setUint32(8, FORMAT_VERSION, true);
  dv.setUint32(12, kind, true);
  dv.setUint32(16, index.d, true);
  dv.setUint32(20, index.base, true);
  dv.setUint32(24, index.size, true);
  dv.setUint32(28, withKeys ? 1 : 0, true);
  out.set(keysDigest(keys, index.size, index.d), 32);
  dv.setUint32(48, body.length, true);
  out.set(body, HEADER);
  if (withKeys) out.set(new Uint8Array(keys.buffer, keys.byteOffset, keys.byteLength), HEADER + body.length);
  out.set(fileSum(address, kind, out.subarray(0, total - SUM)), total - SUM);
  return out;
}

/**
 * Reads an index file's bytes. `keys`: the KV head's keys by position ([≥ base+size, d]; rows
 * base .. base+size are used), needed unless the file holds its own. Throws IndexFileError naming what
 * is wrong.
 */
export function decodeIndex(file: Uint8Array, address: string, keys?: Float32Array): RetrievalIndex {
  const bytes = new Uint8Array(file.buffer, file.byteOffset, file.byteLength); // slice() copies (a Buffer's would not)
  if (bytes.length < HEADER + SUM) throw new IndexFileError(`index file too short (${bytes.length} bytes)`);
  for (let i = 0; i < MAGIC.length; i++) if (bytes[i] !== MAGIC[i]) throw new IndexFileError('not a retrieval index file (bad magic)');
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const version = dv.getUint32(8, true);
  if (version !== FORMAT_VERSION) throw new IndexFileError(`index format ${version}, this engine reads ${FORMAT_VERSION}`);
  const kind = dv.getUint32(12, true);
  const d = dv.getUint32(16, true);
  const base = dv.getUint32(20, true);
  const size = dv.getUint32(24, true);
  const flags = dv.getUint32(28, true);
  const bodyLen = dv.getUint32(48, true);
  const keyBytes = flags & 1 ? size * d * 4 : 0;
  const total = HEADER + bodyLen + keyBytes + SUM;
  if (bytes.length !== total) throw new IndexFileError(`index file is ${bytes.length} bytes, its header says ${total} (truncated or padded)`);
  const want = fileSum(address, kind, bytes.subarray(0, total - SUM));
  const got = bytes.subarray(total - SUM);
  for (let i = 0; i < SUM; i++) if (want[i] !== got[i]) throw new IndexFileError('index file checksum mismatch (corrupted, or written for another address)');
  if (kind < 1 || kind > KINDS.length) throw new IndexFileError(`unknown index kind ${kind}`);
  let rows: Float32Array;
  if (flags & 1) rows = new Float32Array(bytes.slice(HEADER + bodyLen, HEADER + bodyLen + keyBytes).buffer);
  else {
    if (!keys) throw new IndexFileError('index file holds no keys and none were given');
    if (keys.length < (base + size) * d) throw new IndexFileError(`index covers positions ${base}..${base + size - 1}, only ${Math.floor(keys.length / d)} keys given`);
    rows = keys.subarray(base * d, (base + size) * d);
  }
  const digest = keysDigest(rows, size, d);
  for (let i = 0; i < 16; i++) if (digest[i] !== bytes[32 + i]) throw new IndexFileError('the keys given are not the ones the index was built on');
  const store = KeyStore.from(rows, d);
  const body = bytes.subarray(HEADER, HEADER + bodyLen);
  try {
    const ix = KINDS[kind - 1] === 'flat' ? FlatIndex.deserialize(body, store) : KINDS[kind - 1] === 'ivf' ? IVFIndex.deserialize(body, store) : GraphIndex.deserialize(body, store);
    if (ix.base !== base || ix.size !== size) throw new Error('body disagrees with header');
    return ix;
  } catch (e) {
    throw new IndexFileError(`index body unreadable: ${(e as Error).message}`);
  }
}

/** Writes bytes to `path` atomically: temporary file in the same folder, fsync, rename. */
export function writeFileAtomic(path: string, bytes: Uint8Array): void {
  mkdirSync(dirname(path), { recursive: true });
  const tmp = `${path}.${process.pid}.${Math.random().toString(36).slice(2)}.tmp`;
  const fd = openSync(tmp, 'w');
  try {
    let o = 0;
    while (o < bytes.length) o += writeSync(fd, bytes, o, bytes.length - o);
    fsyncSync(fd);
  } catch (e) {
    closeSync(fd);
    rmSync(tmp, { force: true });
    throw e;
  }
  closeSync(fd);
  renameSync(tmp, path);
}

export function saveIndex(path: string, index: RetrievalIndex, address: string, withKeys = false): number {
  const bytes = encodeIndex(index, address, withKeys);
  writeFileAtomic(path, bytes);
  return bytes.length;
}

/**
 * Loads an index file, or null when it is missing or unusable (truncated, corrupted, another format,
 * another address, other keys); `onBad` hears why, so the caller can log one line and rebuild.
 */
export function loadIndex(path: string, address: string, keys?: Float32Array, onBad?: (reason: string) => void): RetrievalIndex | null {
  let bytes: Uint8Array;
  try {
    bytes = readFileSync(path);
  } catch {
    return null;
  }
  try {
    return decodeIndex(bytes, address, keys);
  } catch (e) {
    if (!(e instanceof IndexFileError)) throw e;
    onBad?.(`${path}: ${e.message}`);
    return null;
  }
}
