// How a page is stored on disk. 'f16' (default) is the pool's serialization itself: restoring it is
// exact. 'int8' halves the bytes: each (layer, K or V, KV head) block of a page — pageSize × headDim
// values — is stored as int8 with one f32 scale (max |x| / 127, round to nearest), i.e. per-page
// scales; restoring it is approximate, and the encoder reports the relative RMS error it introduced.
import { f16ToF32Array, f32ToF16Array, u16View } from './f16.js';

export type StorageCodec = 'f16' | 'int8';

export const CODEC_ID: Record<StorageCodec, number> = { f16: 0, int8: 1 };
export const CODEC_NAME: Record<number, StorageCodec> = { 0: 'f16', 1: 'int8' };

export interface PageShape {
  nLayers: number;
  nKVHeads: number;
  headDim: number;
  pageSize: number;
}

export function encodedBytes(codec: StorageCodec, s: PageShape): number {
  const values = 2 * s.nLayers * s.pageSize * s.nKVHeads * s.headDim;
  return codec === 'f16' ? values * 2 : values + 2 * s.nLayers * s.nKVHeads * 4;
}

/** Encodes a serialized (f16) page. `relError` is sqrt(Σ(x−x̂)² / Σx²) over the page (0 for f16). */
export function encodePage(codec: StorageCodec, page: Uint8Array, s: PageShape): { data: Uint8Array; relError: number } {
  if (codec === 'f16') return { data: page, relError: 0 };
  const { nLayers: L, nKVHeads: G, headDim: d, pageSize: ps } = s;
  const rs = G * d;
  const x = new Float32Array(page.byteLength / 2);
  f16ToF32Array(u16View(page), x);
  const nBlocks = 2 * L * G;
  const out = new Uint8Array(nBlocks * 4 + x.length);
  const scales = new Float32Array(out.buffer, 0, nBlocks);
  const q = new Int8Array(out.buffer, nBlocks * 4);
  let err = 0;
  let norm = 0;
  // Section (layer l, K or V) = ps rows of rs values starting at sec·ps·rs; block = one head's columns.
  for (let sec = 0; sec < 2 * L; sec++) {
    for (let h = 0; h < G; h++) {
      let m = 0;
      for (let r = 0; r < ps; r++) {
        const o = sec * ps * rs + r * rs + h * d;
        for (let j = 0; j < d; j++) m = Math.max(m, Math.abs(x[o + j]));
      }
      const scale = m / 127;
      scales[sec * G + h] = scale;
      const sc = Math.fround(scale);
      for (let r = 0; r < ps; r++) {
        const o = sec * ps * rs + r * rs + h * d;
        for (let j = 0; j < d; j++) {
          const v = x[o + j];
          const qi = sc === 0 ? 0 : Math.max(-127, Math.min(127, Math.round(v / sc)));
          q[o + j] = qi;
          const e = v - qi * sc;
          err += e * e;
          norm += v * v;
        }
      }
    }
  }
  return { data: out, relError: norm > 0 ? Math.sqrt(err / norm) : 0 };
}

/** Back to the pool's serialization (f16 bytes). */
export function decodePage(codec: StorageCodec, data: Uint8Array, s: PageShape): Uint8Array {
  if (codec === 'f16') return data;
  const { nLayers: L, nKVHeads: G, headDim: d, pageSize: ps } = s;
  const rs = G * d;
  const nBlocks = 2 * L * G;
  const aligned = data.byteOffset % 4 === 0 ? data : data.slice();
  const scales = new Float32Array(aligned.buffer, aligned.byteOffset, nBlocks);
  const q = new Int8Array(aligned.buffer, aligned.byteOffset + nBlocks * 4, 2 * L * ps * rs);
  const x = new Float32Array(q.length);
  for (let sec = 0; sec < 2 * L; sec++) {
    for (let h = 0; h < G; h++) {
      const sc = scales[sec * G + h];
      for (let r = 0; r < ps; r++) {
        const o = sec * ps * rs + r * rs + h * d;
        for (let j = 0; j < d; j++) x[o + j] = q[o + j] * sc;
      }
    }
  }
  const out = new Uint16Array(x.length);
  f32ToF16Array(x, out);
  return new Uint8Array(out.buffer);
}
