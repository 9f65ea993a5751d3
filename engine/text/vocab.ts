// The vocabulary of a GGUF model as llama.cpp loads it (src/llama-vocab.cpp, llama_vocab::impl::load):
// token texts and attributes, scores, special-token ids with llama.cpp's defaults and overrides, the
// end-of-generation set, the tokenizer flags, and the list of special tokens that are matched in
// text before tokenizing. Our behaviour follows that code; the comments say where it is unusual.

import type { GGUFArray, GGUFScalar } from '../gguf/reader.js';
import { UserError } from '../errors.js';

/** Token attributes (llama.h, enum llama_token_attr). */
export const enum Attr {
  Undefined = 0,
  Unknown = 1 << 0,
  Unused = 1 << 1,
  Normal = 1 << 2,
  Control = 1 << 3,
  UserDefined = 1 << 4,
  Byte = 1 << 5,
  Normalized = 1 << 6,
  LStrip = 1 << 7,
  RStrip = 1 << 8,
  SingleWord = 1 << 9,
}

/** Where metadata comes from: a GGUFFile, or a plain list of keys (tests, synthetic models). */
export interface MetadataSource {
  /** Names the model in error messages (its file path). */
  readonly path: string;
  get(key: string): GGUFScalar | GGUFArray | undefined;
}

export type VocabType = 'bpe' | 'spm';
export type PreTokenizerType = 'llama3' | 'qwen2' | 'gpt2' | 'default';

const NULL = -1;

// Texts llama.cpp treats as end of generation (and forces to control type), src/llama-vocab.cpp.
const EOG_TEXTS = new Set([
  '<|eot_id|>', '<|im_end|>', '<|end|>', '<|return|>', '<|call|>', '<|flush|>', '<|calls|>', '<end_of_turn>',
  '<|endoftext|>', '</s>', '<|eom_id|>', '<EOT>', '_<EOT>', '[EOT]', '[EOS]', '<|end_of_text|>',
  '<end_of_utterance>', '<eos>', '<turn|>', '<|tool_response>', '<｜end▁of▁sentence｜>', '[e~[',
]);
const EOT_TEXTS = ['<|eot_id|>', '<|im_end|>', '<|end|>', '<end_of_turn>', '<|endoftext|>', '<|end_of_text|>', '<EOT>', '_<EOT>', '[EOT]', '<｜end▁of▁sentence｜>', '<end_of_utterance>'];
const EOM_TEXTS = ['<|eom_id|>'];
const FIM_PRE_TEXTS = ['<|fim_prefix|>', '<fim-prefix>', '<fim_prefix>', '<｜fim▁begin｜>', '<PRE>', '▁<PRE>', '<|code_prefix|>', '<|prefix|>'];
const FIM_SUF_TEXTS = ['<|fim_suffix|>', '<fim-suffix>', '<fim_suffix>', '<｜fim▁hole｜>', '<SUF>', '▁<SUF>', '<|code_suffix|>', '<|suffix|>'];
const FIM_MID_TEXTS = ['<|fim_middle|>', '<fim-middle>', '<fim_middle>', '<｜fim▁end｜>', '<MID>', '▁<MID>', '<|code_middle|>', '<|middle|>'];
const FIM_PAD_TEXTS = ['<|fim_pad|>', '<fim-pad>', '<fim_pad>', '<PAD>', '[PAD]'];
const FIM_REP_TEXTS = ['<|fim_repo|>', '<|repo_name|>', '<fim-repo>', '<REPO>', '<reponame>'];
const FIM_SEP_TEXTS = ['<|file_sep|>'];

// Pre-tokenizer names llama.cpp maps to the splitters we implement, with their flags.
const PRE_LLAMA3 = ['llama3', 'llama-v3', 'llama-bpe', 'falcon3', 'falcon-h1', 'pixtral', 'midm-2.0', 'lfm2', 'jina-v5-nano'];
const PRE_QWEN2 = ['qwen2', 'deepseek-r1-qwen', 'kormo', 'f2llmv2'];
const PRE_GPT2 = ['gpt-2', 'phi-2', 'jina-es', 'jina-de', 'gigachat', 'jina-v2-es', 'jina-v2-de', 'a.x-4.0', 'mellum', 'modern-bert'];

