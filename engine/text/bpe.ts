// Byte-level BPE ("gpt2" tokenizer model) over pre-tokenized words, with llama.cpp's merge order:
// every word starts as one symbol per UTF-8 byte; the adjacent pair with the lowest merge rank (the
// leftmost among equal ranks) is merged until no pair has a rank; a final symbol that is not a token
// falls back to the tokens of its single ASCII characters (src/llama-vocab.cpp, llm_tokenizer_bpe_session).
//
// Speed: symbols are integer ids ("extended" ids: vocabulary ids, then the texts merges produce that are
// not tokens), pair ranks live in an open-addressing table keyed by the two ids, and each word's result
// is cached: source code repeats its words, so most words never reach the merge loop.

import { BYTE_TO_CP } from './unicode.js';
import type { Vocab } from './vocab.js';
import { IntList } from './intlist.js';

const MAX_CACHED_WORD = 64; // longer words rarely repeat; not worth their key
const MAX_CACHE = 1 << 18; // entries before the cache starts over

export class BPEModel {
  private readonly nTokens: number;
  private readonly extraText: string[] = [];
  private readonly byteSym = new Int32Array(256);
  // merge table: keys (left, right) -> rank; mergeResult[rank] -> extended id of the merged text
  private tblLeft: Int32Array;
  private tblRight: Int32Array;
  private tblRank: Int32Array;
  private tblMask: number;
  private mergeResult: Int32Array;
  private readonly cache = new Map<string, number | Int32Array>();

  // scratch state of the merge loop, grown as needed
  private bytes = new Uint8Array(256);
  private symId = new Int32Array(256);
  private symLen = new Int32Array(256);
  private symPrev = new Int32Array(256);
  private symNext = new Int32Array(256);
  private heap = new BigramHeap();

  constructor(private readonly vocab: Vocab) {
    this.nTokens = vocab.size;
    const extra = new Map<string, number>();
    const intern = (t: string): number => {
      const id = vocab.textToId.get(t);
      if (id !== undefined) return id;
      let e = extra.get(t);
      if (e === undefined) {
        e = this.nTokens + this.extraText.length;
        this.extraText.push(t);
        extra.set(t, e);
      }
      return e;
    };
    for (let b = 0; b < 256; b++) this.byteSym[b] = intern(String.fromCharCode(BYTE_TO_CP[b]));

    const merges = vocab.merges;
    let cap = 16;
    while (cap < merges.length * 2) cap <<= 1;
    this.tblLeft = new Int32Array(cap).fill(-1);
    this.tblRight = new Int32Array(cap);
    this.tblRank = new Int32Array(cap);
    this.tblMask = cap - 1;
    this.mergeResult = new Int32Array(merges.length);
    for (let rank = 0; rank < merges.length; rank++) {
      const m = merges[rank];
      const sp = m.indexOf(' ', 1);
      if (sp < 0) {
        this.mergeResult[rank] = -1;
        continue; // llama.cpp files such a line under an empty pair that never matches
      }
      const a = m.slice(0, sp);
      const b = m.slice(sp + 1);
      const l = intern(a);
      const r = intern(b);
      this.mergeResult[rank] = intern(a + b);
      // the first rank of a repeated pair wins (std::unordered_map::emplace)
      let h = this.hash(l, r);
      while (this.tblLeft[h] !== -1 && !(this.tblLeft[h] === l && this.tblRight[h] === r)) h = (h + 1) & this.tblMask;
      if (this.tblLeft[h] === -1) {
        this.tblLeft[h] = l;
        this.tblRight[h] = r;
        this.tblRank[h] = rank;
      }
    }
  }

  private hash(l: number, r: number): number {
    return (Math.imul(l, 0x9e3779b1) ^ Math.imul(r + 0x7f4a7c15, 0x85ebca77)) >>> 0 & this.tblMask;
  }

