// Parity of our tokenizer with llama.cpp (node-llama-cpp 3.21.1, the same GGUF file, vocab only):
// token ids of encode() and the text of decode() must be identical, on real source files
// (corpus.ts PARITY_FILES), hand-written edge cases and seeded random strings of tricky characters.
// A mismatch is reported with the text, the token index and the tokens on both sides.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import fc from 'fast-check';
import { getLlama, LlamaLogLevel, type Llama, type Token } from 'node-llama-cpp';
import { writeGGUF, meta } from '../../engine/gguf/writer.js';
import { GGUFFile } from '../../engine/gguf/reader.js';
import { Tokenizer } from '../../engine/text/tokenizer.js';
import { SYNTHETIC_TOKENIZER_KINDS, syntheticTokenizerMetadata, type SyntheticTokenizerKind } from '../../engine/text/synthetic.js';
import { PARITY_FILES, readCorpus } from '../../engine/text/corpus.js';
import { BYTE_TO_CP, byteLevelOrder } from '../../engine/text/unicode.js';
import { GGUFValueType } from '../../engine/gguf/types.js';
import type { GGUFMetaValue } from '../../engine/gguf/reader.js';

/** Hand-written cases: Unicode classes, scripts, white space, digits, special-token text. */
export const EDGE_CASES: string[] = [
  '',
  ' ',
  '  ',
  'Hello world',
  ' Hello world',
  'Hello  world ',
  '\t\tindented\twith\ttabs',
  'line1\nline2\r\nline3\r\rline4\n\n\n',
  'trailing spaces   \n   leading spaces',
  ' \n \n\t\n',
  '\r\n\r\n\r\n',
  'a' + ' '.repeat(1000) + 'b',
  ' '.repeat(17),
  '\n'.repeat(9),
  "don't I'M we'LL they'Re you've she'd it's 'S 'T",
  "'''' ''s 'sss",
  "a , b . c ! d ? ' x ' it 's we 're I 'm you 've don 't ' ' '",
  'rock’n’roll ‘quoted’ “double”',
  '1234567890123 9876543210 0 00 000 0000',
  '3.14159 1e-10 0x1F 1_000_000 v1.2.3',
  '١٢٣٤ ١٢٣٤٥ (Arabic-Indic) ０１２３ (fullwidth) Ⅻ ² ½',
  '日本語のテキストと漢字。中文文本，还有标点！한국어 텍스트입니다.',
  'Привет, мир! Ελληνικά. עברית. العربية. हिन्दी। ไทย',
  '😀👍🏽 👨‍👩‍👧‍👦 🇯🇵 ❤️ 🫶 🪿',
  'e\u0301 a\u0308 n\u0303 \u0915\u093f \u0061\u0328\u0301 Z\u0351\u0352\u0353',
  'zero\u200bwidth\u200djoiner\u2060word \ufeffBOM \u00a0nbsp \u3000ideo \u2028ls \u0085nel',
  'ctrl\u0000nul\u0007bel\u001besc\u007fdel',
  'private\ue000use \u{10ffff} new-in-16: \u{1fae9} \u{1cc00}',
  'lone surrogate \ud800 here and \udc00 there',
  'x'.repeat(3000),
  '=' .repeat(200) + '\n' + '-'.repeat(77),
  'function f<T extends keyof U>(a: T[], b?: Map<string, number>): Promise<void> { return a?.b ?? c; }',
  'const re = /^(?:[a-z0-9!#$%&\'*+/=?^_`{|}~-]+)$/u; // regex',
  '<|eot_id|>',
  '<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>',
  '<|im_start|>system\nYou are helpful.<|im_end|>\n<|im_start|>user\nhi<|im_end|>\n',
  '<s>[INST] hello [/INST] hi</s>',
  '<unk> <s> </s> <0x0A>',
  '<tool_call>{"name": "f"}</tool_call>',
  '<|fim_prefix|>def f():<|fim_suffix|>\n    return 1<|fim_middle|>',
  '<|eot_id <|eot_id|<|eot_id|>|> <|<|im_end|>|>',
  '<|reserved_special_token_10|><|reserved_special_token_1|>',
  'text<|endoftext|>more',
];

