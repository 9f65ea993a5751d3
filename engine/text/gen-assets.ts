// Makes the committed assets of engine/text/ (run by hand, output committed; nothing runs it at
// build or test time):
//
//   node --import tsx engine/text/gen-assets.ts unicode   -> assets/unicode-classes.json
//   node --import tsx engine/text/gen-assets.ts vocab     -> assets/vocab-{llama-bpe,qwen2,spm}.json
//
// unicode: the general category class of every code point, as llama.cpp's table has it. The classes
// come from this Node's ICU (\p{..} in regular expressions); code points first assigned after Unicode
// 15.1 (the version of the table in the llama.cpp that node-llama-cpp 3.21.1 bundles) are written as
// unassigned, because that is what llama.cpp's pre-tokenizers see them as. POST_15_1 lists the Unicode
// 16.0 and 17.0 additions (DerivedAge.txt); with an ICU older than 17 some of them are simply absent.
//
// vocab: byte-level BPE merges for 'llama-bpe' and 'qwen2' (4000 each, trained with that
// pre-tokenizer) and SentencePiece pieces for 'spm', learned from corpus.ts TRAIN_FILES. Training is
// deterministic: the same files give the same assets, byte for byte.

import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { TRAIN_FILES, readCorpus } from './corpus.js';
import { trainByteLevel, trainSentencePiece } from './train-bpe.js';

const here = new URL('.', import.meta.url).pathname;

const POST_15_1: [number, number][] = [
  [0x88f, 0x88f], [0x897, 0x897], [0xc5c, 0xc5c], [0xcdc, 0xcdc], [0x1acf, 0x1add], [0x1ae0, 0x1aeb], [0x1b4e, 0x1b4f], [0x1b7f, 0x1b7f],
  [0x1c89, 0x1c8a], [0x20c1, 0x20c1], [0x2427, 0x2429], [0x2b96, 0x2b96], [0x31e4, 0x31e5], [0xa7cb, 0xa7cf], [0xa7d2, 0xa7d2], [0xa7d4, 0xa7d4],
  [0xa7da, 0xa7dc], [0xa7f1, 0xa7f1], [0xfbc3, 0xfbd2], [0xfd90, 0xfd91], [0xfdc8, 0xfdce], [0x105c0, 0x105f3], [0x10940, 0x10959], [0x10d40, 0x10d65],
  [0x10d69, 0x10d85], [0x10d8e, 0x10d8f], [0x10ec2, 0x10ec7], [0x10ed0, 0x10ed8], [0x10efa, 0x10efc], [0x11380, 0x11389], [0x1138b, 0x1138b], [0x1138e, 0x1138e],
  [0x11390, 0x113b5], [0x113b7, 0x113c0], [0x113c2, 0x113c2], [0x113c5, 0x113c5], [0x113c7, 0x113ca], [0x113cc, 0x113d5], [0x113d7, 0x113d8], [0x113e1, 0x113e2],
  [0x116d0, 0x116e3], [0x11b60, 0x11b67], [0x11bc0, 0x11be1], [0x11bf0, 0x11bf9], [0x11db0, 0x11ddb], [0x11de0, 0x11de9], [0x11f5a, 0x11f5a], [0x13460, 0x143fa],
  [0x16100, 0x16139], [0x16d40, 0x16d79], [0x16ea0, 0x16eb8], [0x16ebb, 0x16ed3], [0x16ff2, 0x16ff6], [0x187f8, 0x187ff], [0x18cff, 0x18cff], [0x18d09, 0x18d1e],
  [0x18d80, 0x18df2], [0x1cc00, 0x1ccfc], [0x1cd00, 0x1ceb3], [0x1ceba, 0x1ced0], [0x1cee0, 0x1cef0], [0x1e5d0, 0x1e5fa], [0x1e5ff, 0x1e5ff], [0x1e6c0, 0x1e6de],
  [0x1e6e0, 0x1e6f5], [0x1e6fe, 0x1e6ff], [0x1f6d8, 0x1f6d8], [0x1f777, 0x1f77a], [0x1f8b2, 0x1f8bb], [0x1f8c0, 0x1f8c1], [0x1f8d0, 0x1f8d8], [0x1fa54, 0x1fa57],
  [0x1fa89, 0x1fa8a], [0x1fa8e, 0x1fa8f], [0x1fabe, 0x1fabe], [0x1fac6, 0x1fac6], [0x1fac8, 0x1fac8], [0x1facd, 0x1facd], [0x1fadc, 0x1fadc], [0x1fadf, 0x1fadf],
  [0x1fae9, 0x1faea], [0x1faef, 0x1faef], [0x1fbcb, 0x1fbef], [0x1fbfa, 0x1fbfa], [0x2b73a, 0x2b73f], [0x2cea2, 0x2cead], [0x323b0, 0x33479],
];

