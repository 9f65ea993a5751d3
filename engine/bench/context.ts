// `repokv bench context`: the repository document on a large tree (default: the typescript package in
// this checkout's node_modules). One JSON object per measurement (--json):
//   walk       files, MB, MB/s (ignore rules, sniffing, secret scan, hashing)
//   tokenize   tokens/s and MB/s for the worker pool at each --threads count, cold (fresh workers,
//              empty word caches) and warm (the same texts again), against one thread in-process;
//              cpu_seconds (all threads of the process) beside the wall time shows whether threads
//              ran in parallel or waited for a core
//   document   layout time and total tokens
//   edit       after a one-file edit in the middle of the order: tokens recomputed vs total, split into
//              the edited file, the files after it (moved up) and the footer; then the same file
//              edited again; then an unchanged tree
// The machine's load average is reported beside the times: tokens/s on a shared machine are only
// comparable within one run.
import { cpSync, mkdtempSync, rmSync, utimesSync, writeFileSync } from 'node:fs';
import { availableParallelism, loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { flagString, parseArgs } from '../commands/args.js';
import { UserError } from '../errors.js';
import { meta, writeGGUF } from '../gguf/writer.js';
import { syntheticTokenizerMetadata } from '../text/synthetic.js';
import { buildDocument, countingFrom, fileSegmentText, refreshWalk, TokenizerPool, tokenizeHere, updateDocument, walkRepository, type Invalidation } from '../context/index.js';

const USAGE = `usage: repokv bench context [options]
  --tree DIR       the tree to index (default: node_modules/typescript of this checkout)
  --model FILE     GGUF model whose tokenizer to use (default: the synthetic qwen2 tokenizer)
  --threads LIST   pool sizes to measure, comma-separated (default 1,2)
  --json           one JSON object per measurement`;

const repoRoot = fileURLToPath(new URL('../..', import.meta.url));

export async function run(args: string[]): Promise<number> {
  const p = parseArgs(args, ['json', 'help']);
  if (p.flags.has('help')) {
    console.log(USAGE);
    return 0;
  }
  const json = p.flags.has('json');
  const tree = flagString(p, 'tree') ?? join(repoRoot, 'node_modules', 'typescript');
  const threadsList = (flagString(p, 'threads') ?? '1,2').split(',').map(Number);
  if (threadsList.some((t) => !Number.isInteger(t) || t < 1)) throw new UserError('--threads takes a comma-separated list of positive integers');
  const tmp = mkdtempSync(join(tmpdir(), 'repokv-bench-context-'));
  const emit = (o: Record<string, unknown>) => {
    const row = { bench: 'context', ...o, load_avg_1m: +loadavg()[0].toFixed(2), cores: availableParallelism(), node: process.version };
    if (json) console.log(JSON.stringify(row));
    else console.log(Object.entries(row).map(([k, v]) => `${k}=${typeof v === 'number' ? +v.toFixed(3) : v}`).join(' '));
  };
  try {
    let model = flagString(p, 'model');
    if (!model) {
      model = join(tmp, 'qwen2-tokenizer.gguf');
      writeGGUF(model, { metadata: [['general.architecture', meta.str('qwen2')], ...syntheticTokenizerMetadata('qwen2')], tensors: [] });
    }

    // walk
    let t = performance.now();
    const walk = await walkRepository([tree]);
    let s = (performance.now() - t) / 1000;
    const bytes = walk.files.reduce((a, f) => a + f.size, 0);
    emit({ what: 'walk', tree, files: walk.files.length, excluded: walk.excluded.length, mb: bytes / 1e6, seconds: s, mb_per_s: bytes / 1e6 / s });

    // tokenize: in-process reference, then the pool
    const texts = walk.files.map(fileSegmentText);
    const chars = texts.reduce((a, x) => a + x.length, 0);
    const mb = Buffer.byteLength(texts.join('')) / 1e6;
    t = performance.now();
    const cpuRef = process.cpuUsage();
    const ref = tokenizeHere(model, texts);
    s = (performance.now() - t) / 1000;
    const cpuR = process.cpuUsage(cpuRef);
    const tokens = ref.reduce((a, x) => a + x.length, 0);
    emit({ what: 'tokenize', engine: 'in-process', threads: 1, cache: 'cold', files: texts.length, chars, tokens, seconds: s, cpu_seconds: (cpuR.user + cpuR.system) / 1e6, tokens_per_s: tokens / s, mb_per_s: mb / s });
    const base: Record<string, number> = {};
    let poolTokens: Int32Array[] = [];
    for (const threads of threadsList) {
      const pool = new TokenizerPool(model, { threads });
      try {
        await pool.tokenize(Array.from({ length: threads * 2 }, () => 'warm up the workers')); // start threads, load tokenizers
        for (const cache of ['cold', 'warm'] as const) {
          t = performance.now();
          const cpu0 = process.cpuUsage();
          poolTokens = await pool.tokenize(texts);
          s = (performance.now() - t) / 1000;
          const cpu = process.cpuUsage(cpu0);
          const n = poolTokens.reduce((a, x) => a + x.length, 0);
          if (n !== tokens) throw new Error(`pool gave ${n} tokens, in-process ${tokens}`);
          base[cache] ??= s;
          emit({ what: 'tokenize', engine: 'pool', threads, cache, files: texts.length, chars, tokens, seconds: s, cpu_seconds: (cpu.user + cpu.system) / 1e6, tokens_per_s: tokens / s, mb_per_s: mb / s, speedup_vs_first: base[cache] / s });
        }
      } finally {
        await pool.close();
      }
    }

    // document
    const exact = countingFrom(texts, poolTokens, (x) => tokenizeHere(model!, [x])[0].length);
    t = performance.now();
    const doc = buildDocument(walk, { countTokens: exact });
    emit({ what: 'document', segments: doc.segments.length, total_tokens: doc.totalTokens, total_mb: doc.totalBytes / 1e6, seconds: (performance.now() - t) / 1000 });

    // one-file edit in the middle of the order, on a copy of the tree
    const copy = join(tmp, 'tree');
    cpSync(tree, copy, { recursive: true });
    let w = await walkRepository([copy]);
    let d = buildDocument(w, { countTokens: exact });
    const files = d.segments.filter((x) => x.kind === 'file');
    const mid = files[Math.floor(files.length / 2)];
    const midIndex = d.segments.indexOf(mid);
    const abs = join(copy, mid.path!);
    const original = w.files.find((f) => f.path === mid.path)!.text;
    const report = (what: string, inv: Invalidation, edited: number, ms: number) => {
      const footer = d.segments[d.segments.length - 1].tokens;
      emit({
        what,
        file: mid.path,
        segment_before_edit: midIndex,
        files: files.length,
        total_tokens: inv.totalTokens,
        kept_tokens: inv.tokens,
        recomputed_tokens: inv.recomputedTokens,
        edited_file_tokens: edited,
        moved_tail_tokens: Math.max(0, inv.recomputedTokens - edited - footer),
        footer_tokens: footer,
        recomputed_fraction: inv.recomputedTokens / inv.totalTokens,
        update_ms: ms,
      });
    };
    for (const [i, what] of (['edit-middle', 'edit-same-file-again'] as const).entries()) {
      writeFileSync(abs, original + `// edit ${i}\n`);
      utimesSync(abs, 2_000_000_000 + i, 2_000_000_000 + i);
      t = performance.now();
      w = await refreshWalk(w, [abs]);
      const u = updateDocument(d, w, { countTokens: exact });
      const ms = performance.now() - t;
      d = u.document;
      report(what, u.invalidation, d.segments.find((x) => x.path === mid.path)!.tokens, ms);
    }
    t = performance.now();
    w = await walkRepository([copy]);
    const same = updateDocument(d, w, { countTokens: exact });
    report('unchanged-tree', same.invalidation, 0, performance.now() - t);
    return 0;
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
}
