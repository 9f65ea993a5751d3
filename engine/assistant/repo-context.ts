// The repository as a prefix: walk → document → per-segment tokens, kept stable across runs.
//
// The document's manifest is kept on disk per set of roots (and model), so the next run moves only
// files changed since then to the tail (engine/context/document.ts updateDocument): everything before
// the first changed file keeps its bytes, its tokens and therefore its cached KV pages.

import { createHash } from 'node:crypto';
import { mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import {
  buildDocument,
  fileSegmentText,
  updateDocument,
  walkRepository,
  refreshWalk,
  manifestOf,
  type DocumentManifest,
  type Invalidation,
  type RepoDocument,
  type WalkOptions,
  type WalkResult,
} from '../context/index.js';
import type { Tokenizer } from '../text/tokenizer.js';

export interface RepoContextOptions {
  walk?: WalkOptions;
  /** Token budget of the document (the policy in engine/context/document.ts decides what to drop). */
  budgetTokens?: number;
  /** Where manifests are kept (absent: nothing is remembered between runs). */
  stateDir?: string;
  /** Distinguishes manifests of different models (token counts differ by tokenizer). */
  modelKey?: string;
  /** With `changed`: refresh this earlier context's walk, re-reading only the changed paths (refreshWalk). */
  previous?: RepoContext;
  /** Absolute paths created, changed or deleted since `previous` (e.g. from an editor's file watcher). */
  changed?: Iterable<string>;
  /**
   * Tokenizing progress, files done of files walked: the files are tokenized before the document is
   * built, yielding to the event loop every ~100 ms, so progress reaches a client while it runs.
   */
  onProgress?: (done: number, total: number) => void;
}

export interface RepoContextStats {
  files: number;
  excluded: number;
  tokens: number;
  walkMs: number;
  tokenizeMs: number;
  /** Versus the remembered manifest: where the document first changed (null: first run). */
  invalidation: Invalidation | null;
}

export class RepoContext {
  private constructor(
    readonly roots: string[],
    readonly walk: WalkResult,
    readonly document: RepoDocument,
    /** Tokens of each document segment (preamble, files, footer), tokenized on its own. */
    readonly segmentTokens: Int32Array[],
    readonly stats: RepoContextStats,
  ) {}

  /** All document tokens in order. */
  get tokens(): number[] {
    const out: number[] = [];
    for (const s of this.segmentTokens) for (let i = 0; i < s.length; i++) out.push(s[i]);
    return out;
  }

  static async open(rootsIn: string[], tokenizer: Pick<Tokenizer, 'encode'>, opts: RepoContextOptions = {}): Promise<RepoContext> {
    const roots = rootsIn.map((r) => resolve(r));
    const t0 = performance.now();
    const walk = opts.previous && opts.changed ? await refreshWalk(opts.previous.walk, opts.changed) : await walkRepository(roots, opts.walk);
    const t1 = performance.now();
    // Tokens are counted by the real tokenizer, segment by segment, so budgets and offsets are exact.
    const cache = new Map<string, Int32Array>();
    const encode = (text: string): Int32Array => {
      let t = cache.get(text);
      if (!t) {
        t = tokenizer.encode(text, { addSpecial: false, parseSpecial: false });
        cache.set(text, t);
      }
      return t;
    };
    if (opts.onProgress && !(opts.previous && opts.changed)) {
      // (An incremental update re-reads only changed files: nothing worth a progress bar.)
      // The document counts each file's segment text; tokenizing them here first (same texts, same
      // cache) lets the work report progress and yield, instead of one silent synchronous pass.
      // Up to the budget: the segments a document takes are tokenized below anyway, files past the
      // budget only when the policy asks (outlines, footer).
      const files = walk.files;
      let last = performance.now();
      let sum = 0;
      opts.onProgress(0, files.length);
      for (let i = 0; i < files.length && sum <= (opts.budgetTokens ?? Infinity); i++) {
        sum += encode(fileSegmentText(files[i])).length;
        if (performance.now() - last > 100) {
          opts.onProgress(i + 1, files.length);
          await new Promise((r) => setImmediate(r));
          last = performance.now();
        }
      }
    }
    const docOpts = { budgetTokens: opts.budgetTokens, countTokens: (text: string) => encode(text).length };
    const manifestPath = opts.stateDir ? join(opts.stateDir, `${contextKey(roots, opts)}.json`) : undefined;
    const prev = manifestPath ? readManifest(manifestPath) : undefined;
    let document: RepoDocument;
    let invalidation: Invalidation | null = null;
    if (prev) {
      const r = updateDocument(prev, walk, docOpts);
      document = r.document;
      invalidation = r.invalidation;
    } else {
      document = buildDocument(walk, docOpts);
    }
    const segmentTokens = document.segments.map((s) => encode(s.text));
    const t2 = performance.now();
    if (manifestPath) writeManifest(manifestPath, manifestOf(document));
    const tokens = segmentTokens.reduce((n, s) => n + s.length, 0);
    return new RepoContext(roots, walk, document, segmentTokens, {
      files: walk.files.length,
      excluded: walk.excluded.length,
      tokens,
      walkMs: t1 - t0,
      tokenizeMs: t2 - t1,
      invalidation,
    });
  }
}

function contextKey(roots: string[], opts: RepoContextOptions): string {
  return createHash('sha256')
    .update(JSON.stringify({ roots, model: opts.modelKey ?? '' }))
    .digest('hex')
    .slice(0, 24);
}

function readManifest(path: string): DocumentManifest | undefined {
  try {
    return JSON.parse(readFileSync(path, 'utf8')) as DocumentManifest;
  } catch {
    return undefined; // first run, or a damaged file: build from scratch
  }
}

function writeManifest(path: string, m: DocumentManifest): void {
  try {
    mkdirSync(join(path, '..'), { recursive: true });
    const tmp = `${path}.tmp-${process.pid}`;
    writeFileSync(tmp, JSON.stringify(m));
    renameSync(tmp, path);
  } catch {
    // Not remembering the order only costs a longer re-prefill next time; never fail the answer for it.
  }
}
