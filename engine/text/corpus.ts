// Fixed lists of real files (from packages pinned in package-lock.json) used to train the synthetic
// vocabularies (gen-assets.ts) and to check and time our tokenizer against llama.cpp (test/text/
// parity.test.ts, `repokv bench tokenize`). Two disjoint lists: a tokenizer is never checked only on
// the text it was trained on.

import { existsSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

export interface CorpusFile {
  /** Path under node_modules. */
  path: string;
  /** Keep only the first this many UTF-16 units, cut back to a line end (large translated files). */
  maxChars?: number;
}

/** Training text, ~1.6 MB: TypeScript declarations, JavaScript, Markdown, some German JSON. */
export const TRAIN_FILES: CorpusFile[] = [
  { path: 'typescript/lib/lib.es5.d.ts' }, // typescript 5.9.3
  { path: '@types/node/fs.d.ts' }, // @types/node 20.19.43
  { path: '@types/node/http.d.ts' },
  { path: '@types/node/stream.d.ts' },
  { path: '@types/node/buffer.d.ts' },
  { path: '@types/node/events.d.ts' },
  { path: '@types/node/util.d.ts' },
  { path: '@types/node/process.d.ts' },
  { path: '@types/node/child_process.d.ts' },
  { path: '@types/node/net.d.ts' },
  { path: 'commander/lib/command.js' }, // commander 10.0.1
  { path: '@huggingface/jinja/dist/index.js' }, // @huggingface/jinja 0.5.11
  { path: 'commander/Readme.md' },
  { path: 'tar/README.md' }, // tar 7.5.23
  { path: 'typescript/lib/de/diagnosticMessages.generated.json', maxChars: 120_000 },
  { path: 'typescript/lib/zh-cn/diagnosticMessages.generated.json', maxChars: 60_000 },
];

/** Checking and timing text, ~470 KB, disjoint from TRAIN_FILES: code, JSON, Markdown, CJK, Cyrillic. */
export const PARITY_FILES: CorpusFile[] = [
  { path: 'typescript/lib/lib.es2015.core.d.ts' },
  { path: 'typescript/lib/lib.es2015.iterable.d.ts' },
  { path: 'typescript/lib/lib.es2020.bigint.d.ts' },
  { path: 'typescript/lib/lib.es2020.intl.d.ts' },
  { path: '@types/node/path.d.ts' },
  { path: '@types/node/os.d.ts' },
  { path: '@types/node/url.d.ts' },
  { path: '@types/node/readline.d.ts' },
  { path: 'commander/lib/help.js' },
  { path: 'ignore/index.js' }, // ignore 7.0.17
  { path: 'fast-check/README.md' }, // fast-check 4.11.0
  { path: 'debug/README.md' }, // debug 4.4.3
  { path: 'semver/README.md' }, // semver 7.8.6
  { path: 'node-llama-cpp/package.json' }, // node-llama-cpp 3.21.1
  { path: 'typescript/package.json' },
  { path: 'typescript/lib/ja/diagnosticMessages.generated.json', maxChars: 40_000 },
  { path: 'typescript/lib/ru/diagnosticMessages.generated.json', maxChars: 40_000 },
  { path: 'typescript/lib/ko/diagnosticMessages.generated.json', maxChars: 30_000 },
];

/** The nearest directory above this module that holds node_modules (the repository root). */
export function repoRoot(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  for (;;) {
    if (existsSync(join(dir, 'node_modules'))) return dir;
    const up = dirname(dir);
    if (up === dir) throw new Error('cannot find node_modules above ' + fileURLToPath(import.meta.url));
    dir = up;
  }
}

/** Reads one corpus file (from the repository's node_modules unless `root` says otherwise). */
export function readCorpusFile(f: CorpusFile, root = repoRoot()): string {
  let text = readFileSync(join(root, 'node_modules', f.path), 'utf8');
  if (f.maxChars !== undefined && text.length > f.maxChars) {
    const cut = text.lastIndexOf('\n', f.maxChars);
    text = text.slice(0, cut > 0 ? cut + 1 : f.maxChars);
  }
  return text;
}

export function readCorpus(files: CorpusFile[], root = repoRoot()): { path: string; text: string }[] {
  return files.map((f) => ({ path: f.path, text: readCorpusFile(f, root) }));
}
