// How weights sit in GPU memory (read by kernels/quant.wgsl).
//
// ggml blocks are kept as they are, except that every block and every row starts on a 4-byte word so
// kernels read them as u32 without unaligned loads: Q8_0 (34 → 36 bytes) and Q4_0 (18 → 20) get two zero
// bytes after the f16 scale, Q6_K (210 → 212) two at the end, F16/BF16 rows of odd length a zero half.
// Q4_K (144) and F32 are copied unchanged. The cost is +6% for Q8_0, +11% for Q4_0, +1% for Q6_K.
// Types without a kernel decoder (Q4_1, Q5_x, Q2_K, Q3_K, ...) are dequantized on the host to F32 at
// upload: correct everywhere, just larger; the common GGUF mixes (Q4_K_M, Q6_K, Q8_0, F16) never need it.
//
// A weight larger than one storage binding (maxStorageBufferBindingSize, 128 MiB on lavapipe) is split
// into chunks of whole rows; matmul and embedding then run one dispatch per chunk.

import { GGMLType, TYPE_TRAITS, tensorBytes, typeName } from '../../gguf/types.js';

/** Types the WGSL decoder reads directly. */
export const KERNEL_TYPES: readonly GGMLType[] = [GGMLType.F32, GGMLType.F16, GGMLType.BF16, GGMLType.Q8_0, GGMLType.Q4_0, GGMLType.Q4_K, GGMLType.Q6_K];

export interface RowLayout {
  type: GGMLType;
  /** Elements per row (ggml ne[0]). */
  k: number;
  /** Bytes of one row in the GGUF file. */
  srcRowBytes: number;
  /** Bytes of one row on the GPU (a multiple of 4). */
  rowBytes: number;
  /** Copies one row from GGUF bytes into the GPU layout (dst is zero-filled beforehand). */
  copyRow(src: Uint8Array, srcOff: number, dst: Uint8Array, dstOff: number): void;
  /** True when rows are copied verbatim (a chunk is then one bulk copy). */
  verbatim: boolean;
}

function blockPadded(srcBlock: number, dstBlock: number, headBytes: number, headPad: number) {
  return (src: Uint8Array, srcOff: number, dst: Uint8Array, dstOff: number, nBlocks: number): void => {
    for (let b = 0; b < nBlocks; b++) {
      const s = srcOff + b * srcBlock;
      const d = dstOff + b * dstBlock;
      dst.set(src.subarray(s, s + headBytes), d);
      dst.set(src.subarray(s + headBytes, s + srcBlock), d + headBytes + headPad);
    }
  };
}

export function rowLayout(type: GGMLType, k: number): RowLayout {
  const tr = TYPE_TRAITS[type];
  if (!tr) throw new Error(`unknown tensor type ${type}`);
  const srcRowBytes = tensorBytes(type, k);
  const verbatimLayout = (rowBytes: number): RowLayout => ({
    type,
    k,
    srcRowBytes,
    rowBytes,
    verbatim: rowBytes === srcRowBytes,
    copyRow: (src, so, dst, doff) => dst.set(src.subarray(so, so + srcRowBytes), doff),
  });
  const nb = k / tr.blockSize;
  switch (type) {
    case GGMLType.F32:
    case GGMLType.Q4_K:
      return verbatimLayout(srcRowBytes);
    case GGMLType.F16:
    case GGMLType.BF16:
      return verbatimLayout(4 * Math.ceil(k / 2));
    case GGMLType.Q8_0: {
      const f = blockPadded(34, 36, 2, 2);
      return { type, k, srcRowBytes, rowBytes: nb * 36, verbatim: false, copyRow: (s, so, d, doff) => f(s, so, d, doff, nb) };
    }
    case GGMLType.Q4_0: {
      const f = blockPadded(18, 20, 2, 2);
      return { type, k, srcRowBytes, rowBytes: nb * 20, verbatim: false, copyRow: (s, so, d, doff) => f(s, so, d, doff, nb) };
    }
    case GGMLType.Q6_K: {
      const f = blockPadded(210, 212, 210, 0);
      return { type, k, srcRowBytes, rowBytes: nb * 212, verbatim: false, copyRow: (s, so, d, doff) => f(s, so, d, doff, nb) };
    }
    default:
      throw new Error(`no WGSL decoder for ${typeName(type)}`);
  }
}

/** Rows per chunk so that one chunk fits one binding. */
export function rowsPerChunk(rowBytes: number, maxBindingBytes: number, nRows: number): number {
  const r = Math.floor(maxBindingBytes / rowBytes);
  if (r < 1) throw new Error(`one weight row of ${rowBytes} bytes exceeds the storage binding limit of ${maxBindingBytes} bytes`);
  return Math.min(r, nRows);
}
