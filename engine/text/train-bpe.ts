// A small, deterministic BPE trainer: used once (gen-assets.ts) to make the vocabularies of our
// synthetic test models from a fixed list of real source files. Words come from the same
// pre-tokenizer the vocabulary will be used with, so the merges fit the words they will see.
//
// Classic BPE: count adjacent symbol pairs over all words (weighted by word frequency), merge the most
// frequent pair, update the counts of only the words that contained it, repeat. Ties go to the pair
// whose left then right symbol was created first, so the same input gives the same merges.

import { preTokenizeToWords, type PreTokenizerKind } from './pretokenize.js';
import { bytesToByteLevel } from './unicode.js';

export interface BPEMerge {
  left: string;
  right: string;
}

export interface TrainBPEOptions {
  /** How many merges to learn at most. */
  merges: number;
  /** Stop when the best pair occurs fewer times than this (default 2). */
  minCount?: number;
  /** Refuse merges whose result would be this many UTF-16 units or longer (default unlimited). */
  maxTokenLength?: number;
}

const PAIR = 1 << 21; // symbol ids stay below 2^21, so a pair packs into one safe integer

/**
 * Learns merges from words given as sequences of initial symbols (`words` maps each distinct word,
 * as its list of base-alphabet symbols, to how often it occurs).
 */
export function trainBPE(words: Map<string[], number>, opts: TrainBPEOptions): BPEMerge[] {
  const minCount = opts.minCount ?? 2;
  const maxLen = opts.maxTokenLength ?? Infinity;
  const symText: string[] = [];
  const symId = new Map<string, number>();
  const intern = (t: string): number => {
    let id = symId.get(t);
    if (id === undefined) {
      id = symText.length;
      symText.push(t);
      symId.set(t, id);
    }
    return id;
  };

  const seqs: number[][] = [];
  const freq: number[] = [];
  for (const [syms, n] of words) {
    if (syms.length < 2) continue;
    seqs.push(syms.map(intern));
    freq.push(n);
  }

  const counts = new Map<number, number>();
  const where = new Map<number, Set<number>>();
  const addPairs = (w: number, sign: number): void => {
    const s = seqs[w];
    const n = freq[w] * sign;
    for (let i = 0; i + 1 < s.length; i++) {
      const key = s[i] * PAIR + s[i + 1];
      counts.set(key, (counts.get(key) ?? 0) + n);
      if (sign > 0) {
        let set = where.get(key);
        if (!set) where.set(key, (set = new Set()));
        set.add(w);
      }
    }
  };
  for (let w = 0; w < seqs.length; w++) addPairs(w, 1);

  const merges: BPEMerge[] = [];
  while (merges.length < opts.merges) {
    let bestKey = -1;
    let bestCount = minCount - 1;
    for (const [key, c] of counts) {
      if (c > bestCount || (c === bestCount && bestKey >= 0 && key < bestKey)) {
        if (c < minCount) continue;
        const a = Math.floor(key / PAIR);
        const b = key % PAIR;
        if (symText[a].length + symText[b].length >= maxLen) continue;
        bestKey = key;
        bestCount = c;
      }
    }
    if (bestKey < 0) break;
    const a = Math.floor(bestKey / PAIR);
    const b = bestKey % PAIR;
    const merged = intern(symText[a] + symText[b]);
    if (merged >= PAIR) throw new Error('BPE trainer: too many symbols');
    merges.push({ left: symText[a], right: symText[b] });

    const affected = [...(where.get(bestKey) ?? [])].sort((x, y) => x - y);
    for (const w of affected) {
      addPairs(w, -1);
      const s = seqs[w];
      const out: number[] = [];
      for (let i = 0; i < s.length; i++) {
        if (i + 1 < s.length && s[i] === a && s[i + 1] === b) {
          out.push(merged);
          i++;
        } else out.push(s[i]);
      }
      seqs[w] = out;
      addPairs(w, 1);
    }
    // drop pairs no word holds any more, so the scan above stays short
    for (const [key, c] of counts) if (c <= 0) counts.delete(key);
    where.delete(bestKey);
  }
  return merges;
}

/** Counts distinct words, keyed by their text, then turns them into symbol lists. */
function countWords(texts: Iterable<string>, split: (text: string) => Iterable<string>, symbols: (word: string) => string[]): Map<string[], number> {
  const counts = new Map<string, number>();
  for (const t of texts) for (const w of split(t)) counts.set(w, (counts.get(w) ?? 0) + 1);
  const out = new Map<string[], number>();
  for (const [w, n] of counts) out.set(symbols(w), n);
  return out;
}

const utf8 = new TextEncoder();

/**
 * Byte-level BPE merges ("left right", in the byte-level alphabet) learned over the words of the
 * given pre-tokenizer.
 */
export function trainByteLevel(texts: string[], pre: PreTokenizerKind, nMerges: number): string[] {
  const words = countWords(
    texts,
    (t) => preTokenizeToWords(pre, t),
    (w) => [...bytesToByteLevel(utf8.encode(w))],
  );
  return trainBPE(words, { merges: nMerges }).map((m) => `${m.left} ${m.right}`);
}

export const SPM_SPACE = '\u2581'; // ▁, SentencePiece's visible space

/**
 * SentencePiece pieces learned by BPE over text whose spaces are written ▁ (as SentencePiece does).
 * Words: a run of ▁ before another ▁ stays whole (indentation), a single ▁ starts a word. Only
 * characters seen at least `minCharCount` times (and not control characters) join the alphabet;
 * the others, and newlines and tabs, are left to byte fallback, as in Llama 2's vocabulary.
 * Returns the merged pieces in merge order and the alphabet by falling frequency.
 */
export function trainSentencePiece(texts: string[], nMerges: number, minCharCount = 8): { pieces: string[]; chars: string[] } {
  const charCount = new Map<string, number>();
  const escaped = texts.map((t) => SPM_SPACE + t.replaceAll(' ', SPM_SPACE));
  for (const t of escaped) for (const ch of t) charCount.set(ch, (charCount.get(ch) ?? 0) + 1);
  const chars = [...charCount]
    .filter(([ch, n]) => n >= minCharCount && !/^\p{C}$/u.test(ch))
    .sort((a, b) => b[1] - a[1] || (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0))
    .map(([ch]) => ch);
  const alphabet = new Set(chars);
  const split = function* (t: string): Iterable<string> {
    // "▁▁▁▁return▁x" -> "▁▁▁", "▁return", "▁x": the last ▁ of a run starts a word, the ones before
    // it form an indentation word; characters outside the alphabet end words and are dropped
    const cps = [...t];
    let word = '';
    let allSpace = true;
    for (let i = 0; i < cps.length; i++) {
      const ch = cps[i];
      if (!alphabet.has(ch)) {
        if (word) yield word;
        word = '';
        allSpace = true;
        continue;
      }
      if (ch === SPM_SPACE) {
        const lastOfRun = cps[i + 1] !== SPM_SPACE;
        if (lastOfRun || !allSpace) {
          if (word) yield word;
          word = '';
        }
        allSpace = !lastOfRun;
        word += ch;
        continue;
      }
      word += ch;
      allSpace = false;
    }
    if (word) yield word;
  };
  const words = countWords(escaped, split, (w) => [...w]);
  const merges = trainBPE(words, { merges: nMerges, maxTokenLength: 24 });
  const seen = new Set<string>(chars);
  const pieces: string[] = [];
  for (const m of merges) {
    const p = m.left + m.right;
    if (!seen.has(p)) {
      seen.add(p);
      pieces.push(p);
    }
  }
  return { pieces, chars };
}