  private rankOf(l: number, r: number): number {
    let h = this.hash(l, r);
    for (;;) {
      const k = this.tblLeft[h];
      if (k === -1) return -1;
      if (k === l && this.tblRight[h] === r) return this.tblRank[h];
      h = (h + 1) & this.tblMask;
    }
  }

  clearCache(): void {
    this.cache.clear();
  }

  /** Appends the tokens of text[start, end) (one pre-tokenized word) to out. */
  encodeWord(text: string, start: number, end: number, out: IntList): void {
    const len = end - start;
    const cacheable = len <= MAX_CACHED_WORD;
    let key = '';
    if (cacheable) {
      key = text.slice(start, end);
      const hit = this.cache.get(key);
      if (hit !== undefined) {
        if (typeof hit === 'number') out.push(hit);
        else out.pushAll(hit);
        return;
      }
    }
    const mark = out.length;
    this.mergeWord(text, start, end, out);
    if (cacheable) {
      if (this.cache.size >= MAX_CACHE) this.cache.clear();
      this.cache.set(key, out.length - mark === 1 ? out.data[mark] : out.data.slice(mark, out.length));
    }
  }

  private mergeWord(text: string, start: number, end: number, out: IntList): void {
    const n = this.utf8(text, start, end);
    const bytes = this.bytes;
    if (this.vocab.ignoreMerges && n > 1) {
      // a word that is itself a token is that token (llama3-style vocabularies)
      let s = '';
      for (let i = 0; i < n; i++) s += String.fromCharCode(BYTE_TO_CP[bytes[i]]);
      const id = this.vocab.textToId.get(s);
      if (id !== undefined) {
        out.push(id);
        return;
      }
    }
    if (n === 1) {
      this.emit(this.byteSym[bytes[0]], out);
      return;
    }
    if (this.symId.length < n) this.grow(n);
    const { symId, symLen, symPrev, symNext, heap } = this;
    for (let i = 0; i < n; i++) {
      symId[i] = this.byteSym[bytes[i]];
      symLen[i] = 1;
      symPrev[i] = i - 1;
      symNext[i] = i + 1 < n ? i + 1 : -1;
    }
    heap.clear();
    for (let i = 0; i + 1 < n; i++) {
      const r = this.rankOf(symId[i], symId[i + 1]);
      if (r >= 0) heap.push(r, i, i + 1, 2);
    }
    while (heap.size > 0) {
      heap.pop();
      const l = heap.topLeft;
      const r = heap.topRight;
      const ll = symLen[l];
      const rl = symLen[r];
      if (ll === 0 || rl === 0 || ll + rl !== heap.topSize) continue; // stale pair
      symId[l] = this.mergeResult[heap.topRank];
      symLen[l] = ll + rl;
      symLen[r] = 0;
      const nx = symNext[r];
      symNext[l] = nx;
      if (nx >= 0) symPrev[nx] = l;
      const p = symPrev[l];
      if (p >= 0) {
        const k = this.rankOf(symId[p], symId[l]);
        if (k >= 0) heap.push(k, p, l, symLen[p] + symLen[l]);
      }
      if (nx >= 0) {
        const k = this.rankOf(symId[l], symId[nx]);
        if (k >= 0) heap.push(k, l, nx, symLen[l] + symLen[nx]);
      }
    }
    for (let i = 0; i !== -1; i = symNext[i]) this.emit(symId[i], out);
  }

  /** A final symbol: its token, or (not a token) the tokens of its single ASCII characters. */
  private emit(ext: number, out: IntList): void {
    if (ext < this.nTokens) {
      out.push(ext);
      return;
    }
    const t = this.extraText[ext - this.nTokens];
    for (let i = 0; i < t.length; i++) {
      const c = t.charCodeAt(i);
      if (c >= 0x80) continue; // its UTF-8 bytes are not single-byte tokens
      const id = this.vocab.textToId.get(t[i]);
      if (id !== undefined) out.push(id);
    }
  }

