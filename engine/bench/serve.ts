// `repokv bench serve`: the OpenAI-compatible server under concurrent streaming sessions, on loopback
// (SCBench's multi-request mode over HTTP). Prints one JSON object (--json) or a few lines of text.
//
// A `repokv serve` child process is started with K+1 generated repositories of the same shape and
// size (--folder each), then, with K concurrent streaming chat requests per phase:
//   shared        K sessions over ONE repository ("repokv": {"folder"}): its block is the common
//                 prefix, computed by the first request and restored from the KV cache by the others
//   independent   K sessions, each over its OWN repository of the same size: nothing to share
//   soak          K sessions asking turn after turn over the shared repository for --duration seconds
// Per phase: prompt tokens computed vs restored (the server's usage.cached_tokens), time to first
// token from the moment the request was sent (queueing included: the server decodes one request at a
// time), generated tokens per second over the phase's wall time, errors (non-200, error events, a
// stream without [DONE]; goal 0), and the server's resident memory (VmRSS) before and after, with its
// peak (VmHWM). A short warm-up request (no repository) goes first and is not counted.
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { spawn, type ChildProcess } from 'node:child_process';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { flagNumber, flagString, parseArgs } from '../commands/args.js';
import { resolveModel, BUILTIN_MODEL_NOTICE } from '../model/default-model.js';
import { sseData } from '../assistant/remote.js';
import { UserError } from '../errors.js';

const USAGE = `usage: repokv bench serve [options]
  --model FILE        GGUF model (default: the built-in synthetic model)
  --backend B         cpu | webgpu | reference (default cpu)
  --sessions K        concurrent sessions (default 4)
  --repo-bytes N      size of each generated repository (default 6000 bytes)
  --max-tokens N      tokens per answer (default 24)
  --duration S        seconds of the soak phase (default 20; 0 skips it)
  --ctx N             the server's context (default 4096)
  --json              one JSON object`;

interface Shot {
  ok: boolean;
  error?: string;
  ttftMs: number | null;
  promptTokens: number;
  cachedTokens: number;
  completionTokens: number;
}

interface Phase {
  requests: number;
  errors: number;
  prompt_tokens: number;
  cached_tokens: number;
  computed_tokens: number;
  completion_tokens: number;
  ttft_ms: { min: number; mean: number; p50: number; max: number } | null;
  wall_s: number;
  tokens_per_s: number;
  first_error?: string;
}

const WORDS = 'parse index cache page token prefix buffer stream request session model engine layer value count limit offset range block chunk queue worker'.split(' ');

/** A repository of TypeScript-like files, `bytes` long, different for every seed. */
function writeRepo(dir: string, seed: number, bytes: number): void {
  mkdirSync(join(dir, 'src'), { recursive: true });
  let s = (seed * 2654435761) >>> 0;
  const rnd = (n: number) => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return s % n;
  };
  const word = () => WORDS[rnd(WORDS.length)];
  writeFileSync(join(dir, 'README.md'), `# Service ${seed}\nA generated repository for the serve benchmark (${word()} ${word()}).\n`);
  let file = 0;
  let written = 0;
  while (written < bytes) {
    let text = '';
    for (let f = 0; f < 6 && written + text.length < bytes; f++) {
      const name = `${word()}${word()[0].toUpperCase()}${word().slice(1)}${rnd(1000)}`;
      text += `/** ${word()} the ${word()} of a ${word()} (${seed}.${file}.${f}). */\nexport function ${name}(${word()}: number, ${word()}Limit: number): number {\n  const ${word()} = ${rnd(997)} * ${word()}Limit;\n  return ${word()} > ${rnd(4096)} ? ${rnd(64)} : ${rnd(128)};\n}\n\n`;
    }
    writeFileSync(join(dir, 'src', `${word()}-${file}.ts`), text);
    written += text.length;
    file++;
  }
}

function memory(pid: number): { rss: number; hwm: number } {
  const st = readFileSync(`/proc/${pid}/status`, 'utf8');
  const kb = (k: string) => Number(new RegExp(`^${k}:\\s+(\\d+) kB`, 'm').exec(st)?.[1] ?? 0);
  return { rss: kb('VmRSS') / 1024, hwm: kb('VmHWM') / 1024 };
}

