// repokv ask <folder...> "question" [--session ID | --new-session] [--model F] [--backend B] [--ctx N]
//   [--max-tokens N] [--temperature T] [--json] [--endpoint URL [--api-model NAME] [--api-key-env VAR]]
// The main job: the repository goes into the model's context once (its KV cached on disk), the
// question after it; the answer streams to stdout, a status line to stderr. A second question, in
// this or a later process, recomputes only what changed and the new question.
// With --endpoint, an OpenAI-compatible server answers (engine/assistant/remote.ts): the repository
// block is built here and sent first, byte-identical, so the server's prefix cache reuses it.

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
  --ctx N            context size in tokens (default: the model's, at most 32768); above 32768 the
                     prefill goes sparse (MInference patterns; \`repokv calibrate\` tunes them per head)
  --retrieval        decode through retrieval attention once the context reaches 16K tokens
  --max-tokens N     answer length limit (default 256)
  --context-budget N most tokens the repository may take (default: the context less the conversation's share)
  --temperature T    0 = greedy (default 0)
  --json             print one JSON object with the answer and the measurements
  --endpoint URL     answer with an OpenAI-compatible server instead (vLLM, SGLang, llama-server,
                     Ollama, repokv serve), e.g. http://gpu-box:8000/v1; the repository is read here
  --api-model NAME   the server's model (default: the first it lists)
  --api-key-env VAR  environment variable holding the server's API key (default REPOKV_API_KEY);
                     never pass a key on the command line
  --ctx N            with --endpoint: the remote model's context when the server does not report it`;

export async function run(args: string[]): Promise<number> {
  const p = parseArgs(args, ['json', 'help', 'retrieval']);
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
  const endpoint = flagString(p, 'endpoint');
  if (p.flags.has('api-key')) throw new UserError('ask takes no --api-key (a key on the command line lands in shell history); put it in REPOKV_API_KEY, or name another variable with --api-key-env');
  if (!endpoint && (p.flags.has('api-model') || p.flags.has('api-key-env'))) throw new UserError('--api-model and --api-key-env go with --endpoint URL');
  const keyVar = flagString(p, 'api-key-env') ?? 'REPOKV_API_KEY';
  if (endpoint && flagString(p, 'model')) throw new UserError('--model is a local GGUF file; with --endpoint name the server\'s model with --api-model');
  const service = new AssistantService({
    cacheDir: cacheDir(),
    model: flagString(p, 'model'),
    backend: (flagString(p, 'backend') ?? 'auto') as BackendChoice,
    contextSize: p.flags.has('ctx') ? flagNumber(p, 'ctx', 8192) : 32768,
    retrieval: p.flags.has('retrieval'),
    contextBudget: p.flags.has('context-budget') ? flagNumber(p, 'context-budget', 0) : undefined,
    remote: endpoint
      ? { endpoint, model: flagString(p, 'api-model'), apiKey: process.env[keyVar] || undefined, keyHint: `put the server's key in ${keyVar}`, contextTokens: p.flags.has('ctx') ? flagNumber(p, 'ctx', 32768) : undefined }
      : undefined,
  });
  const model = service.model();
  if (model.notice) console.error(model.notice);
  if (model.remote && !json) console.error(`repokv: answering with the remote engine at ${model.remote.endpoint}: ${model.remote.notice}`);
  try {
    if (!endpoint) await service.loadEngine();
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
          `repokv: ${s.files} files (${s.excluded} left out), ${endpoint ? `about ${s.tokens} tokens (estimated here)` : `${s.tokens} tokens`}` +
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
    const out = { session: m.session, backend: m.backend, ...(m.remote ? { endpoint: m.remote.endpoint, model: m.remote.model, cachedReported: m.remote.cachedReported, notice: model.remote?.notice } : {}), promptTokens: m.promptTokens, cachedTokens: m.cachedTokens, sparsePrefill: !!m.sparsePrefill, computedTokens: m.computedTokens, repoTokens: m.repoTokens, files: m.files, loadMs: Math.round(tLoad - t0), prefillMs: m.prefillMs, timeToFirstTokenMs: m.timeToFirstTokenMs, answerTokens: m.answerTokens, tokensPerSecond: m.tokensPerSecond, stopReason: m.stopReason };
    if (json) console.log(JSON.stringify({ answer, ...out }));
    else {
      process.stdout.write('\n');
      const prompt = m.remote
        ? m.remote.cachedReported
          ? `prompt ${m.promptTokens} tokens (${m.cachedTokens} cached by the remote, ${m.computedTokens} computed there)`
          : `prompt ${m.promptTokens} tokens (the remote reports no cached-token count)`
        : `prompt ${m.promptTokens} tokens (${m.cachedTokens} from cache, ${m.computedTokens} computed${m.sparsePrefill ? ', sparse prefill' : ''})`;
      console.error(
        `repokv: session ${m.session} · ${prompt} · ` +
          `first token ${(m.timeToFirstTokenMs / 1000).toFixed(2)} s · ${m.tokensPerSecond ? m.tokensPerSecond.toFixed(1) : '-'} tokens/s · ${m.backend}` +
          `\nrepokv: continue with --session ${m.session}`,
      );
    }
    return 0;
  } finally {
    await service.close();
  }
}
