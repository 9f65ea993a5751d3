// `repokv index <folder...>`: the repository document of one or more folders — what enters the
// context, what was left out and why (--explain), its size in tokens (estimated, or exact with
// --model), and with --watch how each change invalidates it. (Prefilling it into the KV cache is the
// Engine's part.)
import { flagNumber, flagString, parseArgs } from './args.js';
import { UserError } from '../errors.js';
import {
  buildDocument,
  countingFrom,
  documentText,
  estimateTokens,
  EXCLUSION_REASONS,
  fileSegmentText,
  refreshWalk,
  RepoWatcher,
  TokenizerPool,
  tokenizeHere,
  updateDocument,
  walkRepository,
  type RepoDocument,
  type TokenizeProgress,
  type WalkOptions,
  type WalkResult,
} from '../context/index.js';

const USAGE = `usage: repokv index <folder...> [options]
  --explain          list every file and folder left out, with its reason code, and the budget decisions
  --json             print one JSON object (files, exclusions, document segments, timings)
  --print            print the document itself
  --model FILE       count tokens with this GGUF model's tokenizer (worker threads; default: chars/3.5)
  --threads N        tokenizer threads (default: all cores)
  --budget N         token budget of the document (default: none)
  --max-file-kb N    leave out files larger than this (default 1024)
  --exclude GLOBS    extra exclude patterns, comma-separated (gitignore syntax)
  --include GLOBS    only files matching these patterns, comma-separated
  --no-default-excludes  do not exclude node_modules, dist, lock files … by default
  --no-git           order by modification time even in a git repository
  --watch            keep watching; print how each change invalidates the document
  --prefill          also prefill the repository into the KV cache (with --model, $REPOKV_MODEL or the
                     built-in model), so the first question computes only itself; prints cached vs computed
  --backend B        backend for --prefill: auto | cpu | webgpu | reference`;

const BOOLEANS = ['explain', 'json', 'print', 'help', 'no-default-excludes', 'no-git', 'watch', 'prefill'];
const KNOWN = new Set([...BOOLEANS, 'model', 'threads', 'budget', 'max-file-kb', 'exclude', 'include', 'backend']);

function list(v: string | undefined): string[] | undefined {
  return v === undefined ? undefined : v.split(',').map((s) => s.trim()).filter(Boolean);
}

function progressLine(p: TokenizeProgress): string {
  return `tokenizing: ${p.files}/${p.totalFiles} files, ${p.tokens} tokens, ${Math.round(p.tokensPerSecond)} tokens/s, ETA ${p.etaSeconds.toFixed(1)} s`;
}

async function counterFor(walk: WalkResult, model: string | undefined, threads: number | undefined, quiet: boolean): Promise<{ count: (t: string) => number; tokenizeMs?: number }> {
  if (!model) return { count: estimateTokens };
  const texts = walk.files.map(fileSegmentText);
  const t0 = performance.now();
  const pool = new TokenizerPool(model, threads ? { threads } : {});
  let last = 0;
  try {
    const tokens = await pool.tokenize(texts, (p) => {
      if (quiet) return;
      const now = performance.now();
      if (process.stderr.isTTY) process.stderr.write('\r' + progressLine(p) + '   ');
      else if (now - last > 1000 || p.files === p.totalFiles) {
        process.stderr.write(progressLine(p) + '\n');
        last = now;
      }
    });
    if (!quiet && process.stderr.isTTY) process.stderr.write('\n');
    const here = (t: string) => tokenizeHere(model, [t])[0].length;
    return { count: countingFrom(texts, tokens, here), tokenizeMs: performance.now() - t0 };
  } finally {
    await pool.close();
  }
}

