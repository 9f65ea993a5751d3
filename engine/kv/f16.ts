// Bulk f32 <-> f16 conversion for KV pages. Pages are serialized as IEEE half floats (little-endian);
// converting element by element through a function call per value would dominate page I/O, so these
// loops work on the bit patterns directly: normals inline, the rare subnormal/inf/NaN through
// gguf/quant.ts's exact scalar conversion (which these must equal bit for bit; test/kv/pool.test.ts).
import { f16BitsToF32Bits, f32ToF16 } from '../gguf/quant.js';

let table: Uint32Array | null = null;

/** f32 bits of every half, indexed by the half's bits (256 KiB, built on first use). */
function f16Table(): Uint32Array {
  if (!table) {
    table = new Uint32Array(65536);
    for (let h = 0; h < 65536; h++) table[h] = f16BitsToF32Bits(h);
  }
  return table;
}

/** dst[i] = half(src[i]), round to nearest, ties to even (as f32ToF16). */
export function f32ToF16Array(src: Float32Array, dst: Uint16Array, n = src.length, srcOff = 0, dstOff = 0): void {
  // Normal halves come from f32 exponents 113..142 (unbiased -14..15): converted inline.
  f32BitsToF16(src, new Uint32Array(src.buffer, src.byteOffset, src.length), dst, n, srcOff, dstOff);
}

/** dst[i] = f32(src[i]) (exact). */
export function f16ToF32Array(src: Uint16Array, dst: Float32Array, n = src.length, srcOff = 0, dstOff = 0): void {
  f16ToF32Bits(src, new Uint32Array(dst.buffer, dst.byteOffset, dst.length), n, srcOff, dstOff);
}

/** As f16ToF32Array, into the bits of an f32 array (hot loops keep the Uint32Array view). */
export function f16ToF32Bits(src: Uint16Array, dst: Uint32Array, n: number, srcOff: number, dstOff: number): void {
  const t = f16Table();
  for (let i = 0; i < n; i++) dst[dstOff + i] = t[src[srcOff + i]];
}

/** As f32ToF16Array, from an f32 array and a Uint32Array view of the same memory. */
export function f32BitsToF16(f: Float32Array, u: Uint32Array, dst: Uint16Array, n: number, srcOff: number, dstOff: number): void {
  for (let i = 0; i < n; i++) {
    const x = u[srcOff + i];
    const exp = (x >>> 23) & 0xff;
    if (exp >= 113 && exp <= 142) {
      let h = ((exp - 112) << 10) | ((x >>> 13) & 0x3ff);
      const rest = x & 0x1fff;
      if (rest > 0x1000 || (rest === 0x1000 && (h & 1) === 1)) h += 1;
      dst[dstOff + i] = ((x >>> 16) & 0x8000) | h;
    } else dst[dstOff + i] = f32ToF16(f[srcOff + i]);
  }
}

/** Rounds values in place to the nearest half (what an f16 KV cache stores), kept as f32. */
export function roundF16InPlace(a: Float32Array, off = 0, n = a.length - off): void {
  const t = f16Table();
  const u = new Uint32Array(a.buffer, a.byteOffset, a.length);
  for (let i = off; i < off + n; i++) {
    const x = u[i];
    const exp = (x >>> 23) & 0xff;
    let h: number;
    if (exp >= 113 && exp <= 142) {
      h = ((exp - 112) << 10) | ((x >>> 13) & 0x3ff);
      const rest = x & 0x1fff;
      if (rest > 0x1000 || (rest === 0x1000 && (h & 1) === 1)) h += 1;
      h |= (x >>> 16) & 0x8000;
    } else h = f32ToF16(a[i]);
    u[i] = t[h];
  }
}

/** A Uint16Array over bytes (copying only when the bytes are not 2-aligned). Little-endian hosts only. */
export function u16View(bytes: Uint8Array): Uint16Array {
  if (bytes.byteOffset % 2 === 0) return new Uint16Array(bytes.buffer, bytes.byteOffset, bytes.byteLength >> 1);
  return new Uint16Array(bytes.slice().buffer);
}

if (new Uint8Array(new Uint16Array([1]).buffer)[0] !== 1) {
  throw new Error('RepoKV KV pages assume a little-endian host');
}
