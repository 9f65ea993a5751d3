// Pre-tokenizers of byte-level BPE vocabularies: they cut text into the "words" BPE merges within.
// Each one reproduces, code point for code point, the hand-written splitter llama.cpp runs for that
// regex (src/unicode.cpp, unicode_regex_split_custom_*), including where it departs from a textbook
// regex engine. Classes come from our frozen table (unicode.ts), never from the running ICU.
//
//   llama3 ("llama-bpe"): (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}|
//                         ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+
//   qwen2:                the same with \p{N} (one digit per word) instead of \p{N}{1,3}
//   gpt2:                 's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)
//   default:              four splits in a row (files with no or an unknown-to-them pre-tokenizer):
//                         [\p{P}\$\+<=>\^~\|]+, then gpt2, then \p{N}+, then [0-9][0-9][0-9]. llama.cpp runs
//                         the three regexes with std::regex over a "collapsed" text where every non-ASCII
//                         code point stands as one byte for its class; we do the same with JS regexes.
//
// Words are reported as end offsets (UTF-16 indices into the string) so the caller can slice or hash
// them without this code allocating anything per word.

import { CharClass, CLASS_MASK, WS_BIT, charClasses } from './unicode.js';

export type PreTokenizerKind = 'llama3' | 'qwen2' | 'gpt2' | 'default';

/** A growable list of word end offsets, reused across calls. */
export class WordEnds {
  ends = new Int32Array(1024);
  length = 0;
  reset(): void {
    this.length = 0;
  }
  push(end: number): void {
    if (this.length === this.ends.length) {
      const n = new Int32Array(this.ends.length * 2);
      n.set(this.ends);
      this.ends = n;
    }
    this.ends[this.length++] = end;
  }
}

const CR = 0x0d;
const LF = 0x0a;
const SPACE = 0x20;
const APOS = 0x27;

/** Code point at UTF-16 index i of s (s is well-formed; a pair split by `end` cannot occur). */
function cpAt(s: string, i: number): number {
  const c = s.charCodeAt(i);
  if ((c & 0xfc00) !== 0xd800) return c;
  return 0x10000 + ((c - 0xd800) << 10) + (s.charCodeAt(i + 1) - 0xdc00);
}

/** ASCII lower case of a code point; the only letters the contraction rule asks about are ASCII. */
function lowerAscii(c: number): number {
  return c >= 0x41 && c <= 0x5a ? c + 32 : c;
}

/** Length of a contraction ('s 't 're 've 'm 'll 'd, any case when `anyCase`) at i, or 0. */
function contraction(s: string, i: number, end: number, anyCase: boolean): number {
  if (i + 1 >= end) return 0;
  const a = anyCase ? lowerAscii(s.charCodeAt(i + 1)) : s.charCodeAt(i + 1);
  if (a === 0x73 || a === 0x74 || a === 0x6d || a === 0x64) return 2; // s t m d
  if (i + 2 >= end) return 0;
  const b = anyCase ? lowerAscii(s.charCodeAt(i + 2)) : s.charCodeAt(i + 2);
  if ((a === 0x72 && b === 0x65) || (a === 0x76 && b === 0x65) || (a === 0x6c && b === 0x6c)) return 3; // re ve ll
  return 0;
}

/**
 * Splits s[start, end) with the llama3 / qwen2 rules; pushes word end offsets onto `out`.
 * `maxDigits` is 3 for llama3 (\p{N}{1,3}) and 1 for qwen2 (\p{N}).
 */