function summary(walk: WalkResult, doc: RepoDocument, ms: { walk: number; tokenize?: number; document: number }, model: string | undefined): string {
  const reasons = new Map<string, number>();
  for (const e of walk.excluded) reasons.set(e.reason, (reasons.get(e.reason) ?? 0) + 1);
  const files = doc.segments.filter((s) => s.kind === 'file');
  const out = [
    `${walk.roots.map((r) => r.abs).join(', ')}: ${files.length} files, ${(doc.totalBytes / 1e6).toFixed(2)} MB, ${doc.totalTokens} tokens (${model ? 'tokenizer of ' + model : 'estimated at 3.5 characters a token; --model F counts exactly'})`,
    `left out: ${walk.excluded.length} files and folders${reasons.size ? ' (' + [...reasons].map(([k, v]) => `${k} ${v}`).join(', ') + ')' : ''}; --explain lists them`,
  ];
  if (doc.budgetTokens !== undefined) out.push(`budget ${doc.budgetTokens} tokens: ${doc.outlined.length} files outlined, ${doc.omitted.length} left out`);
  for (const r of walk.roots) {
    out.push(`order: ${r.git ? `git history (${r.git.commitsRead} commits), files being edited last` : 'modification times (not a git repository)'}${walk.roots.length > 1 ? ` for ${r.name}` : ''}`);
    for (const n of r.notes) out.push(`note: ${n}`);
  }
  out.push(`time: walk ${ms.walk.toFixed(0)} ms${ms.tokenize !== undefined ? `, tokenize ${ms.tokenize.toFixed(0)} ms` : ''}, document ${ms.document.toFixed(0)} ms`);
  return out.join('\n');
}

function explain(walk: WalkResult, doc: RepoDocument): string {
  const out: string[] = [];
  const used = [...new Set(walk.excluded.map((e) => e.reason))];
  if (used.length) {
    out.push('left out (reason  path  detail):');
    for (const e of walk.excluded) out.push(`  ${e.reason.padEnd(20)} ${e.path}  ${e.detail}`);
    out.push('reasons:');
    for (const r of used) out.push(`  ${r.padEnd(20)} ${EXCLUSION_REASONS[r]}`);
  } else out.push('nothing left out by the walk');
  for (const o of doc.outlined) out.push(`  budget-outline       ${o.path}  ${o.fullTokens} → ${o.tokens} tokens`);
  for (const o of doc.omitted) out.push(`  budget-${o.reason.padEnd(13)} ${o.path}  ${o.tokens} tokens`);
  const nonUtf8 = walk.files.filter((f) => f.encoding !== 'utf-8');
  for (const f of nonUtf8) out.push(`  note: ${f.path} decoded as ${f.encoding}`);
  return out.join('\n');
}