/** One streamed chat request; never throws (errors are counted). */
async function shot(base: string, folder: string, question: string, maxTokens: number): Promise<Shot> {
  const t0 = performance.now();
  const r: Shot = { ok: false, ttftMs: null, promptTokens: 0, cachedTokens: 0, completionTokens: 0 };
  try {
    const res = await fetch(`${base}/chat/completions`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ model: 'm', messages: [{ role: 'user', content: question }], max_tokens: maxTokens, temperature: 0, stream: true, stream_options: { include_usage: true }, repokv: { folder } }),
    });
    if (res.status !== 200) {
      r.error = `HTTP ${res.status}: ${(await res.text()).slice(0, 200)}`;
      return r;
    }
    let done = false;
    for await (const data of sseData(res.body!)) {
      if (data === '[DONE]') {
        done = true;
        break;
      }
      const j = JSON.parse(data) as { error?: { message: string }; choices?: { delta?: { content?: string } }[]; usage?: { prompt_tokens: number; completion_tokens: number; prompt_tokens_details?: { cached_tokens?: number } } };
      if (j.error) {
        r.error = j.error.message;
        return r;
      }
      if (j.choices?.[0]?.delta?.content && r.ttftMs === null) r.ttftMs = performance.now() - t0;
      if (j.usage) {
        r.promptTokens = j.usage.prompt_tokens;
        r.completionTokens = j.usage.completion_tokens;
        r.cachedTokens = j.usage.prompt_tokens_details?.cached_tokens ?? 0;
      }
    }
    if (!done) r.error = 'the stream ended without [DONE]';
    else r.ok = true;
  } catch (e) {
    r.error = (e as Error).message;
  }
  return r;
}

function summarize(shots: Shot[], wallMs: number): Phase {
  const ok = shots.filter((s) => s.ok);
  const ttfts = ok.map((s) => s.ttftMs).filter((t): t is number => t !== null).sort((a, b) => a - b);
  const sum = (f: (s: Shot) => number) => ok.reduce((n, s) => n + f(s), 0);
  const completion = sum((s) => s.completionTokens);
  const p: Phase = {
    requests: shots.length,
    errors: shots.length - ok.length,
    prompt_tokens: sum((s) => s.promptTokens),
    cached_tokens: sum((s) => s.cachedTokens),
    computed_tokens: sum((s) => s.promptTokens - s.cachedTokens),
    completion_tokens: completion,
    ttft_ms: ttfts.length ? { min: Math.round(ttfts[0]), mean: Math.round(ttfts.reduce((a, b) => a + b, 0) / ttfts.length), p50: Math.round(ttfts[Math.floor(ttfts.length / 2)]), max: Math.round(ttfts[ttfts.length - 1]) } : null,
    wall_s: +(wallMs / 1000).toFixed(2),
    tokens_per_s: +(completion / (wallMs / 1000)).toFixed(2),
  };
  const firstError = shots.find((s) => !s.ok)?.error;
  if (firstError) p.first_error = firstError;
  return p;
}