  /** UTF-8 bytes of text[start, end) into this.bytes; returns the count. */
  private utf8(text: string, start: number, end: number): number {
    if (this.bytes.length < (end - start) * 3) this.bytes = new Uint8Array((end - start) * 3 + 16);
    const b = this.bytes;
    let n = 0;
    for (let i = start; i < end; i++) {
      let c = text.charCodeAt(i);
      if (c < 0x80) b[n++] = c;
      else if (c < 0x800) {
        b[n++] = 0xc0 | (c >> 6);
        b[n++] = 0x80 | (c & 63);
      } else if ((c & 0xfc00) === 0xd800 && i + 1 < end) {
        c = 0x10000 + ((c - 0xd800) << 10) + (text.charCodeAt(++i) - 0xdc00);
        b[n++] = 0xf0 | (c >> 18);
        b[n++] = 0x80 | ((c >> 12) & 63);
        b[n++] = 0x80 | ((c >> 6) & 63);
        b[n++] = 0x80 | (c & 63);
      } else {
        b[n++] = 0xe0 | (c >> 12);
        b[n++] = 0x80 | ((c >> 6) & 63);
        b[n++] = 0x80 | (c & 63);
      }
    }
    return n;
  }

  private grow(n: number): void {
    const cap = Math.max(n, this.symId.length * 2);
    this.symId = new Int32Array(cap);
    this.symLen = new Int32Array(cap);
    this.symPrev = new Int32Array(cap);
    this.symNext = new Int32Array(cap);
  }
}

/** Min-heap of candidate merges ordered by (rank, left); the popped entry is left in top*. */
class BigramHeap {
  private rank = new Int32Array(64);
  private left = new Int32Array(64);
  private right = new Int32Array(64);
  private sz = new Int32Array(64);
  size = 0;
  topRank = 0;
  topLeft = 0;
  topRight = 0;
  topSize = 0;

  clear(): void {
    this.size = 0;
  }

  private less(i: number, j: number): boolean {
    const a = this.rank[i];
    const b = this.rank[j];
    return a < b || (a === b && this.left[i] < this.left[j]);
  }

  private swap(i: number, j: number): void {
    let t = this.rank[i]; this.rank[i] = this.rank[j]; this.rank[j] = t;
    t = this.left[i]; this.left[i] = this.left[j]; this.left[j] = t;
    t = this.right[i]; this.right[i] = this.right[j]; this.right[j] = t;
    t = this.sz[i]; this.sz[i] = this.sz[j]; this.sz[j] = t;
  }

  push(rank: number, left: number, right: number, size: number): void {
    if (this.size === this.rank.length) {
      const g = (a: Int32Array) => {
        const b = new Int32Array(a.length * 2);
        b.set(a);
        return b;
      };
      this.rank = g(this.rank);
      this.left = g(this.left);
      this.right = g(this.right);
      this.sz = g(this.sz);
    }
    let i = this.size++;
    this.rank[i] = rank;
    this.left[i] = left;
    this.right[i] = right;
    this.sz[i] = size;
    while (i > 0) {
      const p = (i - 1) >> 1;
      if (!this.less(i, p)) break;
      this.swap(i, p);
      i = p;
    }
  }

  pop(): void {
    this.topRank = this.rank[0];
    this.topLeft = this.left[0];
    this.topRight = this.right[0];
    this.topSize = this.sz[0];
    const last = --this.size;
    if (last > 0) {
      this.rank[0] = this.rank[last];
      this.left[0] = this.left[last];
      this.right[0] = this.right[last];
      this.sz[0] = this.sz[last];
      let i = 0;
      for (;;) {
        const l = 2 * i + 1;
        if (l >= last) break;
        const r = l + 1;
        const m = r < last && this.less(r, l) ? r : l;
        if (!this.less(m, i)) break;
        this.swap(m, i);
        i = m;
      }
    }
  }
}
