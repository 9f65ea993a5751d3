// repokv ask <folder...> "question" [--session ID | --new-session] [--model F] [--backend B] [--ctx N]
//   [--max-tokens N] [--temperature T] [--json]
// The main job: the repository goes into the model's context once (its KV cached on disk), the
// question after it; the answer streams to stdout, a status line to stderr. A second question, in
// this or a later process, recomputes only what changed and the new question.

import { existsSync, statSync } from 'node:fs';
import type { BackendChoice } from '../engine.js';
import { UserError } from '../errors.js';
import { cacheDir } from '../paths.js';
import { AssistantService } from '../assistant/service.js';
import { flagNumber, flagString, parseArgs } from './args.js';

const USAGE = `usage: repokv ask <folder...> "question" [options]
  --session ID       continue (or start) the multi-turn session ID; its KV is reused
  --model FILE       GGUF model (default: $REPOKV_MODEL, else the built-in synthetic model)
  --backend B        auto | cpu | webgpu | reference (default auto: a GPU if there is one, else the CPU)
  --ctx N            context size in tokens (default: the model's, at most 32768)
  --max-tokens N     answer length limit (default 256)
  --temperature T    0 = greedy (default 0)
  --json             print one JSON object with the answer and the measurements`;

export async function run(args: string[]): Promise<number> {
  const p = parseArgs(args, ['json', 'help']);
  if (p.flags.has('help')) {
    console.log(USAGE);
    return 0;
  }
  if (p.positional.length < 2) throw new UserError(`ask needs a folder and a question\n${USAGE}`);
  const question = p.positional[p.positional.length - 1];
  const roots = p.positional.slice(0, -1);
  for (const r of roots) {
    if (!existsSync(r)) throw new UserError(`folder "${r}" does not exist`);
    if (!statSync(r).isDirectory()) throw new UserError(`"${r}" is not a folder`);
  }
  const json = p.flags.has('json');
  const maxTokens = flagNumber(p, 'max-tokens', 256);
  const t0 = performance.now();
  const service = new AssistantService({
    cacheDir: cacheDir(),
    model: flagString(p, 'model'),
    backend: (flagString(p, 'backend') ?? 'auto') as BackendChoice,
    contextSize: p.flags.has('ctx') ? flagNumber(p, 'ctx', 8192) : 32768,
  });
  const model = service.model();
  if (model.notice) console.error(model.notice);
  try {
    await service.loadEngine();
    const tLoad = performance.now();
    const ac = new AbortController();
    process.once('SIGINT', () => ac.abort());
    let lastProgress = 0;
    const { answer, status: m } = await service.ask({
      question,
      sessionId: flagString(p, 'session'),
      roots,
      maxTokens,
      temperature: flagNumber(p, 'temperature', 0),
      signal: ac.signal,
      onContext: (s) => {
        if (json) return;
        const inv = s.invalidation;
        console.error(
          `repokv: ${s.files} files (${s.excluded} left out), ${s.tokens} tokens` +
            (inv ? `; ${inv.unchanged ? 'unchanged since last run' : `changed from ${inv.path ?? 'the start'} on (${inv.recomputedTokens} tokens to recompute)`}` : '; first run'),
        );
      },
      onProgress: (pr) => {
        const now = performance.now();
        if (pr.stage === 'prefill' && !json && process.stderr.isTTY && now - lastProgress > 250) {
          lastProgress = now;
          process.stderr.write(`\rprefill ${pr.done}/${pr.total} tokens`);
        }
      },
      onToken: (text) => {
        if (lastProgress && !json && process.stderr.isTTY) {
          process.stderr.write('\r\x1b[K');
          lastProgress = 0;
        }
        if (!json) process.stdout.write(text);
      },
    });
    const out = { session: m.session, backend: m.backend, promptTokens: m.promptTokens, cachedTokens: m.cachedTokens, computedTokens: m.computedTokens, repoTokens: m.repoTokens, files: m.files, loadMs: Math.round(tLoad - t0), prefillMs: m.prefillMs, timeToFirstTokenMs: m.timeToFirstTokenMs, answerTokens: m.answerTokens, tokensPerSecond: m.tokensPerSecond, stopReason: m.stopReason };
    if (json) console.log(JSON.stringify({ answer, ...out }));
    else {
      process.stdout.write('\n');
      console.error(
        `repokv: session ${m.session} · prompt ${m.promptTokens} tokens (${m.cachedTokens} from cache, ${m.computedTokens} computed) · ` +
          `first token ${(m.timeToFirstTokenMs / 1000).toFixed(2)} s · ${m.tokensPerSecond ? m.tokensPerSecond.toFixed(1) : '-'} tokens/s · ${m.backend}` +
          `\nrepokv: continue with --session ${m.session}`,
      );
    }
    return 0;
  } finally {
    await service.close();
  }
}