export async function run(args: string[]): Promise<number> {
  const p = parseArgs(args, ['json', 'help']);
  if (p.flags.has('help')) {
    console.log(USAGE);
    return 0;
  }
  if (process.platform !== 'linux') throw new UserError('bench serve reads the server\'s memory from /proc: Linux only');
  const resolved = resolveModel(flagString(p, 'model'));
  if (resolved.builtin) console.error(BUILTIN_MODEL_NOTICE);
  const backend = flagString(p, 'backend') ?? 'cpu';
  const K = Math.max(1, flagNumber(p, 'sessions', 4));
  const repoBytes = flagNumber(p, 'repo-bytes', 6000);
  const maxTokens = flagNumber(p, 'max-tokens', 24);
  const duration = flagNumber(p, 'duration', 20);
  const ctx = flagNumber(p, 'ctx', 4096);
  const json = p.flags.has('json');

  const tmp = mkdtempSync(join(tmpdir(), 'repokv-bench-serve-'));
  const repos = Array.from({ length: K + 1 }, (_, i) => join(tmp, `repo${i}`));
  repos.forEach((r, i) => writeRepo(r, i + 1, repoBytes));
  const bin = fileURLToPath(new URL('../../bin/repokv.js', import.meta.url));
  let child: ChildProcess | null = null;
  try {
    const c = spawn(process.execPath, [bin, 'serve', '--port', '0', '--model', resolved.path, '--backend', backend, '--ctx', String(ctx), ...repos.flatMap((r) => ['--folder', r])], {
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { ...process.env, REPOKV_CACHE_DIR: join(tmp, 'cache'), REPOKV_API_KEY: '' },
    });
    child = c;
    let err = '';
    c.stderr!.on('data', (d) => (err = (err + d).slice(-4000)));
    const tStart = performance.now();
    const base = await new Promise<string>((ok, fail) => {
      let out = '';
      c.stdout!.on('data', (d) => {
        out += d;
        const m = /(http:\/\/127\.0\.0\.1:\d+\/v1)/.exec(out);
        if (m) ok(m[1]);
      });
      c.once('exit', (code) => fail(new UserError(`the server exited before listening (code ${code}): ${err.trim().split('\n').pop()}`)));
    });
    const startMs = performance.now() - tStart;
    // One short request first (no repository), so that the backend's first-step set-up is not billed to a phase.
    const warm = await fetch(`${base}/chat/completions`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ messages: [{ role: 'user', content: 'Hello' }], max_tokens: 2 }) });
    if (warm.status !== 200) throw new UserError(`the server's warm-up request failed (HTTP ${warm.status})`);
    await warm.text();
    const before = memory(c.pid!);
    const phase = async (folderOf: (i: number) => string, tag: string): Promise<Phase> => {
      const t0 = performance.now();
      const shots = await Promise.all(Array.from({ length: K }, (_, i) => shot(base, folderOf(i), `Session ${tag}${i}: where is the ${WORDS[i % WORDS.length]} logic, and what calls it?`, maxTokens)));
      return summarize(shots, performance.now() - t0);
    };
    const shared = await phase(() => repos[0], 's');
    const afterShared = memory(c.pid!);
    const independent = await phase((i) => repos[i + 1], 'i');
    let soak: (Phase & { rss_before_mb: number; rss_after_mb: number }) | null = null;
    if (duration > 0) {
      const rssBefore = memory(c.pid!).rss;
      const end = performance.now() + duration * 1000;
      const t0 = performance.now();
      const shots: Shot[] = [];
      await Promise.all(
        Array.from({ length: K }, async (_, i) => {
          for (let turn = 0; performance.now() < end; turn++) shots.push(await shot(base, repos[0], `Soak session ${i}, turn ${turn}: explain the ${WORDS[(i + turn) % WORDS.length]} path.`, maxTokens));
        }),
      );
      soak = { ...summarize(shots, performance.now() - t0), rss_before_mb: Math.round(rssBefore), rss_after_mb: Math.round(memory(c.pid!).rss) };
    }
    const after = memory(c.pid!);
    const health = (await (await fetch(base.replace(/\/v1$/, '/health'))).json()) as Record<string, number>;
    const rec = {
      bench: 'serve',
      model: resolved.path.split('/').pop(),
      backend,
      sessions: K,
      repo_bytes: repoBytes,
      max_tokens: maxTokens,
      server_start_ms: Math.round(startMs),
      shared,
      independent,
      computed_ratio: independent.computed_tokens ? +(shared.computed_tokens / independent.computed_tokens).toFixed(3) : null,
      soak,
      errors: shared.errors + independent.errors + (soak?.errors ?? 0),
      server: { rss_before_mb: Math.round(before.rss), rss_after_shared_mb: Math.round(afterShared.rss), rss_after_mb: Math.round(after.rss), rss_peak_mb: Math.round(after.hwm), requests: health.requests, completed: health.completed, cancelled: health.cancelled },
    };
    if (json) console.log(JSON.stringify(rec));
    else {
      const line = (name: string, x: Phase) =>
        `${name.padEnd(12)} ${x.requests} requests, ${x.errors} errors · prompt ${x.prompt_tokens} tokens: ${x.computed_tokens} computed, ${x.cached_tokens} from cache · first token mean ${x.ttft_ms?.mean ?? '-'} ms (min ${x.ttft_ms?.min ?? '-'}, p50 ${x.ttft_ms?.p50 ?? '-'}, max ${x.ttft_ms?.max ?? '-'}) · ${x.tokens_per_s} tokens/s over ${x.wall_s} s`;
      console.log(`bench serve: ${K} concurrent streaming sessions, ${rec.model} on ${backend}, repositories of ${repoBytes} bytes`);
      console.log(line('shared', shared));
      console.log(line('independent', independent));
      if (soak) console.log(line('soak', soak) + ` · RSS ${soak.rss_before_mb} → ${soak.rss_after_mb} MiB`);
      console.log(`server RSS ${rec.server.rss_before_mb} MiB before, ${rec.server.rss_after_mb} MiB after (peak ${rec.server.rss_peak_mb}); errors ${rec.errors}`);
    }
    return rec.errors ? 1 : 0;
  } finally {
    if (child && child.exitCode === null) {
      const gone = new Promise((r) => child!.once('exit', r));
      child.kill('SIGTERM');
      await Promise.race([gone, new Promise((r) => setTimeout(r, 5000))]);
      if (child.exitCode === null) child.kill('SIGKILL');
    }
    rmSync(tmp, { recursive: true, force: true });
  }
}