export function splitLlama3(s: string, start: number, end: number, maxDigits: number, out: WordEnds): void {
  const C = charClasses();
  let pos = start;
  while (pos < end) {
    const cp = cpAt(s, pos);
    const w = cp > 0xffff ? 2 : 1;
    const f = C[cp];
    const cls = f & CLASS_MASK;

    // (?i:'s|'t|'re|'ve|'m|'ll|'d)
    if (cp === APOS) {
      const n = contraction(s, pos, end, true);
      if (n) {
        pos += n;
        out.push(pos);
        continue;
      }
    }

    // [^\r\n\p{L}\p{N}]?\p{L}+
    if (cp !== CR && cp !== LF && cls !== CharClass.Number) {
      let letterNext = cls === CharClass.Letter;
      if (!letterNext && pos + w < end) letterNext = (C[cpAt(s, pos + w)] & CLASS_MASK) === CharClass.Letter;
      if (letterNext) {
        pos += w;
        while (pos < end) {
          const c = cpAt(s, pos);
          if ((C[c] & CLASS_MASK) !== CharClass.Letter) break;
          pos += c > 0xffff ? 2 : 1;
        }
        out.push(pos);
        continue;
      }
    }

    // \p{N}{1,maxDigits}
    if (cls === CharClass.Number) {
      let run = 0;
      while (pos < end) {
        const c = cpAt(s, pos);
        if ((C[c] & CLASS_MASK) !== CharClass.Number) break;
        pos += c > 0xffff ? 2 : 1;
        if (++run === maxDigits) {
          out.push(pos);
          run = 0;
        }
      }
      if (run) out.push(pos);
      continue;
    }

    // ' '?[^\s\p{L}\p{N}]+[\r\n]*  — the class test is on the character after an optional space;
    // a space at the very end of the fragment still enters this branch (as llama.cpp does) and
    // becomes a word on its own.
    {
      let p = pos;
      let f2: number;
      let inRange = true;
      if (cp === SPACE) {
        p = pos + 1;
        if (p < end) f2 = C[cpAt(s, p)];
        else {
          f2 = 0;
          inRange = false;
        }
      } else f2 = f;
      const c2 = f2 & CLASS_MASK;
      if (!inRange || ((f2 & WS_BIT) === 0 && c2 !== CharClass.Letter && c2 !== CharClass.Number)) {
        while (p < end) {
          const c = cpAt(s, p);
          const g = C[c];
          const k = g & CLASS_MASK;
          if ((g & WS_BIT) !== 0 || k === CharClass.Letter || k === CharClass.Number) break;
          p += c > 0xffff ? 2 : 1;
        }
        while (p < end) {
          const c = s.charCodeAt(p);
          if (c !== CR && c !== LF) break;
          p++;
        }
        pos = p;
        out.push(pos);
        continue;
      }
    }

    // \s*[\r\n]+ | \s+(?!\S) | \s+   (every White_Space code point is in the BMP)
    {
      let p = pos;
      let lastRN = -1;
      while (p < end) {
        const c = s.charCodeAt(p);
        if ((C[c] & WS_BIT) === 0 || (c & 0xfc00) === 0xd800) break;
        p++;
        if (c === CR || c === LF) lastRN = p;
      }
      const n = p - pos;
      if (lastRN >= 0) {
        pos = lastRN;
        out.push(pos);
        continue;
      }
      if (n > 1 && p < end) {
        pos = p - 1;
        out.push(pos);
        continue;
      }
      if (n > 0) {
        pos = p;
        out.push(pos);
        continue;
      }
    }

    // no rule matched: one code point on its own
    pos += w;
    out.push(pos);
  }
}

/** Splits s[start, end) with the GPT-2 rules ('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)). */
export function splitGpt2(s: string, start: number, end: number, out: WordEnds): void {
  const C = charClasses();
  let pos = start;
  while (pos < end) {
    const cp = cpAt(s, pos);
    const w = cp > 0xffff ? 2 : 1;

    if (cp === APOS) {
      const n = contraction(s, pos, end, false);
      if (n) {
        pos += n;
        out.push(pos);
        continue;
      }
    }

    // classes of the character after an optional leading space (0 = past the end)
    let p = pos;
    let f2: number;
    let inRange = true;
    if (cp === SPACE) {
      p = pos + 1;
      if (p < end) f2 = C[cpAt(s, p)];
      else {
        f2 = 0;
        inRange = false;
      }
    } else f2 = C[cp];
    const k2 = f2 & CLASS_MASK;

    if (inRange && (k2 === CharClass.Letter || k2 === CharClass.Number)) {
      // ' '?\p{L}+ or ' '?\p{N}+
      while (p < end) {
        const c = cpAt(s, p);
        if ((C[c] & CLASS_MASK) !== k2) break;
        p += c > 0xffff ? 2 : 1;
      }
      pos = p;
      out.push(pos);
      continue;
    }
    if (inRange && (f2 & WS_BIT) === 0) {
      // ' '?[^\s\p{L}\p{N}]+
      while (p < end) {
        const c = cpAt(s, p);
        const g = C[c];
        const k = g & CLASS_MASK;
        if ((g & WS_BIT) !== 0 || k === CharClass.Letter || k === CharClass.Number) break;
        p += c > 0xffff ? 2 : 1;
      }
      pos = p;
      out.push(pos);
      continue;
    }

    let q = pos;
    while (q < end) {
      const c = s.charCodeAt(q);
      if ((C[c] & WS_BIT) === 0 || (c & 0xfc00) === 0xd800) break;
      q++;
    }
    const n = q - pos;
    if (n > 1 && q < end) {
      pos = q - 1;
      out.push(pos);
      continue;
    }
    if (n > 0) {
      pos = q;
      out.push(pos);
      continue;
    }
    pos += w;
    out.push(pos);
  }
}

