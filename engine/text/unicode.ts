// Unicode character classes as llama.cpp's pre-tokenizers see them (src/unicode.cpp, unicode-data.cpp):
// one general-category class per code point (\p{N}, \p{L}, \p{Z}, \p{M}, \p{P}, \p{S}, \p{C}, or
// "undefined" for unassigned code points) plus the White_Space property (\s). The table is a committed
// asset (assets/unicode-classes.json, made by gen-assets.ts) so that tokenization does not change with
// the ICU version of whatever Node runs it: llama.cpp's table is frozen at one Unicode version too.

import table from './assets/unicode-classes.json' with { type: 'json' };

export const enum CharClass {
  Undefined = 0,
  Number = 1,
  Letter = 2,
  Separator = 3,
  Mark = 4,
  Punctuation = 5,
  Symbol = 6,
  Control = 7,
}

/** Bit set on a class byte when the code point is White_Space. */
export const WS_BIT = 0x80;
/** Mask of the class in a class byte. */
export const CLASS_MASK = 0x7f;
export const MAX_CODEPOINT = 0x10ffff;

let classes: Uint8Array | null = null;

/**
 * One byte per code point (0..0x10FFFF): the CharClass in the low bits, WS_BIT for White_Space.
 * Built once from the range table (~1.1 MB); the pre-tokenizers index it directly.
 */
export function charClasses(): Uint8Array {
  if (classes) return classes;
  const t = new Uint8Array(MAX_CODEPOINT + 1);
  const r = table.ranges as number[];
  for (let i = 0; i < r.length; i += 2) {
    const end = i + 2 < r.length ? r[i + 2] : MAX_CODEPOINT + 1;
    t.fill(r[i + 1], r[i], end);
  }
  for (const cp of table.whitespace as number[]) t[cp] |= WS_BIT;
  classes = t;
  return t;
}

export function isLetter(cp: number): boolean {
  return (charClasses()[cp] & CLASS_MASK) === CharClass.Letter;
}
export function isNumber(cp: number): boolean {
  return (charClasses()[cp] & CLASS_MASK) === CharClass.Number;
}
export function isWhitespace(cp: number): boolean {
  return (charClasses()[cp] & WS_BIT) !== 0;
}

// ---- GPT-2 byte-level encoding ---------------------------------------------------------------------
// Byte-level BPE vocabularies spell every byte as one printable code point: the printable Latin-1
// bytes stand for themselves, the other 68 bytes are shifted to U+0100 and up, in byte order.

/** BYTE_TO_CP[b] is the code point that spells byte b in a byte-level BPE vocabulary. */
export const BYTE_TO_CP: Uint16Array = (() => {
  const m = new Uint16Array(256);
  let n = 0;
  for (let b = 0; b < 256; b++) {
    const printable = (b >= 0x21 && b <= 0x7e) || (b >= 0xa1 && b <= 0xac) || (b >= 0xae && b <= 0xff);
    m[b] = printable ? b : 256 + n++;
  }
  return m;
})();

/** CP_TO_BYTE[cp] for cp < 324: the byte a byte-level code point stands for, or -1. */
export const CP_TO_BYTE: Int16Array = (() => {
  const m = new Int16Array(324).fill(-1);
  for (let b = 0; b < 256; b++) m[BYTE_TO_CP[b]] = b;
  return m;
})();

/** The 256 byte-level code points in GPT-2 vocabulary order (printable bytes first, then the rest). */
export function byteLevelOrder(): number[] {
  const order: number[] = [];
  for (let b = 0; b < 256; b++) if (BYTE_TO_CP[b] === b) order.push(b);
  for (let b = 0; b < 256; b++) if (BYTE_TO_CP[b] !== b) order.push(b);
  return order;
}

/** Spells UTF-8 bytes in the byte-level alphabet. */
export function bytesToByteLevel(bytes: Uint8Array, start = 0, end = bytes.length): string {
  let s = '';
  for (let i = start; i < end; i++) s += String.fromCharCode(BYTE_TO_CP[bytes[i]]);
  return s;
}

/** Maps a byte-level string back to bytes; code points outside the alphabet give null. */
export function byteLevelToBytes(s: string): Uint8Array | null {
  const out = new Uint8Array(s.length);
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    const b = c < 324 ? CP_TO_BYTE[c] : -1;
    if (b < 0) return null;
    out[i] = b;
  }
  return out;
}