function genUnicode(): void {
  const classes: [number, RegExp][] = [
    [1, /^\p{N}$/u],
    [2, /^\p{L}$/u],
    [3, /^\p{Z}$/u],
    [4, /^\p{M}$/u],
    [5, /^\p{P}$/u],
    [6, /^\p{S}$/u],
    [7, /^\p{C}$/u],
  ];
  const unassigned = /^\p{Cn}$/u;
  const late = new Uint8Array(0x110000);
  for (const [a, b] of POST_15_1) late.fill(1, a, b + 1);
  const ranges: number[] = [];
  let prev = -1;
  for (let cp = 0; cp < 0x110000; cp++) {
    const s = String.fromCodePoint(cp);
    let k = 0;
    if (!late[cp] && !unassigned.test(s)) {
      for (const [c, re] of classes) {
        if (re.test(s)) {
          k = c;
          break;
        }
      }
    }
    if (k !== prev) {
      ranges.push(cp, k);
      prev = k;
    }
  }
  const whitespace: number[] = [];
  for (let cp = 0; cp < 0x110000; cp++) if (/^\p{White_Space}$/u.test(String.fromCodePoint(cp))) whitespace.push(cp);
  const out = {
    about: 'General category class per code point (0 unassigned, 1 N, 2 L, 3 Z, 4 M, 5 P, 6 S, 7 C) as [start, class] pairs, Unicode 15.1 assignment; White_Space code points. Made by gen-assets.ts.',
    ranges,
    whitespace,
  };
  writeFileSync(join(here, 'assets', 'unicode-classes.json'), JSON.stringify(out) + '\n');
  console.log(`unicode-classes.json: ${ranges.length / 2} ranges, ${whitespace.length} white space code points`);
}

async function genVocab(): Promise<void> {
  const corpus = readCorpus(TRAIN_FILES);
  const files = TRAIN_FILES.map((f) => f.path);
  for (const kind of ['llama-bpe', 'qwen2'] as const) {
    const t0 = performance.now();
    const merges = trainByteLevel(corpus.map((c) => c.text), kind === 'llama-bpe' ? 'llama3' : 'qwen2', 4000);
    const out = { kind, trainedOn: files, merges };
    writeFileSync(join(here, 'assets', `vocab-${kind}.json`), JSON.stringify(out, null, 0) + '\n');
    console.log(`vocab-${kind}.json: ${merges.length} merges in ${((performance.now() - t0) / 1000).toFixed(1)} s`);
  }
  {
    const t0 = performance.now();
    const { pieces, chars } = trainSentencePiece(corpus.map((c) => c.text), 4000);
    const out = { kind: 'spm', trainedOn: files, pieces, chars };
    writeFileSync(join(here, 'assets', 'vocab-spm.json'), JSON.stringify(out, null, 0) + '\n');
    console.log(`vocab-spm.json: ${pieces.length} pieces + ${chars.length} characters in ${((performance.now() - t0) / 1000).toFixed(1)} s`);
  }
}

const what = process.argv[2];
if (what === 'unicode') genUnicode();
else if (what === 'vocab') await genVocab();
else {
  console.error('usage: node --import tsx engine/text/gen-assets.ts unicode|vocab');
  process.exitCode = 2;
}
