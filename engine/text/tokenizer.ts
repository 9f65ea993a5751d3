// The tokenizer of a GGUF model: text to token ids and back, exactly as llama.cpp does it for the same
// file (src/llama-vocab.cpp: tokenize, token_to_piece, detokenize). Supports byte-level BPE ("gpt2")
// with the llama3 / qwen2 / gpt-2 / default pre-tokenizers, and SentencePiece ("llama") with byte fallback.
//
//   const tok = Tokenizer.fromGGUF(GGUFFile.open(path, { metadataOnly: true }));
//   const ids = tok.encode(text, { addSpecial: true, parseSpecial: false });
//   const back = tok.decode(ids);

import type { GGUFArray, GGUFFile, GGUFMetaValue, GGUFScalar } from '../gguf/reader.js';
import { BPEModel } from './bpe.js';
import { IntList } from './intlist.js';
import { preTokenize, WordEnds } from './pretokenize.js';
import { SpecialMatcher } from './special.js';
import { SPMModel } from './spm.js';
import { CP_TO_BYTE } from './unicode.js';
import { Attr, Vocab, type MetadataSource } from './vocab.js';

export interface EncodeOptions {
  /** Add the model's BOS/EOS tokens where its metadata says to (default true). */
  addSpecial?: boolean;
  /** Turn the text of control tokens (e.g. "<|eot_id|>") into those tokens (default false). */
  parseSpecial?: boolean;
}

export interface DecodeOptions {
  /** Render control and unknown tokens as their text (default false: they render as nothing). */
  special?: boolean;
  /** Drop a leading BOS and trailing EOS the model adds itself (default false). */
  removeSpecial?: boolean;
}

const utf8Decoder = new TextDecoder('utf-8', { ignoreBOM: true }); // a leading U+FEFF is text too
const utf8Encoder = new TextEncoder();

export class Tokenizer {
  readonly vocab: Vocab;
  private readonly specials: SpecialMatcher;
  private readonly bpe: BPEModel | null;
  private readonly spm: SPMModel | null;
  private readonly pieces: Uint8Array[];
  private readonly words = new WordEnds();
  private readonly out = new IntList(4096);

  private constructor(vocab: Vocab) {
    this.vocab = vocab;
    this.specials = new SpecialMatcher(vocab);
    this.bpe = vocab.type === 'bpe' ? new BPEModel(vocab) : null;
    this.spm = vocab.type === 'spm' ? new SPMModel(vocab) : null;
    this.pieces = vocab.texts.map((_, id) => this.computePiece(id));
  }

  /** The tokenizer of a GGUF file (opened with or without its tensor table). */
  static fromGGUF(file: GGUFFile): Tokenizer {
    return new Tokenizer(Vocab.load(file));
  }

  /** The tokenizer described by metadata entries (as syntheticTokenizerMetadata returns them). */
  static fromMetadata(entries: Iterable<[string, GGUFMetaValue]>, name = '<metadata>'): Tokenizer {
    const m = new Map<string, GGUFScalar | GGUFArray>();
    for (const [k, v] of entries) m.set(k, v.value);
    const src: MetadataSource = { path: name, get: (k) => m.get(k) };
    return new Tokenizer(Vocab.load(src));
  }

  get vocabSize(): number {
    return this.vocab.size;
  }
  /** Special token ids, -1 when the model has none. */
  get bos(): number {
    return this.vocab.bos;
  }
  get eos(): number {
    return this.vocab.eos;
  }
  get eot(): number {
    return this.vocab.eot;
  }
  get pad(): number {
    return this.vocab.pad;
  }
  get unk(): number {
    return this.vocab.unk;
  }
  get addBos(): boolean {
    return this.vocab.addBos;
  }

  /** True for tokens that end a generation (EOS, EOT, EOM and the family's other end tokens). */
  isEndOfGeneration(id: number): boolean {
    return this.vocab.eog.has(id);
  }
  isControl(id: number): boolean {
    return (this.vocab.attrs[id] & Attr.Control) !== 0;
  }
  /** The token's text as stored in the vocabulary (byte-level or ▁ spelling, not decoded). */
  tokenText(id: number): string {
    this.check(id);
    return this.vocab.texts[id];
  }
  /** The id of a token by its vocabulary text, or undefined. */
  tokenId(text: string): number | undefined {
    return this.vocab.textToId.get(text);
  }

  /** Forgets cached word results (benchmarks; memory). */
  clearCache(): void {
    this.bpe?.clearCache();
    this.spm?.clearCache();
  }