export class Vocab {
  type: VocabType = 'spm';
  pre: PreTokenizerType = 'llama3';
  model = '';
  preName = '';
  texts: string[] = [];
  attrs = new Uint16Array(0);
  scores = new Float32Array(0);
  /** Text to id; like llama.cpp's token_to_id, a later duplicate wins. */
  textToId = new Map<string, number>();
  merges: string[] = [];

  bos = NULL;
  eos = NULL;
  eot = NULL;
  eom = NULL;
  unk = NULL;
  sep = NULL;
  pad = NULL;
  mask = NULL;
  fimPre = NULL;
  fimSuf = NULL;
  fimMid = NULL;
  fimPad = NULL;
  fimRep = NULL;
  fimSep = NULL;
  linefeed = NULL;

  addSpacePrefix = false;
  addBos = false;
  addEos = false;
  ignoreMerges = false;
  cleanSpaces = false;
  eog = new Set<number>();
  /** Control, user-defined and unknown tokens, longest text first: matched in text before tokenizing. */
  specialTokens: number[] = [];

  get size(): number {
    return this.texts.length;
  }

  static load(md: MetadataSource): Vocab {
    const v = new Vocab();
    v.loadFrom(md);
    return v;
  }

  private loadFrom(md: MetadataSource): void {
    const fail = (problem: string): never => {
      throw new UserError(`${md.path}: ${problem}`);
    };
    const str = (k: string): string | undefined => {
      const x = md.get(k);
      if (x === undefined) return undefined;
      if (typeof x !== 'string') fail(`metadata "${k}" should be a string`);
      return x as string;
    };
    const num = (k: string): number | undefined => {
      const x = md.get(k);
      if (x === undefined) return undefined;
      if (typeof x === 'bigint') return Number(x);
      if (typeof x !== 'number') fail(`metadata "${k}" should be a number`);
      return x as number;
    };
    const bool = (k: string): boolean | undefined => {
      const x = md.get(k);
      if (x === undefined) return undefined;
      if (typeof x === 'boolean') return x;
      if (typeof x === 'number') return x !== 0;
      return fail(`metadata "${k}" should be a bool`);
    };
    const arr = (k: string): GGUFArray | undefined => {
      const x = md.get(k);
      if (x === undefined) return undefined;
      if (typeof x !== 'object') fail(`metadata "${k}" should be an array`);
      return x as GGUFArray;
    };

    const model = str('tokenizer.ggml.model');
    if (model === undefined) fail('has no tokenizer (metadata "tokenizer.ggml.model" is missing)');
    this.model = model!;
    this.preName = str('tokenizer.ggml.pre') ?? '';
    if (model === 'llama') {
      this.type = 'spm';
      this.bos = 1;
      this.eos = 2;
      this.unk = 0;
      this.addSpacePrefix = true;
      this.addBos = true;
    } else if (model === 'gpt2') {
      this.type = 'bpe';
      const m = arr('tokenizer.ggml.merges');
      if (!m) fail('is a BPE ("gpt2") tokenizer without merges (metadata "tokenizer.ggml.merges" is missing)');
      this.merges = m!.items as string[];
      this.bos = 11;
      this.eos = 11;
      this.cleanSpaces = true;
      const pre = this.preName;
      if (PRE_LLAMA3.includes(pre)) {
        this.pre = 'llama3';
        this.ignoreMerges = true;
        this.addBos = true;
      } else if (PRE_QWEN2.includes(pre)) {
        this.pre = 'qwen2';
        this.cleanSpaces = false;
      } else if (PRE_GPT2.includes(pre)) {
        this.pre = 'gpt2';
      } else if (pre === '' || pre === 'default' || pre === 'stablelm2') {
        // no pre-tokenizer named (older conversions): llama.cpp's default regexes
        this.pre = 'default';
        if (pre === 'stablelm2') this.cleanSpaces = false;
      } else {
        fail(`uses the pre-tokenizer "${pre || 'default'}", which repokv does not support yet (supported: ${[...PRE_LLAMA3, ...PRE_QWEN2, ...PRE_GPT2, 'default', 'stablelm2'].join(', ')})`);
      }
    } else {
      fail(`uses the tokenizer model "${model}", which repokv does not support (supported: gpt2, llama)`);
    }
    this.addSpacePrefix = bool('tokenizer.ggml.add_space_prefix') ?? this.addSpacePrefix;

    const tokens = arr('tokenizer.ggml.tokens');
    if (!tokens) fail('has no vocabulary (metadata "tokenizer.ggml.tokens" is missing)');
    const n = tokens!.items.length;
    const scoreArr = arr('tokenizer.ggml.scores');
    if (scoreArr && scoreArr.items.length < n) fail(`has ${scoreArr.items.length} token scores for ${n} tokens`);
    const typeArr = arr('tokenizer.ggml.token_type');
    if (typeArr && typeArr.items.length < n) fail(`has ${typeArr.items.length} token types for ${n} tokens`);
    this.texts = new Array(n);
    this.attrs = new Uint16Array(n);
    this.scores = new Float32Array(n);
    for (let i = 0; i < n; i++) {
      let t = tokens!.items[i] as string;
      if (t === '') t = `[EMPTY_${i}]`;
      this.texts[i] = t;
      this.textToId.set(t, i);
      if (scoreArr) this.scores[i] = Number(scoreArr.items[i]);
      let a = Attr.Normal;
      if (typeArr) {
        switch (Number(typeArr.items[i])) {
          case 1: a = Attr.Normal; break;
          case 2: a = Attr.Unknown; break;
          case 3: a = Attr.Control; break;
          case 4: a = Attr.UserDefined; break;
          case 5: a = Attr.Unused; break;
          case 6: a = Attr.Byte; break;
          default: a = Attr.Undefined;
        }
      }
      this.attrs[i] = a;
    }
    if (this.textToId.size !== n) fail('has duplicate token texts in its vocabulary');

    // special token ids: defaults above, disabled when out of range, then the file's values
    const ids: [string, 'bos' | 'eos' | 'eot' | 'eom' | 'unk' | 'sep' | 'pad' | 'mask' | 'fimPre' | 'fimSuf' | 'fimMid' | 'fimPad' | 'fimRep' | 'fimSep'][] = [
      ['bos_token_id', 'bos'], ['eos_token_id', 'eos'], ['eot_token_id', 'eot'], ['eom_token_id', 'eom'],
      ['unknown_token_id', 'unk'], ['seperator_token_id', 'sep'], ['padding_token_id', 'pad'], ['mask_token_id', 'mask'],
      ['fim_pre_token_id', 'fimPre'], ['fim_suf_token_id', 'fimSuf'], ['fim_mid_token_id', 'fimMid'],
      ['fim_pad_token_id', 'fimPad'], ['fim_rep_token_id', 'fimRep'], ['fim_sep_token_id', 'fimSep'],
      ['prefix_token_id', 'fimPre'], ['suffix_token_id', 'fimSuf'], ['middle_token_id', 'fimMid'],
    ];
    for (const [key, field] of ids) {
      if (this[field] >= n) this[field] = NULL;
      const x = num(`tokenizer.ggml.${key}`);
      if (x !== undefined && x >= 0 && x < n) this[field] = x;
    }
    this.addBos = bool('tokenizer.ggml.add_bos_token') ?? this.addBos;
    this.addEos = bool('tokenizer.ggml.add_eos_token') ?? this.addEos;

    // tokens found by their text when the file does not name them (these become control tokens)
    const byText = (field: 'eot' | 'eom' | 'fimPre' | 'fimSuf' | 'fimMid' | 'fimPad' | 'fimRep' | 'fimSep', texts: string[]): void => {
      if (this[field] !== NULL) return;
      // llama.cpp takes the first match in hash-map order; we take the first in its list order
      for (const t of texts) {
        const id = this.textToId.get(t);
        if (id !== undefined) {
          this[field] = id;
          this.attrs[id] |= Attr.Control;
          return;
        }
      }
    };
    byText('eot', EOT_TEXTS);
    byText('eom', EOM_TEXTS);
    byText('fimPre', FIM_PRE_TEXTS);
    byText('fimSuf', FIM_SUF_TEXTS);
    byText('fimMid', FIM_MID_TEXTS);
    byText('fimPad', FIM_PAD_TEXTS);
    byText('fimRep', FIM_REP_TEXTS);
    byText('fimSep', FIM_SEP_TEXTS);

    for (let i = 0; i < n; i++) if (this.attrs[i] & Attr.Control && this.texts[i].includes('unused')) this.attrs[i] |= Attr.Unused;

    for (const id of [this.fimPad, this.fimRep, this.fimSep]) if (id !== NULL) this.eog.add(id);
    for (let i = 0; i < n; i++) {
      if (EOG_TEXTS.has(this.texts[i])) {
        this.eog.add(i);
        this.attrs[i] |= Attr.Control;
      }
    }
    for (let i = 0; i < n; i++) {
      const t = this.texts[i];
      if (t === '<|channel|>' || t === '<|message|>' || t === '<|start|>' || t === '<|constrain|>') this.attrs[i] = Attr.UserDefined;
    }
    for (const id of [this.eos, this.eot, this.eom]) if (id !== NULL) this.eog.add(id);
    // gpt-oss / solar-open: "<|end|>" ends a message, not the generation, when <|return|>/<|call|> exist
    {
      const has = (t: string) => [...this.eog].some((id) => this.texts[id] === t);
      const end = [...this.eog].find((id) => this.texts[id] === '<|end|>');
      if (end !== undefined && ((has('<|return|>') && (has('<|call|>') || has('<|calls|>'))) || ((has('<|call|>') || has('<|calls|>')) && has('<|flush|>')))) {
        this.eog.delete(end);
        this.attrs[end] = Attr.UserDefined;
      }
      const s = [...this.eog].find((id) => this.texts[id] === '</s>');
      if (s !== undefined && has('<|tool_response>')) {
        this.eog.delete(s);
        this.attrs[s] = Attr.Normal;
      }
    }

    const special: number[] = [];
    for (let i = 0; i < n; i++) if (this.attrs[i] & (Attr.Control | Attr.UserDefined | Attr.Unknown)) special.push(i);
    // llama.cpp sorts by byte length, longest first (std::sort; ties in no set order: we keep id order)
    const blen = special.map((id) => Buffer.byteLength(this.texts[id]));
    const order = special.map((_, i) => i).sort((a, b) => blen[b] - blen[a] || special[a] - special[b]);
    this.specialTokens = order.map((i) => special[i]);

    // per-model attributes llama.cpp sets by name: Phi-3 strips spaces to the right of special tokens
    const name = (str('general.name') ?? '').toLowerCase();
    if (name.includes('phi-3') || name.includes('phi3')) {
      for (const id of this.specialTokens) this.attrs[id] |= Attr.RStrip;
      const set = (t: string, on: boolean) => {
        const id = this.textToId.get(t);
        if (id === undefined) fail(`has no token "${t}"`);
        if (on) this.attrs[id!] |= Attr.RStrip;
        else this.attrs[id!] &= ~Attr.RStrip;
      };
      set('</s>', true);
      for (const t of ['<unk>', '<s>', '<|endoftext|>']) set(t, false);
    }
  }
}
