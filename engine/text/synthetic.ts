// Tokenizer metadata for synthetic test models: small vocabularies shaped like three real families,
// with every tokenizer.* key llama.cpp reads, so a synthetic GGUF tokenizes (in llama.cpp and here)
// the way a real Llama 3, Qwen2.5 or Llama 2 file does, at a size tests can afford.
//
//   'llama-bpe'  byte-level BPE, pre-tokenizer llama-bpe, Llama 3.1's 256 special tokens, Llama 3 template
//   'qwen2'      byte-level BPE, pre-tokenizer qwen2, Qwen2.5's 22 added tokens, Qwen2.5 ChatML template
//   'spm'        SentencePiece (llama): <unk> <s> </s>, byte fallback <0x00>..<0xFF>, ▁ pieces, Llama 2 template
//
// The merges and pieces are committed assets (assets/vocab-*.json) trained by gen-assets.ts on
// corpus.ts TRAIN_FILES; building the metadata only reads them, so the same kind always gives the same
// keys and values (and a writer given the same keys writes the same bytes).

import { GGUFValueType } from '../gguf/types.js';
import type { GGUFMetaValue } from '../gguf/reader.js';
import { meta } from '../gguf/writer.js';
import { BYTE_TO_CP, byteLevelOrder } from './unicode.js';
import { LLAMA2_CHAT_TEMPLATE, LLAMA3_CHAT_TEMPLATE, QWEN25_CHAT_TEMPLATE } from './templates.js';
import llamaBpeVocab from './assets/vocab-llama-bpe.json' with { type: 'json' };
import qwen2Vocab from './assets/vocab-qwen2.json' with { type: 'json' };
import spmVocab from './assets/vocab-spm.json' with { type: 'json' };

export type SyntheticTokenizerKind = 'llama-bpe' | 'qwen2' | 'spm';
export const SYNTHETIC_TOKENIZER_KINDS: readonly SyntheticTokenizerKind[] = ['llama-bpe', 'qwen2', 'spm'];

/** llama.cpp's token types (enum llama_token_type). */
export const enum TokenType {
  Undefined = 0,
  Normal = 1,
  Unknown = 2,
  Control = 3,
  UserDefined = 4,
  Unused = 5,
  Byte = 6,
}

interface VocabSpec {
  tokens: string[];
  types: number[];
  scores?: number[];
  merges?: string[];
  ids: Record<string, number>;
}

/** Llama 3.1's special tokens, in their order after the normal vocabulary (128000 + i there). */
function llama3Specials(): string[] {
  const s = [
    '<|begin_of_text|>',
    '<|end_of_text|>',
    '<|reserved_special_token_0|>',
    '<|reserved_special_token_1|>',
    '<|finetune_right_pad_id|>',
    '<|reserved_special_token_2|>',
    '<|start_header_id|>',
    '<|end_header_id|>',
    '<|eom_id|>',
    '<|eot_id|>',
    '<|python_tag|>',
  ];
  for (let i = 3; s.length < 256; i++) s.push(`<|reserved_special_token_${i}|>`);
  return s;
}

/** Qwen2.5's added tokens (151643 + i there); <tool_call> and </tool_call> are not special. */
const QWEN_SPECIALS: [string, TokenType][] = [
  ['<|endoftext|>', TokenType.Control],
  ['<|im_start|>', TokenType.Control],
  ['<|im_end|>', TokenType.Control],
  ['<|object_ref_start|>', TokenType.Control],
  ['<|object_ref_end|>', TokenType.Control],
  ['<|box_start|>', TokenType.Control],
  ['<|box_end|>', TokenType.Control],
  ['<|quad_start|>', TokenType.Control],
  ['<|quad_end|>', TokenType.Control],
  ['<|vision_start|>', TokenType.Control],
  ['<|vision_end|>', TokenType.Control],
  ['<|vision_pad|>', TokenType.Control],
  ['<|image_pad|>', TokenType.Control],
  ['<|video_pad|>', TokenType.Control],
  ['<tool_call>', TokenType.UserDefined],
  ['</tool_call>', TokenType.UserDefined],
  ['<|fim_prefix|>', TokenType.Control],
  ['<|fim_middle|>', TokenType.Control],
  ['<|fim_suffix|>', TokenType.Control],
  ['<|fim_pad|>', TokenType.Control],
  ['<|repo_name|>', TokenType.Control],
  ['<|file_sep|>', TokenType.Control],
];