export async function run(args: string[]): Promise<number> {
  const p = parseArgs(args, BOOLEANS);
  if (p.flags.has('help')) {
    console.log(USAGE);
    return 0;
  }
  for (const k of p.flags.keys()) if (!KNOWN.has(k)) throw new UserError(`unknown option --${k} (see repokv index --help)`);
  if (!p.positional.length) throw new UserError('give the folder to index (see repokv index --help)');
  const json = p.flags.has('json');
  const model = flagString(p, 'model');
  const threads = p.flags.has('threads') ? flagNumber(p, 'threads', 0) : undefined;
  const budget = p.flags.has('budget') ? flagNumber(p, 'budget', 0) : undefined;
  const opts: WalkOptions = {
    maxFileBytes: flagNumber(p, 'max-file-kb', 1024) * 1024,
    defaultExcludes: !p.flags.has('no-default-excludes'),
    git: !p.flags.has('no-git'),
    ...(list(flagString(p, 'exclude')) ? { exclude: list(flagString(p, 'exclude')) } : {}),
    ...(list(flagString(p, 'include')) ? { include: list(flagString(p, 'include')) } : {}),
  };
  const t0 = performance.now();
  let walk = await walkRepository(p.positional, opts);
  const tWalk = performance.now() - t0;
  const { count, tokenizeMs } = await counterFor(walk, model, threads, json);
  const t1 = performance.now();
  let doc = buildDocument(walk, { countTokens: count, ...(budget !== undefined ? { budgetTokens: budget } : {}) });
  const ms = { walk: tWalk, ...(tokenizeMs !== undefined ? { tokenize: tokenizeMs } : {}), document: performance.now() - t1 };

  if (p.flags.has('print')) process.stdout.write(documentText(doc));
  else if (json) {
    console.log(
      JSON.stringify({
        roots: walk.roots,
        tokenizer: model ?? 'estimate (chars/3.5)',
        files: walk.files.map((f) => ({ path: f.path, bytes: f.size, encoding: f.encoding, group: f.change.group, commits: f.change.commits })),
        excluded: walk.excluded,
        reasons: EXCLUSION_REASONS,
        document: {
          format: doc.format,
          totalChars: doc.totalChars,
          totalBytes: doc.totalBytes,
          totalTokens: doc.totalTokens,
          budgetTokens: doc.budgetTokens ?? null,
          omitted: doc.omitted,
          outlined: doc.outlined,
          segments: doc.segments.map(({ text: _t, ...s }) => s),
        },
        ms,
      }),
    );
  } else {
    console.log(summary(walk, doc, ms, model));
    if (p.flags.has('explain')) console.log(explain(walk, doc));
  }

  if (p.flags.has('prefill')) await prefill(p.positional, opts, model, flagString(p, 'backend'), json);

  if (!p.flags.has('watch')) return 0;
  const count2 = model ? (t: string) => tokenizeHere(model, [t])[0].length : estimateTokens;
  const watcher = await RepoWatcher.start(walk, async (batch) => {
    const t = performance.now();
    walk = await refreshWalk(walk, batch.paths);
    const u = updateDocument(doc, walk, { countTokens: count2 });
    doc = u.document;
    const inv = u.invalidation;
    const line = inv.unchanged
      ? `${batch.paths.length} paths changed, document unchanged`
      : `${batch.paths.length} paths changed: kept ${inv.tokens} tokens (${inv.segment} segments), recompute ${inv.recomputedTokens} of ${inv.totalTokens} from ${inv.path ?? 'the footer'} (${(performance.now() - t).toFixed(0)} ms)`;
    if (json) console.log(JSON.stringify({ event: 'update', paths: batch.paths.length, rulesChanged: batch.rulesChanged, invalidation: inv }));
    else console.log(line);
  });
  if (!json) console.error(`watching ${watcher.watchedDirs()} folders; Ctrl-C to stop`);
  await new Promise<void>((resolve) => process.once('SIGINT', () => resolve()));
  await watcher.close();
  return 0;
}

/** Prefills the repository prefix into the persistent KV cache through the assistant service. */
async function prefill(roots: string[], walk: WalkOptions, model: string | undefined, backend: string | undefined, json: boolean): Promise<void> {
  const { AssistantService } = await import('../assistant/service.js');
  const { cacheDir } = await import('../paths.js');
  const svc = new AssistantService({ cacheDir: cacheDir(), model, backend: (backend ?? 'auto') as 'auto', walk });
  try {
    const info = svc.model();
    if (info.notice && !json) console.error(info.notice);
    const r = await svc.warm(roots, {
      onProgress: (p) => {
        if (!json && process.stderr.isTTY && p.stage === 'prefill') process.stderr.write(`\rprefill ${p.done}/${p.total} tokens`);
      },
    });
    if (!json && process.stderr.isTTY) process.stderr.write('\r\x1b[K');
    const pr = r.prefill;
    const rec = { event: 'prefill', prefixTokens: r.prefixTokens, cachedTokens: pr?.cachedTokens ?? 0, computedTokens: pr?.computedTokens ?? r.prefixTokens, fromDisk: pr?.fromDisk ?? 0, ms: Math.round(r.ms), backend: svc.model().backend };
    if (json) console.log(JSON.stringify(rec));
    else console.log(`prefilled: ${rec.prefixTokens} tokens of repository prefix, ${rec.cachedTokens} from cache (${rec.fromDisk} from disk), ${rec.computedTokens} computed, ${(rec.ms / 1000).toFixed(1)} s on ${rec.backend}`);
  } finally {
    await svc.close();
  }
}