// The default pre-tokenizer's regexes over the collapsed text: non-ASCII code points are written as
// \u00D1 (number), \u00D2 (letter), \u00D3 (punctuation), \u00D4 (mark), \u00D5 (symbol), \u00D0
// (other), \x0B (white space); \p{P} and \p{N} become those units plus their ASCII members.
const RE_DEFAULT_PUNCT = /[\u00D3!-#%-*,-/:-;?-@[-\]_{}$+<=>^~|]+/g;
const RE_DEFAULT_NUMBER = /[\u00D10-9]+/g;
const RE_DEFAULT_DIGITS3 = /[0-9][0-9][0-9]/g;
const COLLAPSED = ['\u00D0', '\u00D1', '\u00D2', '\u00D0', '\u00D4', '\u00D3', '\u00D5', '\u00D0'];

/** Cuts every [bounds[i], bounds[i+1]) of the collapsed text into regex matches and the gaps between them. */
function regexSplit(collapsed: string, re: RegExp, bounds: number[]): number[] {
  const out = [bounds[0]];
  for (let i = 0; i + 1 < bounds.length; i++) {
    const a = bounds[i];
    const b = bounds[i + 1];
    const sub = collapsed.slice(a, b);
    let last = 0;
    for (const m of sub.matchAll(re)) {
      if (m.index > last) out.push(a + m.index);
      last = m.index + m[0].length;
      out.push(a + last);
    }
    if (last < sub.length) out.push(b);
  }
  return out;
}

/** Splits s[start, end) with llama.cpp's default BPE pre-tokenizer. */
export function splitDefault(s: string, start: number, end: number, out: WordEnds): void {
  const C = charClasses();
  // code points: their UTF-16 offsets, and the collapsed text (one unit per code point)
  const pos: number[] = [];
  let collapsed = '';
  for (let i = start; i < end; ) {
    const cp = cpAt(s, i);
    pos.push(i);
    if (cp < 0x80) collapsed += s[i];
    else {
      const f = C[cp];
      collapsed += f & WS_BIT ? '\x0B' : COLLAPSED[f & CLASS_MASK];
    }
    i += cp > 0xffff ? 2 : 1;
  }
  const n = pos.length;
  pos.push(end);
  let bounds = regexSplit(collapsed, RE_DEFAULT_PUNCT, [0, n]);
  // the gpt2 split, run on the original text within each piece, its ends mapped back to code points
  const cpIndex = new Map<number, number>();
  for (let k = 0; k <= n; k++) cpIndex.set(pos[k], k);
  const words = new WordEnds();
  const next = [0];
  for (let i = 0; i + 1 < bounds.length; i++) {
    words.reset();
    splitGpt2(s, pos[bounds[i]], pos[bounds[i + 1]], words);
    for (let k = 0; k < words.length; k++) next.push(cpIndex.get(words.ends[k])!);
  }
  bounds = regexSplit(collapsed, RE_DEFAULT_NUMBER, next);
  bounds = regexSplit(collapsed, RE_DEFAULT_DIGITS3, bounds);
  for (let k = 1; k < bounds.length; k++) out.push(pos[bounds[k]]);
}

/** Splits s[start, end) with the named pre-tokenizer. */
export function preTokenize(kind: PreTokenizerKind, s: string, start: number, end: number, out: WordEnds): void {
  if (kind === 'llama3') splitLlama3(s, start, end, 3, out);
  else if (kind === 'qwen2') splitLlama3(s, start, end, 1, out);
  else if (kind === 'gpt2') splitGpt2(s, start, end, out);
  else splitDefault(s, start, end, out);
}

/** Convenience for tests and tools: the words of a string. */
export function preTokenizeToWords(kind: PreTokenizerKind, s: string): string[] {
  const out = new WordEnds();
  preTokenize(kind, s, 0, s.length, out);
  const words: string[] = [];
  let prev = 0;
  for (let i = 0; i < out.length; i++) {
    words.push(s.slice(prev, out.ends[i]));
    prev = out.ends[i];
  }
  return words;
}