/** Seeded random strings over a pool of characters the pre-tokenizers treat differently. */
function randomStrings(count: number): string[] {
  const pool = [
    ' ', ' ', ' ', '\t', '\n', '\r', '\r\n', '\u00a0', '\u3000', '\u0085', 'a', 'Z', 'é', 'ß', 'λ', 'Я', '日', '本', 'ー', '한', 'ا',
    '0', '7', '٣', '²', 'Ⅻ', "'", 's', 't', 'l', 'L', 'd', 'v', 'e', 'r', 'm', '.', ',', '!', '?', '-', '_', '(', ')', '{', '}', '<', '>',
    '|', '/', '\\', '"', '`', '$', '#', '\u0301', '\u200d', '\ufeff', '😀', '🏽', '\u{10ffff}', '\ue000', '\u0000', '<|', '|>', '▁',
  ];
  return fc.sample(fc.array(fc.constantFrom(...pool), { minLength: 0, maxLength: 60 }).map((a) => a.join('')), { seed: 20240601, numRuns: count });
}

let llama: Llama;
let dir: string;

before(async () => {
  dir = mkdtempSync(join(tmpdir(), 'repokv-parity-'));
  llama = await getLlama({
    gpu: false,
    build: 'never',
    logLevel: LlamaLogLevel.error,
    // a vocab-only file has no tensors: node-llama-cpp's memory estimate complains, harmlessly
    logger: (level, message) => {
      if (!/llama_model_load|simulating model resource usage/.test(message)) console.error(`[llama.cpp] ${message}`);
    },
  });
});

after(async () => {
  await llama?.dispose();
  rmSync(dir, { recursive: true, force: true });
});

interface Case {
  name: string;
  text: string;
}

function describeMismatch(tok: Tokenizer, c: Case, ours: number[], theirs: number[]): string {
  let i = 0;
  while (i < ours.length && i < theirs.length && ours[i] === theirs[i]) i++;
  const at = (ids: number[]) => ids.slice(Math.max(0, i - 2), i + 4).map((t) => `${t}:${JSON.stringify(tok.tokenText(t))}`).join(' ');
  const before = tok.decode(theirs.slice(0, i));
  return `${c.name}: token ${i} of ${theirs.length} (llama.cpp) / ${ours.length} (ours), after ${JSON.stringify(before.slice(-40))}\n  ours:      ${at(ours)}\n  llama.cpp: ${at(theirs)}`;
}

// the three synthetic kinds, and the llama-bpe vocabulary under llama.cpp's default pre-tokenizer
const VARIANTS: { kind: string; md: () => [string, GGUFMetaValue][] }[] = [
  ...SYNTHETIC_TOKENIZER_KINDS.map((k) => ({ kind: k as string, md: () => syntheticTokenizerMetadata(k as SyntheticTokenizerKind) })),
  {
    kind: 'llama-bpe vocabulary, pre-tokenizer "default"',
    md: () => syntheticTokenizerMetadata('llama-bpe').map(([k, v]) => [k, k === 'tokenizer.ggml.pre' ? meta.str('default') : v] as [string, GGUFMetaValue]),
  },
];

