// SentencePiece ("llama" tokenizer model) as llama.cpp runs it (src/llama-vocab.cpp,
// llm_tokenizer_spm_session): spaces are written ▁, the text starts as one symbol per code point, and
// the adjacent pair whose concatenation is a token with the highest score (leftmost among equal
// scores) is merged until none is left; a symbol that is not a token becomes byte tokens <0xXX>.
//
// Speed: merging never crosses a point where no token contains the two characters on either side, so
// the text is cut before each ▁ whose left neighbour never precedes ▁ inside a token. The pieces are
// word-like ("▁return", "▁▁▁▁") and their results are cached. On a cache miss, symbols are integer
// ids and the pairs that merge come from a table made once from the vocabulary (every token cut in two).

import type { Vocab } from './vocab.js';
import type { IntList } from './intlist.js';

export const SPM_SPACE = 0x2581; // ▁
const MAX_CACHED = 64;
const MAX_CACHE = 1 << 18;

export class SPMModel {
  /** UTF-16 units that some token has directly before a ▁. */
  private beforeSpace = new Set<number>();
  private byteToken = new Int32Array(256);
  private readonly cache = new Map<string, number | Int32Array>();
  // Symbols are tokens or single code points that are not tokens ("extended" ids from vocab.size on).
  // A pair of symbols merges when their concatenation is a token: every such pair is listed up front by
  // cutting every token in two at each code point boundary.
  private readonly nTokens: number;
  private readonly bmpSym = new Int32Array(65536).fill(-1);
  private readonly astralSym = new Map<number, number>();
  private extraCount = 0;
  private tblLeft: Int32Array;
  private tblRight: Int32Array;
  private tblResult: Int32Array;
  private tblMask: number;
  // scratch of the merge loop
  private sym = new Int32Array(64);
  private cpStart = new Int32Array(64);
  private cpLen = new Int32Array(64);
  private prev = new Int32Array(64);
  private next = new Int32Array(64);
  private heap = new ScoreHeap();

  constructor(private readonly vocab: Vocab) {
    this.nTokens = vocab.size;
    for (const t of vocab.texts) {
      for (let j = t.indexOf('\u2581', 1); j > 0; j = t.indexOf('\u2581', j + 1)) this.beforeSpace.add(t.charCodeAt(j - 1));
    }
    for (let b = 0; b < 256; b++) {
      const hex = `<0x${b.toString(16).toUpperCase().padStart(2, '0')}>`;
      let id = vocab.textToId.get(hex);
      if (id === undefined && b < 0x80) id = vocab.textToId.get(String.fromCharCode(b));
      this.byteToken[b] = id ?? vocab.unk; // llama.cpp would stop with an exception here
    }
    // symbol ids of single code points: the token when there is one, else an extended id when the
    // code point appears inside some token (it can merge), else none
    for (const [t, id] of vocab.textToId) {
      const cp = t.codePointAt(0)!;
      if (t.length === (cp > 0xffff ? 2 : 1)) this.setCpSym(cp, id);
    }
    for (const t of vocab.texts) {
      for (const ch of t) {
        const cp = ch.codePointAt(0)!;
        if (this.cpSym(cp) < 0) this.setCpSym(cp, this.nTokens + this.extraCount++);
      }
    }
    // every token split in two symbols: (left, right) -> token
    const entries: number[] = [];
    const symOf = (text: string): number => {
      const id = vocab.textToId.get(text);
      if (id !== undefined) return id;
      const cp = text.codePointAt(0)!;
      return text.length === (cp > 0xffff ? 2 : 1) ? this.cpSym(cp) : -1;
    };
    vocab.textToId.forEach((id, t) => {
      for (let k = 1; k < t.length; k++) {
        if ((t.charCodeAt(k) & 0xfc00) === 0xdc00) continue; // inside a surrogate pair
        const l = symOf(t.slice(0, k));
        if (l < 0) continue;
        const r = symOf(t.slice(k));
        if (r >= 0) entries.push(l, r, id);
      }
    });
    let cap = 16;
    while (cap < (entries.length / 3) * 2) cap <<= 1;
    this.tblLeft = new Int32Array(cap).fill(-1);
    this.tblRight = new Int32Array(cap);
    this.tblResult = new Int32Array(cap);
    this.tblMask = cap - 1;
    for (let i = 0; i < entries.length; i += 3) {
      const l = entries[i];
      const r = entries[i + 1];
      let h = this.hash(l, r);
      while (this.tblLeft[h] !== -1 && !(this.tblLeft[h] === l && this.tblRight[h] === r)) h = (h + 1) & this.tblMask;
      this.tblLeft[h] = l;
      this.tblRight[h] = r;
      this.tblResult[h] = entries[i + 2];
    }
  }

  private cpSym(cp: number): number {
    return cp < 0x10000 ? this.bmpSym[cp] : (this.astralSym.get(cp) ?? -1);
  }
  private setCpSym(cp: number, id: number): void {
    if (cp < 0x10000) this.bmpSym[cp] = id;
    else this.astralSym.set(cp, id);
  }

  private hash(l: number, r: number): number {
    return ((Math.imul(l, 0x9e3779b1) ^ Math.imul(r + 0x7f4a7c15, 0x85ebca77)) >>> 0) & this.tblMask;
  }