/** The 256 byte tokens and the merge results of a byte-level BPE vocabulary, in id order. */
function byteLevelTokens(merges: string[]): string[] {
  const tokens = byteLevelOrder().map((b) => String.fromCharCode(BYTE_TO_CP[b]));
  const seen = new Set(tokens);
  for (const m of merges) {
    const sp = m.indexOf(' ', 1);
    const t = m.slice(0, sp) + m.slice(sp + 1);
    if (!seen.has(t)) {
      seen.add(t);
      tokens.push(t);
    }
  }
  return tokens;
}

function buildSpec(kind: SyntheticTokenizerKind): VocabSpec {
  if (kind === 'llama-bpe' || kind === 'qwen2') {
    const merges = (kind === 'llama-bpe' ? llamaBpeVocab : qwen2Vocab).merges as string[];
    const tokens = byteLevelTokens(merges);
    const types: number[] = tokens.map(() => TokenType.Normal);
    const specials: [string, TokenType][] = kind === 'llama-bpe' ? llama3Specials().map((t) => [t, TokenType.Control]) : QWEN_SPECIALS;
    const ids: Record<string, number> = {};
    for (const [t, ty] of specials) {
      ids[t] = tokens.length;
      tokens.push(t);
      types.push(ty);
    }
    return { tokens, types, merges, ids };
  }
  // SentencePiece: <unk> <s> </s>, 256 byte tokens, merged pieces (score -rank), then the alphabet
  const tokens = ['<unk>', '<s>', '</s>'];
  const types: number[] = [TokenType.Unknown, TokenType.Control, TokenType.Control];
  const scores = [0, 0, 0];
  for (let b = 0; b < 256; b++) {
    tokens.push(`<0x${b.toString(16).toUpperCase().padStart(2, '0')}>`);
    types.push(TokenType.Byte);
    scores.push(0);
  }
  const pieces = spmVocab.pieces as string[];
  const chars = spmVocab.chars as string[];
  pieces.forEach((p, i) => {
    tokens.push(p);
    types.push(TokenType.Normal);
    scores.push(-i);
  });
  chars.forEach((c, i) => {
    tokens.push(c);
    types.push(TokenType.Normal);
    scores.push(-(pieces.length + i));
  });
  return { tokens, types, scores, ids: { '<unk>': 0, '<s>': 1, '</s>': 2 } };
}

const specs = new Map<SyntheticTokenizerKind, VocabSpec>();
function spec(kind: SyntheticTokenizerKind): VocabSpec {
  let s = specs.get(kind);
  if (!s) {
    if (!SYNTHETIC_TOKENIZER_KINDS.includes(kind)) throw new Error(`unknown synthetic tokenizer kind "${kind}" (llama-bpe, qwen2 or spm)`);
    specs.set(kind, (s = buildSpec(kind)));
  }
  return s;
}

/** Number of tokens of the synthetic vocabulary (the model's n_vocab: embedding and output rows). */
export function syntheticVocabSize(kind: SyntheticTokenizerKind): number {
  return spec(kind).tokens.length;
}

/** Id of a token of the synthetic vocabulary by its text (e.g. '<|eot_id|>'), or undefined. */
export function syntheticTokenId(kind: SyntheticTokenizerKind, text: string): number | undefined {
  const s = spec(kind);
  return s.ids[text] ?? (s.tokens.indexOf(text) >= 0 ? s.tokens.indexOf(text) : undefined);
}

/**
 * Every tokenizer.* key llama.cpp reads for this kind, in a fixed order, ready for writeGGUF.
 * (No general.* or architecture keys: the model writer owns those.)
 */