  encode(text: string, opts: EncodeOptions = {}): Int32Array {
    const addSpecial = opts.addSpecial ?? true;
    const parseSpecial = opts.parseSpecial ?? false;
    text = wellFormed(text); // lone surrogates become U+FFFD, as they do on the way to UTF-8
    const v = this.vocab;
    const out = this.out;
    out.length = 0;
    if (addSpecial && v.addBos) out.push(v.bos);
    const frags = this.specials.partition(text, parseSpecial);
    if (this.bpe) {
      const words = this.words;
      for (const f of frags) {
        if (f.token >= 0) {
          out.push(f.token);
          continue;
        }
        words.reset();
        preTokenize(v.pre, text, f.start, f.end, words);
        let prev = f.start;
        const ends = words.ends;
        for (let i = 0; i < words.length; i++) {
          const e = ends[i];
          this.bpe.encodeWord(text, prev, e, out);
          prev = e;
        }
      }
    } else {
      let prevSpecial = true; // the first fragment gets the space prefix too
      for (const f of frags) {
        if (f.token >= 0) {
          out.push(f.token);
          prevSpecial = true;
          continue;
        }
        const raw = text.slice(f.start, f.end);
        this.spm!.encode(v.addSpacePrefix && prevSpecial ? ' ' + raw : raw, out);
        prevSpecial = false;
      }
    }
    if (addSpecial && v.addEos) out.push(v.eos);
    return out.toInt32Array();
  }

  /** The bytes a token stands for (llama.cpp's token_to_piece). */
  tokenBytes(id: number, special = false): Uint8Array {
    this.check(id);
    if (!special && this.vocab.attrs[id] & (Attr.Unknown | Attr.Control)) return EMPTY;
    return this.pieces[id];
  }

  /** Token ids to text (llama.cpp's detokenize, without removing special tokens unless asked). */
  decode(ids: ArrayLike<number>, opts: DecodeOptions = {}): string {
    const v = this.vocab;
    let start = 0;
    let end = ids.length;
    let removeSpace = v.addSpacePrefix;
    if (opts.removeSpecial && v.addBos && end > 0 && ids[0] === v.bos) {
      removeSpace = false;
      start = 1;
    }
    if (opts.removeSpecial && v.addEos && end > start && ids[end - 1] === v.eos) end--;
    let total = 0;
    for (let i = start; i < end; i++) total += this.tokenBytes(ids[i], opts.special).length;
    let buf: Uint8Array = new Uint8Array(total);
    let n = 0;
    for (let i = start; i < end; i++) {
      let p = this.tokenBytes(ids[i], opts.special);
      if (removeSpace && p.length && p[0] === 0x20) p = p.subarray(1);
      removeSpace = false;
      buf.set(p, n);
      n += p.length;
    }
    buf = buf.subarray(0, n);
    if (v.cleanSpaces) buf = cleanSpaces(buf);
    return utf8Decoder.decode(buf);
  }

  /**
   * A decoder for streamed tokens that only ever emits whole UTF-8 characters. Generated tokens
   * continue a prompt, so by default nothing is stripped (llama.cpp's token_to_piece); with
   * stripLeadingSpace the first token loses the space an SPM vocabulary puts before a text's start,
   * as decode() does.
   */
  streamDecoder(opts: { special?: boolean; stripLeadingSpace?: boolean } = {}): StreamDecoder {
    return new StreamDecoder(this, opts.special ?? false, opts.stripLeadingSpace ?? false);
  }

  private check(id: number): void {
    if (!Number.isInteger(id) || id < 0 || id >= this.vocab.size) throw new RangeError(`token id ${id} is outside the vocabulary (0..${this.vocab.size - 1})`);
  }

  private computePiece(id: number): Uint8Array {
    const v = this.vocab;
    const a = v.attrs[id];
    const text = v.texts[id];
    if (a & (Attr.Unknown | Attr.Control | Attr.UserDefined)) return utf8Encoder.encode(text);
    if (a & Attr.Normal) {
      if (v.type === 'spm') return utf8Encoder.encode(text.replaceAll('\u2581', ' '));
      return byteLevelDecode(text);
    }
    if (a & Attr.Byte) return Uint8Array.of(parseInt(text.slice(3, 5), 16) & 0xff);
    return EMPTY;
  }
}

const EMPTY = new Uint8Array(0);

/** String.prototype.toWellFormed (Node 20; TypeScript's ES2022 lib does not declare it). */
function wellFormed(s: string): string {
  const w = s as unknown as { isWellFormed(): boolean; toWellFormed(): string };
  return w.isWellFormed() ? s : w.toWellFormed();
}

