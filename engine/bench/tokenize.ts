// `repokv bench tokenize`: tokenizer throughput, RepoKV against llama.cpp (node-llama-cpp, vocab only)
// on the same GGUF file, the same texts, in the same process, both on this one thread. Prints one
// JSON object per measurement (--json). Without --model it writes the synthetic tokenizers
// (llama-bpe, qwen2, spm) to a temporary directory and measures each.
//
// RepoKV caches the tokens of words it has seen; "cold" empties that cache before every pass (each
// text still benefits from the words it repeats), "warm" keeps it (the same text again, as when a
// repository is re-tokenized after a small edit). llama.cpp has no such cache. Every measurement is
// the best of --repeat passes; the token ids of both sides are compared as well.

import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { GGUFFile } from '../gguf/reader.js';
import { meta, writeGGUF } from '../gguf/writer.js';
import { UserError } from '../errors.js';
import { Tokenizer } from '../text/tokenizer.js';
import { PARITY_FILES, readCorpus } from '../text/corpus.js';
import { SYNTHETIC_TOKENIZER_KINDS, syntheticTokenizerMetadata, type SyntheticTokenizerKind } from '../text/synthetic.js';
import { flagNumber, flagString, parseArgs } from '../commands/args.js';

const USAGE = `usage: repokv bench tokenize [options]
  --model FILE     GGUF model to take the tokenizer from (default: the synthetic llama-bpe, qwen2, spm)
  --kind K         with no --model: only this synthetic tokenizer (llama-bpe, qwen2 or spm)
  --file PATH      text to tokenize (repeatable; default: the parity corpus, ~470 KB of node_modules files)
  --repeat N       passes per measurement, the best is kept (default 5)
  --json           one JSON object per measurement`;

interface Measurement {
  bench: 'tokenize';
  model: string;
  tokenizer: string;
  engine: 'repokv' | 'llama.cpp';
  cache?: 'cold' | 'warm';
  texts: number;
  chars: number;
  bytes: number;
  tokens: number;
  seconds: number;
  tokens_per_s: number;
  mb_per_s: number;
  ratio_vs_llama_cpp?: number;
  identical_to_llama_cpp?: boolean;
  threads: 1;
  node: string;
  llama_cpp?: string;
}

type LlamaModelLike = { tokenize(text: string, special?: boolean): readonly number[]; dispose(): Promise<void> };
type LlamaLike = { loadModel(o: { modelPath: string; vocabOnly: boolean }): Promise<LlamaModelLike>; dispose(): Promise<void> };

async function loadLlama(): Promise<LlamaLike> {
  let mod: typeof import('node-llama-cpp');
  try {
    mod = await import('node-llama-cpp');
  } catch {
    throw new UserError('bench tokenize needs node-llama-cpp (a dev dependency) to compare against; run npm install in the repokv checkout');
  }
  return (await mod.getLlama({
    gpu: false,
    build: 'never',
    logLevel: mod.LlamaLogLevel.error,
    // a vocab-only load makes node-llama-cpp's memory estimate fail, harmlessly
    logger: (_level, message) => {
      if (!/llama_model_load|simulating model resource usage/.test(message)) console.error(`[llama.cpp] ${message}`);
    },
  })) as unknown as LlamaLike;
}

/** node-llama-cpp's version, read from its package.json next to its entry point. */
function nodeLlamaCppVersion(): string | undefined {
  try {
    let dir = dirname(fileURLToPath(import.meta.resolve('node-llama-cpp')));
    for (let i = 0; i < 5; i++, dir = dirname(dir)) {
      const f = join(dir, 'package.json');
      if (existsSync(f)) {
        const pkg = JSON.parse(readFileSync(f, 'utf8')) as { name?: string; version?: string };
        if (pkg.name === 'node-llama-cpp') return pkg.version;
      }
    }
  } catch {
    /* unknown */
  }
  return undefined;
}

function best(passes: number, f: () => void): number {
  let t = Infinity;
  for (let i = 0; i < passes; i++) {
    const t0 = process.hrtime.bigint();
    f();
    t = Math.min(t, Number(process.hrtime.bigint() - t0) / 1e9);
  }
  return t;
}