  /** The token the two symbols merge into, or -1. */
  private mergeOf(l: number, r: number): number {
    if (l < 0 || r < 0) return -1;
    let h = this.hash(l, r);
    for (;;) {
      const k = this.tblLeft[h];
      if (k === -1) return -1;
      if (k === l && this.tblRight[h] === r) return this.tblResult[h];
      h = (h + 1) & this.tblMask;
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
      this.mergeSegment(s, start, end, out);
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
    this.mergeSegment(s, start, end, out);
    if (this.cache.size >= MAX_CACHE) this.cache.clear();
    this.cache.set(key, out.length - mark === 1 ? out.data[mark] : out.data.slice(mark, out.length));
  }

  /** The merge loop over s[start, end) (a cache miss). */
  private mergeSegment(s: string, start: number, end: number, out: IntList): void {
    const units = end - start;
    if (this.sym.length < units) this.grow(units);
    const { sym, cpStart, cpLen, prev, next, heap } = this;
    let n = 0;
    for (let i = start; i < end; ) {
      let cp = s.charCodeAt(i);
      let w = 1;
      if ((cp & 0xfc00) === 0xd800 && i + 1 < end) {
        cp = 0x10000 + ((cp - 0xd800) << 10) + (s.charCodeAt(i + 1) - 0xdc00);
        w = 2;
      }
      sym[n] = this.cpSym(cp);
      cpStart[n] = i;
      cpLen[n] = w;
      prev[n] = n - 1;
      next[n] = n + 1;
      n++;
      i += w;
    }
    next[n - 1] = -1;
    heap.clear();
    const scores = this.vocab.scores;
    for (let i = 1; i < n; i++) {
      const m = this.mergeOf(sym[i - 1], sym[i]);
      if (m >= 0) heap.push(scores[m], i - 1, i, cpLen[i - 1] + cpLen[i], m);
    }
    while (heap.size) {
      heap.pop();
      const l = heap.topLeft;
      const r = heap.topRight;
      if (cpLen[l] === 0 || cpLen[r] === 0 || cpLen[l] + cpLen[r] !== heap.topSize) continue; // stale
      sym[l] = heap.topResult;
      cpLen[l] += cpLen[r];
      cpLen[r] = 0;
      const nx = next[r];
      next[l] = nx;
      if (nx >= 0) prev[nx] = l;
      const p = prev[l];
      if (p >= 0) {
        const m = this.mergeOf(sym[p], sym[l]);
        if (m >= 0) heap.push(scores[m], p, l, cpLen[p] + cpLen[l], m);
      }
      if (nx >= 0) {
        const m = this.mergeOf(sym[l], sym[nx]);
        if (m >= 0) heap.push(scores[m], l, nx, cpLen[l] + cpLen[nx], m);
      }
    }
    for (let i = 0; i !== -1; i = next[i]) {
      const id = sym[i];
      if (id >= 0 && id < this.nTokens) out.push(id);
      else {
        // a code point that is not a token: its UTF-8 bytes as byte tokens
        for (const b of Buffer.from(s.substr(cpStart[i], cpLen[i]), 'utf8')) out.push(this.byteToken[b]);
      }
    }
  }

  private grow(n: number): void {
    const cap = Math.max(n, this.sym.length * 2);
    this.sym = new Int32Array(cap);
    this.cpStart = new Int32Array(cap);
    this.cpLen = new Int32Array(cap);
    this.prev = new Int32Array(cap);
    this.next = new Int32Array(cap);
  }
}

/** Max-heap of candidate merges by (score desc, left asc); the popped entry is left in top*. */
class ScoreHeap {
  private score = new Float64Array(64);
  private left = new Int32Array(64);
  private right = new Int32Array(64);
  private sz = new Int32Array(64);
  private res = new Int32Array(64);
  size = 0;
  topLeft = 0;
  topRight = 0;
  topSize = 0;
  topResult = 0;

  clear(): void {
    this.size = 0;
  }
  private before(i: number, j: number): boolean {
    const a = this.score[i];
    const b = this.score[j];
    return a > b || (a === b && this.left[i] < this.left[j]);
  }
  private swap(i: number, j: number): void {
    const s = this.score[i]; this.score[i] = this.score[j]; this.score[j] = s;
    let t = this.left[i]; this.left[i] = this.left[j]; this.left[j] = t;
    t = this.right[i]; this.right[i] = this.right[j]; this.right[j] = t;
    t = this.sz[i]; this.sz[i] = this.sz[j]; this.sz[j] = t;
    t = this.res[i]; this.res[i] = this.res[j]; this.res[j] = t;
  }
  push(score: number, left: number, right: number, size: number, result: number): void {
    if (this.size === this.left.length) {
      const gi = (a: Int32Array) => {
        const b = new Int32Array(a.length * 2);
        b.set(a);
        return b;
      };
      const f = new Float64Array(this.score.length * 2);
      f.set(this.score);
      this.score = f;
      this.left = gi(this.left);
      this.right = gi(this.right);
      this.sz = gi(this.sz);
      this.res = gi(this.res);
    }
    let i = this.size++;
    this.score[i] = score;
    this.left[i] = left;
    this.right[i] = right;
    this.sz[i] = size;
    this.res[i] = result;
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
    this.topResult = this.res[0];
    const last = --this.size;
    if (last > 0) {
      this.score[0] = this.score[last];
      this.left[0] = this.left[last];
      this.right[0] = this.right[last];
      this.sz[0] = this.sz[last];
      this.res[0] = this.res[last];
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