/** Byte-level spelling back to bytes; a code point outside the alphabet becomes llama.cpp's marker. */
function byteLevelDecode(text: string): Uint8Array {
  const out: number[] = [];
  for (const ch of text) {
    const cp = ch.codePointAt(0)!;
    const b = cp < CP_TO_BYTE.length ? CP_TO_BYTE[cp] : -1;
    if (b >= 0) out.push(b);
    else {
      const hex = [...utf8Encoder.encode(ch)].map((x) => x.toString(16).padStart(2, '0')).join('');
      out.push(...utf8Encoder.encode(`[UNK_BYTE_0x${hex}${text}]`));
    }
  }
  return Uint8Array.from(out);
}

/**
 * llama.cpp's clean_up_tokenization_spaces for BPE vocabularies: removes the space before ? ! . ,
 * around a lone ' and before 's 'm 're 've. Three passes over the bytes, as llama.cpp makes them.
 */
export function cleanSpaces(t: Uint8Array): Uint8Array {
  t = t.slice();
  let total = t.length;
  // pass 1: " ?", " !", " .", " ,"
  {
    const n = total;
    total = n ? 1 : 0;
    for (let i = 1; i < n; i++) {
      const x = t[i];
      if (t[i - 1] === 0x20 && (x === 0x3f || x === 0x21 || x === 0x2e || x === 0x2c)) total--;
      t[total++] = x;
    }
  }
  // pass 2: " ' " -> "'"
  {
    const n = total;
    total = n ? 1 : 0;
    for (let i = 1; i < n; i++) {
      const x = t[i];
      if (x === 0x27 && i + 1 < n && t[i - 1] === 0x20 && t[i + 1] === 0x20) {
        total--;
        t[++i] = 0;
      }
      t[total++] = x;
    }
  }
  // pass 3: " 's", " 'm", " 're", " 've"
  {
    const n = total;
    total = n ? 1 : 0;
    for (let i = 1; i < n; i++) {
      const x = t[i];
      if (t[i - 1] === 0x20 && x === 0x27 && i + 1 < n) {
        const x1 = t[i + 1];
        if (x1 === 0x73 || x1 === 0x6d) total--;
        else if (x1 !== 0x74 && x1 !== 0x64 && i + 2 < n) {
          const x2 = t[i + 2];
          if ((x1 === 0x72 && x2 === 0x65) || (x1 === 0x76 && x2 === 0x65)) total--;
        }
      }
      t[total++] = x;
    }
  }
  return t.subarray(0, total);
}

/**
 * Streams token ids to text: each push returns the text that is now complete. A character split across
 * tokens is held until its last byte arrives. Like llama.cpp's streaming (token_to_piece per token),
 * this does not apply the clean-up of spaces that decode() applies for some BPE vocabularies.
 */
export class StreamDecoder {
  private pending = new Uint8Array(0);
  private first: boolean;

  constructor(
    private readonly tok: Tokenizer,
    private readonly special: boolean,
    stripLeadingSpace: boolean,
  ) {
    this.first = stripLeadingSpace;
  }

  push(id: number): string {
    let p = this.tok.tokenBytes(id, this.special);
    if (this.first) {
      this.first = false;
      if (this.tok.vocab.addSpacePrefix && p.length && p[0] === 0x20) p = p.subarray(1);
    }
    if (!p.length) return '';
    const buf = new Uint8Array(this.pending.length + p.length);
    buf.set(this.pending);
    buf.set(p, this.pending.length);
    const cut = completeUtf8Prefix(buf);
    this.pending = buf.slice(cut);
    return cut ? utf8Decoder.decode(buf.subarray(0, cut)) : '';
  }

  /** Whatever is held back (an incomplete character renders as U+FFFD). */
  flush(): string {
    const p = this.pending;
    this.pending = new Uint8Array(0);
    return p.length ? utf8Decoder.decode(p) : '';
  }
}

/** Length of the longest prefix of buf that does not end inside a UTF-8 sequence that may still complete. */
function completeUtf8Prefix(buf: Uint8Array): number {
  const n = buf.length;
  // look back at most 3 bytes for the lead byte of a sequence still waiting for continuation bytes
  for (let k = 1; k <= 3 && k <= n; k++) {
    const b = buf[n - k];
    if ((b & 0xc0) === 0x80) continue; // continuation byte: keep looking for the lead
    const need = b >= 0xf0 && b <= 0xf4 ? 4 : b >= 0xe0 ? 3 : b >= 0xc2 && b < 0xe0 ? 2 : 1;
    return need > k ? n - k : n;
  }
  return n;
}