export async function run(args: string[]): Promise<number> {
  const p = parseArgs(args, ['json', 'help']);
  if (p.flags.has('help')) {
    console.log(USAGE);
    return 0;
  }
  const known = new Set(['model', 'kind', 'file', 'repeat', 'json', 'help']);
  for (const k of p.flags.keys()) if (!known.has(k)) throw new UserError(`unknown option --${k} (see repokv bench tokenize --help)`);
  if (p.positional.length) throw new UserError(`unexpected argument "${p.positional[0]}" (see repokv bench tokenize --help)`);
  const json = p.flags.has('json');
  const repeat = Math.max(1, Math.floor(flagNumber(p, 'repeat', 5)));
  const modelFlag = flagString(p, 'model');
  const kindFlag = flagString(p, 'kind');
  if (kindFlag !== undefined && !SYNTHETIC_TOKENIZER_KINDS.includes(kindFlag as SyntheticTokenizerKind)) {
    throw new UserError(`option --kind must be one of ${SYNTHETIC_TOKENIZER_KINDS.join(', ')}, got "${kindFlag}"`);
  }
  if (kindFlag !== undefined && modelFlag !== undefined) throw new UserError('options --kind and --model exclude each other');

  // texts: --file (every occurrence; parseArgs keeps the last, so read them from args) or the corpus
  const files: string[] = [];
  for (let i = 0; i < args.length; i++) {
    if (args[i] === '--file' && i + 1 < args.length) files.push(args[++i]);
    else if (args[i].startsWith('--file=')) files.push(args[i].slice(7));
  }
  let texts: string[];
  if (files.length) {
    texts = files.map((f) => {
      try {
        return readFileSync(f, 'utf8');
      } catch (e) {
        throw new UserError(`cannot read ${f} (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`);
      }
    });
  } else {
    try {
      texts = readCorpus(PARITY_FILES).map((c) => c.text);
    } catch {
      throw new UserError('the default benchmark texts come from the dev dependencies in node_modules (npm install), or pass --file PATH');
    }
  }
  const chars = texts.reduce((a, t) => a + t.length, 0);
  const bytes = texts.reduce((a, t) => a + Buffer.byteLength(t), 0);

  let tmp: string | null = null;
  const targets: { path: string; label: string }[] = [];
  if (modelFlag) targets.push({ path: modelFlag, label: modelFlag });
  else {
    tmp = mkdtempSync(join(tmpdir(), 'repokv-bench-tok-'));
    for (const kind of kindFlag ? [kindFlag as SyntheticTokenizerKind] : SYNTHETIC_TOKENIZER_KINDS) {
      const path = join(tmp, `${kind}.gguf`);
      writeGGUF(path, { metadata: [['general.architecture', meta.str('llama')], ...syntheticTokenizerMetadata(kind)], tensors: [] });
      targets.push({ path, label: `synthetic:${kind}` });
    }
  }

  const llama = await loadLlama();
  const llamaVersion = nodeLlamaCppVersion();
  try {
    for (const target of targets) {
      const gguf = GGUFFile.open(target.path, { metadataOnly: true });
      let tok: Tokenizer;
      try {
        tok = Tokenizer.fromGGUF(gguf);
      } finally {
        gguf.close();
      }
      const tokenizer = tok.vocab.type === 'bpe' ? `gpt2/${tok.vocab.preName}` : 'llama (spm)';
      const model = await llama.loadModel({ modelPath: target.path, vocabOnly: true });
      try {
        const encodeAll = () => {
          let n = 0;
          for (const t of texts) n += tok.encode(t, { addSpecial: false }).length;
          return n;
        };
        const llamaAll = () => {
          let n = 0;
          for (const t of texts) n += model.tokenize(t, false).length;
          return n;
        };
        // warm up both (JIT, caches of the native side) and check they agree
        let identical = true;
        for (const t of texts) {
          const a = tok.encode(t, { addSpecial: false });
          const b = model.tokenize(t, false);
          if (a.length !== b.length || a.some((x, i) => x !== b[i])) identical = false;
        }
        const tokens = encodeAll();
        const llamaTokens = llamaAll();
        const tLlama = best(repeat, llamaAll);
        const tCold = best(repeat, () => {
          tok.clearCache();
          encodeAll();
        });
        const tWarm = best(repeat, encodeAll);
        const base = { bench: 'tokenize' as const, model: target.label, tokenizer, texts: texts.length, chars, bytes, threads: 1 as const, node: process.version };
        const llamaRate = llamaTokens / tLlama;
        const rows: Measurement[] = [
          { ...base, engine: 'llama.cpp', tokens: llamaTokens, seconds: tLlama, tokens_per_s: llamaRate, mb_per_s: bytes / tLlama / 1e6, ...(llamaVersion ? { llama_cpp: `node-llama-cpp ${llamaVersion}` } : {}) },
          { ...base, engine: 'repokv', cache: 'cold', tokens, seconds: tCold, tokens_per_s: tokens / tCold, mb_per_s: bytes / tCold / 1e6, ratio_vs_llama_cpp: tokens / tCold / llamaRate, identical_to_llama_cpp: identical },
          { ...base, engine: 'repokv', cache: 'warm', tokens, seconds: tWarm, tokens_per_s: tokens / tWarm, mb_per_s: bytes / tWarm / 1e6, ratio_vs_llama_cpp: tokens / tWarm / llamaRate, identical_to_llama_cpp: identical },
        ];
        for (const r of rows) {
          const rounded = { ...r, seconds: +r.seconds.toFixed(4), tokens_per_s: Math.round(r.tokens_per_s), mb_per_s: +r.mb_per_s.toFixed(2), ...(r.ratio_vs_llama_cpp !== undefined ? { ratio_vs_llama_cpp: +r.ratio_vs_llama_cpp.toFixed(2) } : {}) };
          if (json) console.log(JSON.stringify(rounded));
          else {
            const who = r.engine === 'repokv' ? `repokv (${r.cache} cache)` : 'llama.cpp';
            const ratio = r.ratio_vs_llama_cpp !== undefined ? `  x${r.ratio_vs_llama_cpp.toFixed(2)} vs llama.cpp${r.identical_to_llama_cpp ? '' : '  (TOKENS DIFFER)'}` : '';
            console.log(`${target.label} ${tokenizer}  ${who.padEnd(20)} ${(r.tokens_per_s / 1e6).toFixed(2)} M tokens/s  ${r.mb_per_s.toFixed(1)} MB/s${ratio}`);
          }
        }
      } finally {
        await model.dispose();
      }
    }
  } finally {
    await llama.dispose();
    if (tmp) rmSync(tmp, { recursive: true, force: true });
  }
  return 0;
}
