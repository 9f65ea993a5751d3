// SentencePiece ("llama" tokenizer model) as llama.cpp runs it (src/llama-vocab.cpp,
// llm_tokenizer_spm_session): spaces are written ▁, the text starts as one symbol per code point, and
// the adjacent pair whose concatenation is a token with the highest score (leftmost among equal
// scores) is merged until none is left; a symbol that is not a token becomes byte tokens <0xXX>.
//
// Speed: merging never crosses a point where no token contains the two characters on either side, so
// the text is cut before each ▁ whose left neighbour never precedes ▁ inside a token. The pieces are
// word-like ("▁return", "▁▁▁▁") and their results are cached.

import type { Vocab } from './vocab.js';
import { IntList } from './intlist.js';

export const SPM_SPACE = 0x2581; // ▁
const MAX_CACHED = 64;
const MAX_CACHE = 1 << 18;

export class SPMModel {
  /** UTF-16 units that some token has directly before a ▁. */
  private beforeSpace = new Set<number>();
  private byteToken = new Int32Array(256);
  private readonly cache = new Map<string, number | Int32Array>();
  private scratch = new IntList(64);

  constructor(private readonly vocab: Vocab) {
    for (const t of vocab.texts) {
      for (let j = t.indexOf('\u2581', 1); j > 0; j = t.indexOf('\u2581', j + 1)) this.beforeSpace.add(t.charCodeAt(j - 1));
    }
    for (let b = 0; b < 256; b++) {
      const hex = `<0x${b.toString(16).toUpperCase().padStart(2, '0')}>`;
      let id = vocab.textToId.get(hex);
      if (id === undefined && b < 0x80) id = vocab.textToId.get(String.fromCharCode(b));
      this.byteToken[b] = id ?? vocab.unk; // llama.cpp would stop with an exception here
    }
  }

  clearCache(): void {
    this.cache.clear();
  }

  /** Appends the tokens of `text` (spaces not yet escaped) to out. */
  encode(text: string, out: IntList): void {
    const s = text.replaceAll(' ', '\u2581');
    let start = 0;
    for (let i = 1; i < s.length; i++) {
      if (s.charCodeAt(i) === SPM_SPACE && !this.beforeSpace.has(s.charCodeAt(i - 1))) {
        this.encodeSegment(s, start, i, out);
        start = i;
      }
    }
    if (start < s.length) this.encodeSegment(s, start, s.length, out);
  }

  private encodeSegment(s: string, start: number, end: number, out: IntList): void {
    if (end - start > MAX_CACHED) {
      this.mergeSegment(s.slice(start, end), out);
      return;
    }
    const key = s.slice(start, end);
    const hit = this.cache.get(key);
    if (hit !== undefined) {
      if (typeof hit === 'number') out.push(hit);
      else out.pushAll(hit);
      return;
    }
    const mark = out.length;
    this.mergeSegment(key, out);
    if (this.cache.size >= MAX_CACHE) this.cache.clear();
    this.cache.set(key, out.length - mark === 1 ? out.data[mark] : out.data.slice(mark, out.length));
  }

  /** The merge loop over one segment (a cache miss). */
  private mergeSegment(seg: string, out: IntList): void {
    const { vocab } = this;
    // symbols: code points, as [start, length) in UTF-16 units
    const n0 = seg.length;
    const st = new Int32Array(n0);
    const ln = new Int32Array(n0);
    let n = 0;
    for (let i = 0; i < n0; ) {
      const c = seg.charCodeAt(i);
      const w = (c & 0xfc00) === 0xd800 && i + 1 < n0 ? 2 : 1;
      st[n] = i;
      ln[n] = w;
      n++;
      i += w;
    }
    const prev = new Int32Array(n);
    const next = new Int32Array(n);
    for (let i = 0; i < n; i++) {
      prev[i] = i - 1;
      next[i] = i + 1 < n ? i + 1 : -1;
    }
    const heap = new ScoreHeap();
    const tryAdd = (l: number, r: number): void => {
      if (l < 0 || r < 0) return;
      const text = seg.substr(st[l], ln[l] + ln[r]);
      const id = vocab.textToId.get(text);
      if (id === undefined) return;
      heap.push(vocab.scores[id], l, r, ln[l] + ln[r]);
    };
    for (let i = 1; i < n; i++) tryAdd(i - 1, i);
    while (heap.size) {
      heap.pop();
      const l = heap.topLeft;
      const r = heap.topRight;
      if (ln[l] === 0 || ln[r] === 0 || ln[l] + ln[r] !== heap.topSize) continue;
      ln[l] += ln[r];
      ln[r] = 0;
      next[l] = next[r];
      if (next[r] >= 0) prev[next[r]] = l;
      tryAdd(prev[l], l);
      tryAdd(l, next[l]);
    }
    for (let i = 0; i !== -1; i = next[i]) {
      const text = seg.substr(st[i], ln[i]);
      const id = vocab.textToId.get(text);
      if (id !== undefined) out.push(id);
      else {
        const bytes = Buffer.from(text, 'utf8');
        for (const b of bytes) out.push(this.byteToken[b]);
      }
    }
  }
}

/** Max-heap of candidate merges by (score desc, left asc). */
class ScoreHeap {
  private score: number[] = [];
  private left: number[] = [];
  private right: number[] = [];
  private sz: number[] = [];
  size = 0;
  topLeft = 0;
  topRight = 0;
  topSize = 0;

  private before(i: number, j: number): boolean {
    const a = this.score[i];
    const b = this.score[j];
    return a > b || (a === b && this.left[i] < this.left[j]);
  }
  private swap(i: number, j: number): void {
    let t = this.score[i]; this.score[i] = this.score[j]; this.score[j] = t;
    t = this.left[i]; this.left[i] = this.left[j]; this.left[j] = t;
    t = this.right[i]; this.right[i] = this.right[j]; this.right[j] = t;
    t = this.sz[i]; this.sz[i] = this.sz[j]; this.sz[j] = t;
  }
  push(score: number, left: number, right: number, size: number): void {
    let i = this.size++;
    this.score[i] = score;
    this.left[i] = left;
    this.right[i] = right;
    this.sz[i] = size;
    while (i > 0) {
      const p = (i - 1) >> 1;
      if (!this.before(i, p)) break;
      this.swap(i, p);
      i = p;
    }
  }
  pop(): void {
    this.topLeft = this.left[0];
    this.topRight = this.right[0];
    this.topSize = this.sz[0];
    const last = --this.size;
    if (last > 0) {
      this.score[0] = this.score[last];
      this.left[0] = this.left[last];
      this.right[0] = this.right[last];
      this.sz[0] = this.sz[last];
      let i = 0;
      for (;;) {
        const l = 2 * i + 1;
        if (l >= last) break;
        const r = l + 1;
        const m = r < last && this.before(r, l) ? r : l;
        if (!this.before(m, i)) break;
        this.swap(m, i);
        i = m;
      }
    }
  }
}
