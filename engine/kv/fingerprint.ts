// The model fingerprint: the root of every page-hash chain and the name of the model's cache folder.
// Two runs may share KV pages only if they would compute the same K/V for the same tokens, so the
// fingerprint covers everything that decides those values:
// - the weights file's identity: its size, the whole GGUF header (metadata — architecture, hyper-
//   parameters, tokenizer — and tensor infos: names, shapes, types, offsets) and a sample of tensor
//   data (SAMPLES evenly spaced windows, so a file re-quantized or re-trained with the same header is
//   told apart without reading gigabytes);
// - the RoPE configuration the engine actually uses (kind, rotated dims, per-pair frequencies after
//   scaling, YaRN mscale), so a context-extension override never reuses pages computed without it;
// - the KV element type, the disk storage codec, the page size and the engine's KV format version.
// The file's path and mtime are deliberately left out: a copied or moved model keeps its cache.
import { closeSync, fstatSync, openSync, readSync } from 'node:fs';
import { createHash } from 'node:crypto';
import type { RopeConfig } from '../model/backend.js';
import type { PageHash } from './hash.js';

/** Bump when the page serialization, the hash chain or anything else that changes stored KV changes. */
export const KV_FORMAT_VERSION = 1;

const SAMPLES = 16;
const SAMPLE_BYTES = 64 * 1024;

export interface FingerprintInput {
  /** The GGUF file. */
  modelPath: string;
  /** Offset of the tensor data (GGUFFile.dataOffset): everything before it is the header. */
  dataOffset: number;
  rope: RopeConfig;
  nLayers: number;
  nKVHeads: number;
  headDim: number;
  kvDtype: 'f16' | 'f32';
  storage: 'f16' | 'int8';
  pageSize: number;
}

export interface ModelFingerprint {
  /** 32 bytes: the parent of page 0. */
  readonly root: PageHash;
  /** Hex of root. */
  readonly hex: string;
  /** Folder name of this model's cache: the first 24 hex digits. */
  readonly id: string;
  /** What went in, for `repokv cache stats`. */
  readonly describe: Record<string, unknown>;
}

export function modelFingerprint(x: FingerprintInput): ModelFingerprint {
  const h = createHash('sha256');
  h.update(`repokv-kv-format-${KV_FORMAT_VERSION}\0`);
  const fd = openSync(x.modelPath, 'r');
  let size: number;
  try {
    size = fstatSync(fd).size;
    h.update(`size=${size}\0`);
    const headerLen = Math.min(x.dataOffset, size);
    h.update(readAt(fd, 0, headerLen));
    const dataLen = size - headerLen;
    if (dataLen <= SAMPLES * SAMPLE_BYTES) h.update(readAt(fd, headerLen, dataLen));
    else {
      const step = Math.floor((dataLen - SAMPLE_BYTES) / (SAMPLES - 1));
      for (let i = 0; i < SAMPLES; i++) h.update(readAt(fd, headerLen + i * step, SAMPLE_BYTES));
    }
  } finally {
    closeSync(fd);
  }
  const r = x.rope;
  h.update(`rope=${r.kind}/${r.dims}/${r.mscale}\0`);
  h.update(new Uint8Array(Float32Array.from(r.invFreq).buffer));
  h.update(`shape=${x.nLayers}/${x.nKVHeads}/${x.headDim}\0kv=${x.kvDtype}\0storage=${x.storage}\0page=${x.pageSize}\0`);
  const root = h.digest();
  const hex = root.toString('hex');
  return {
    root,
    hex,
    id: hex.slice(0, 24),
    describe: {
      modelBytes: size,
      rope: { kind: r.kind, dims: r.dims, mscale: r.mscale },
      nLayers: x.nLayers,
      nKVHeads: x.nKVHeads,
      headDim: x.headDim,
      kvDtype: x.kvDtype,
      storage: x.storage,
      pageSize: x.pageSize,
      kvFormat: KV_FORMAT_VERSION,
    },
  };
}

function readAt(fd: number, pos: number, len: number): Buffer {
  const b = Buffer.allocUnsafe(len);
  let got = 0;
  while (got < len) {
    const n = readSync(fd, b, got, len - got, pos + got);
    if (n === 0) break;
    got += n;
  }
  return b.subarray(0, got);
}