export function syntheticTokenizerMetadata(kind: SyntheticTokenizerKind): Array<[string, GGUFMetaValue]> {
  const s = spec(kind);
  const md: Array<[string, GGUFMetaValue]> = [];
  const id = (t: string): GGUFMetaValue => meta.u32(s.ids[t]);
  if (kind === 'spm') {
    md.push(['tokenizer.ggml.model', meta.str('llama')]);
    md.push(['tokenizer.ggml.tokens', meta.arr(GGUFValueType.STRING, s.tokens)]);
    md.push(['tokenizer.ggml.scores', meta.arr(GGUFValueType.FLOAT32, s.scores!)]);
    md.push(['tokenizer.ggml.token_type', meta.arr(GGUFValueType.INT32, s.types)]);
    md.push(['tokenizer.ggml.bos_token_id', id('<s>')]);
    md.push(['tokenizer.ggml.eos_token_id', id('</s>')]);
    md.push(['tokenizer.ggml.unknown_token_id', id('<unk>')]);
    md.push(['tokenizer.ggml.padding_token_id', id('<unk>')]);
    md.push(['tokenizer.ggml.add_bos_token', meta.bool(true)]);
    md.push(['tokenizer.ggml.add_eos_token', meta.bool(false)]);
    md.push(['tokenizer.ggml.add_space_prefix', meta.bool(true)]);
    md.push(['tokenizer.chat_template', meta.str(LLAMA2_CHAT_TEMPLATE)]);
    return md;
  }
  md.push(['tokenizer.ggml.model', meta.str('gpt2')]);
  md.push(['tokenizer.ggml.pre', meta.str(kind)]);
  md.push(['tokenizer.ggml.tokens', meta.arr(GGUFValueType.STRING, s.tokens)]);
  md.push(['tokenizer.ggml.token_type', meta.arr(GGUFValueType.INT32, s.types)]);
  md.push(['tokenizer.ggml.merges', meta.arr(GGUFValueType.STRING, s.merges!)]);
  if (kind === 'llama-bpe') {
    md.push(['tokenizer.ggml.bos_token_id', id('<|begin_of_text|>')]);
    md.push(['tokenizer.ggml.eos_token_id', id('<|eot_id|>')]);
    md.push(['tokenizer.ggml.eot_token_id', id('<|eot_id|>')]);
    md.push(['tokenizer.ggml.eom_token_id', id('<|eom_id|>')]);
    md.push(['tokenizer.ggml.padding_token_id', id('<|finetune_right_pad_id|>')]);
    md.push(['tokenizer.ggml.add_bos_token', meta.bool(true)]);
    md.push(['tokenizer.ggml.add_eos_token', meta.bool(false)]);
    md.push(['tokenizer.chat_template', meta.str(LLAMA3_CHAT_TEMPLATE)]);
  } else {
    md.push(['tokenizer.ggml.bos_token_id', id('<|endoftext|>')]);
    md.push(['tokenizer.ggml.eos_token_id', id('<|im_end|>')]);
    md.push(['tokenizer.ggml.eot_token_id', id('<|im_end|>')]);
    md.push(['tokenizer.ggml.padding_token_id', id('<|endoftext|>')]);
    md.push(['tokenizer.ggml.fim_pre_token_id', id('<|fim_prefix|>')]);
    md.push(['tokenizer.ggml.fim_suf_token_id', id('<|fim_suffix|>')]);
    md.push(['tokenizer.ggml.fim_mid_token_id', id('<|fim_middle|>')]);
    md.push(['tokenizer.ggml.fim_pad_token_id', id('<|fim_pad|>')]);
    md.push(['tokenizer.ggml.fim_rep_token_id', id('<|repo_name|>')]);
    md.push(['tokenizer.ggml.fim_sep_token_id', id('<|file_sep|>')]);
    md.push(['tokenizer.ggml.add_bos_token', meta.bool(false)]);
    md.push(['tokenizer.ggml.add_eos_token', meta.bool(false)]);
    md.push(['tokenizer.chat_template', meta.str(QWEN25_CHAT_TEMPLATE)]);
  }
  return md;
}