for (const { kind, md: makeMd } of VARIANTS) {
  test(`parity with llama.cpp: ${kind}`, async () => {
    const md = makeMd();
    const path = join(dir, `${kind.replace(/\W+/g, '-')}.gguf`);
    writeGGUF(path, { metadata: [['general.architecture', meta.str('llama')], ...md], tensors: [] });
    const file = GGUFFile.open(path, { metadataOnly: true });
    const tok = Tokenizer.fromGGUF(file);
    file.close();
    const model = await llama.loadModel({ modelPath: path, vocabOnly: true });
    try {
      const cases: Case[] = [
        ...readCorpus(PARITY_FILES).map((f) => ({ name: f.path, text: f.text })),
        ...EDGE_CASES.map((text, i) => ({ name: `edge case ${i} ${JSON.stringify(text.slice(0, 30))}`, text })),
        ...randomStrings(400).map((text, i) => ({ name: `random ${i} ${JSON.stringify(text)}`, text })),
      ];
      const problems: string[] = [];
      let chars = 0;
      let tokens = 0;
      for (const parseSpecial of [false, true]) {
        for (const c of cases) {
          chars += c.text.length;
          const ours = Array.from(tok.encode(c.text, { addSpecial: false, parseSpecial }));
          const theirs = Array.from(model.tokenize(c.text, parseSpecial));
          tokens += theirs.length;
          const name = `${c.name} (parseSpecial ${parseSpecial})`;
          if (ours.length !== theirs.length || ours.some((t, i) => t !== theirs[i])) problems.push(describeMismatch(tok, { ...c, name }, ours, theirs));
          const textOurs = tok.decode(theirs, { special: parseSpecial });
          const textTheirs = model.detokenize(theirs, parseSpecial);
          if (textOurs !== textTheirs) problems.push(`${name}: decode differs: ours ${JSON.stringify(textOurs.slice(0, 120))}, llama.cpp ${JSON.stringify(textTheirs.slice(0, 120))}`);
        }
      }
      // decoding whatever ids (not only those encode makes): every token alone, and random runs
      const n = tok.vocabSize;
      for (const special of [false, true]) {
        for (let id = 0; id < n; id++) {
          const a = tok.decode([id], { special });
          const b = model.detokenize([id as Token], special);
          if (a !== b) problems.push(`decode([${id}] ${JSON.stringify(tok.tokenText(id))}, special ${special}): ours ${JSON.stringify(a)}, llama.cpp ${JSON.stringify(b)}`);
        }
        const runs = fc.sample(fc.array(fc.integer({ min: 0, max: n - 1 }), { maxLength: 12 }), { seed: 7, numRuns: 300 });
        for (const ids of runs) {
          const a = tok.decode(ids, { special });
          const b = model.detokenize(ids as Token[], special);
          if (a !== b) problems.push(`decode(${JSON.stringify(ids)}, special ${special}): ours ${JSON.stringify(a)}, llama.cpp ${JSON.stringify(b)}`);
        }
      }
      console.log(`# ${kind}: ${cases.length} texts x 2, ${chars} characters, ${tokens} tokens, ${problems.length} mismatches`);
      assert.equal(problems.length, 0, `${problems.length} mismatches with llama.cpp:\n${problems.slice(0, 10).join('\n')}`);
    } finally {
      await model.dispose();
    }
  });
}

test('parity with llama.cpp: every BMP code point and every 16th astral one, in letter, digit and space contexts', async () => {
  // checks our Unicode class table (assets/unicode-classes.json) against llama.cpp's through the
  // pre-tokenizers: a code point's class decides which words it joins. The vocabulary here merges
  // every pair of bytes, so a word boundary anywhere shows in the tokens.
  const parts: string[] = [];
  const probe = (c: string) => parts.push(`a${c}1${c} ${c}${c}\n`);
  for (let cp = 0x80; cp < 0x10000; cp++) if (cp < 0xd800 || cp > 0xdfff) probe(String.fromCharCode(cp));
  for (let cp = 0x10000; cp < 0x110000; cp += 16) probe(String.fromCodePoint(cp));
  const text = parts.join('');
  const bytes = byteLevelOrder().map((b) => String.fromCharCode(BYTE_TO_CP[b]));
  const pairs: string[] = [];
  const merges: string[] = [];
  for (const x of bytes) for (const y of bytes) {
    pairs.push(x + y);
    merges.push(`${x} ${y}`);
  }
  const tokens = [...bytes, ...pairs];
  for (const pre of ['llama-bpe', 'qwen2', 'gpt-2', 'default']) {
    const md: [string, GGUFMetaValue][] = [
      ['tokenizer.ggml.model', meta.str('gpt2')],
      ['tokenizer.ggml.pre', meta.str(pre)],
      ['tokenizer.ggml.tokens', meta.arr(GGUFValueType.STRING, tokens)],
      ['tokenizer.ggml.token_type', meta.arr(GGUFValueType.INT32, tokens.map(() => 1))],
      ['tokenizer.ggml.merges', meta.arr(GGUFValueType.STRING, merges)],
    ];
    const path = join(dir, `cp-${pre}.gguf`);
    writeGGUF(path, { metadata: [['general.architecture', meta.str('llama')], ...md], tensors: [] });
    const tok = Tokenizer.fromMetadata(md, path);
    const model = await llama.loadModel({ modelPath: path, vocabOnly: true });
    try {
      const ours = Array.from(tok.encode(text, { addSpecial: false }));
      const theirs = Array.from(model.tokenize(text, false));
      if (ours.length !== theirs.length || ours.some((t, i) => t !== theirs[i])) {
        assert.fail(describeMismatch(tok, { name: `code points (${pre})`, text }, ours, theirs));
      }
      console.log(`# ${pre}: ${parts.length} code points, ${text.length} UTF-16 units, ${theirs.length} tokens, identical`);
    } finally {
      await model.dispose();
    }
  }
});
