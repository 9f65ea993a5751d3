// Finding special tokens in text before tokenizing it, as llama.cpp's tokenizer_st_partition does:
// special tokens are taken longest text first; for each, every left-to-right, non-overlapping
// occurrence inside text not yet claimed becomes that token. (So a longer token wins over a shorter
// one even where the shorter one starts earlier.) Control and unknown tokens count only when
// parseSpecial is on; user-defined tokens always do. LStrip/RStrip attributes eat ASCII white space
// next to the token.
//
// Rather than searching the whole text once per special token (hundreds of them), we find every
// occurrence of every special token in one pass (candidates start at a character some token starts
// with), then replay llama.cpp's order over just those occurrences.

import { Attr, type Vocab } from './vocab.js';

/** A fragment: raw text [start, end) when token < 0, else one special token. */
export interface Fragment {
  token: number;
  start: number;
  end: number;
}

function isSpaceAscii(c: number): boolean {
  return c === 0x20 || (c >= 0x09 && c <= 0x0d);
}

export class SpecialMatcher {
  /** Special tokens by the first two UTF-16 units of their text (one-unit texts: by that unit). */
  private byPrefix = new Map<number, number[]>();
  private single = new Map<number, number[]>();
  /** 1 for UTF-16 units some special token starts with: the scan skips every other unit at once. */
  private first = new Uint8Array(65536);
  private rank = new Map<number, number>();
  private hasAny: boolean[] = [false, false];

  constructor(private readonly vocab: Vocab) {
    vocab.specialTokens.forEach((id, r) => {
      const t = vocab.texts[id];
      this.rank.set(id, r);
      this.first[t.charCodeAt(0)] = 1;
      const map = t.length === 1 ? this.single : this.byPrefix;
      const key = t.length === 1 ? t.charCodeAt(0) : t.charCodeAt(0) * 65536 + t.charCodeAt(1);
      let list = map.get(key);
      if (!list) map.set(key, (list = []));
      list.push(id);
      if (vocab.attrs[id] & (Attr.Control | Attr.Unknown)) this.hasAny[1] = true;
      else this.hasAny[0] = this.hasAny[1] = true;
    });
  }

  /** Splits text into raw fragments and special tokens. */
  partition(text: string, parseSpecial: boolean): Fragment[] {
    const whole: Fragment[] = text.length ? [{ token: -1, start: 0, end: text.length }] : [];
    if (!text.length || !this.hasAny[parseSpecial ? 1 : 0]) return whole;
    const { vocab } = this;
    // every occurrence of every eligible special token: [rank, start]
    const occ: number[] = [];
    const hasSingle = this.single.size > 0;
    const first = this.first;
    for (let i = 0; i < text.length; i++) {
      const c = text.charCodeAt(i);
      if (first[c] === 0) continue;
      const list = i + 1 < text.length ? this.byPrefix.get(c * 65536 + text.charCodeAt(i + 1)) : undefined;
      const list1 = hasSingle ? this.single.get(c) : undefined;
      if (!list && !list1) continue;
      for (const l of [list, list1]) {
        if (!l) continue;
        for (const id of l) {
          if (!parseSpecial && vocab.attrs[id] & (Attr.Control | Attr.Unknown)) continue;
          if (text.startsWith(vocab.texts[id], i)) occ.push(this.rank.get(id)!, i);
        }
      }
    }
    if (!occ.length) return whole;
    const order: number[] = [];
    for (let k = 0; k < occ.length; k += 2) order.push(k);
    order.sort((a, b) => occ[a] - occ[b] || occ[a + 1] - occ[b + 1]);

    // claimed intervals, kept sorted by start
    const claimed: Fragment[] = [];
    const overlaps = (s: number, e: number): boolean => {
      let lo = 0;
      let hi = claimed.length;
      while (lo < hi) {
        const mid = (lo + hi) >> 1;
        if (claimed[mid].end <= s) lo = mid + 1;
        else hi = mid;
      }
      return lo < claimed.length && claimed[lo].start < e;
    };
    let curRank = -1;
    let lastEnd = 0;
    for (const k of order) {
      const r = occ[k];
      const s = occ[k + 1];
      if (r !== curRank) {
        curRank = r;
        lastEnd = 0;
      }
      const id = vocab.specialTokens[r];
      const e = s + vocab.texts[id].length;
      if (s < lastEnd || overlaps(s, e)) continue;
      lastEnd = e;
      let lo = 0;
      while (lo < claimed.length && claimed[lo].start < s) lo++;
      claimed.splice(lo, 0, { token: id, start: s, end: e });
    }

    // raw text between claimed tokens, with LStrip/RStrip applied to its ends
    const out: Fragment[] = [];
    let pos = 0;
    for (let i = 0; i < claimed.length; i++) {
      const c = claimed[i];
      let end = c.start;
      if (vocab.attrs[c.token] & Attr.LStrip) while (end > pos && isSpaceAscii(text.charCodeAt(end - 1))) end--;
      if (end > pos) out.push({ token: -1, start: pos, end });
      out.push(c);
      pos = c.end;
      if (vocab.attrs[c.token] & Attr.RStrip) {
        const limit = i + 1 < claimed.length ? claimed[i + 1].start : text.length;
        while (pos < limit && isSpaceAscii(text.charCodeAt(pos))) pos++;
      }
    }
    if (pos < text.length) out.push({ token: -1, start: pos, end: text.length });
    return out;
  }
}
