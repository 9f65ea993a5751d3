// repokv ask <folder...> "question" [--session ID | --new-session] [--model F] [--backend B] [--ctx N]
//   [--max-tokens N] [--temperature T] [--json]
// The main job: the repository goes into the model's context once (its KV cached on disk), the
// question after it; the answer streams to stdout, a status line to stderr. A second question, in
// this or a later process, recomputes only what changed and the new question.

import { existsSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { Engine, type BackendChoice } from '../engine.js';
import { UserError } from '../errors.js';
import { cacheDir } from '../paths.js';
import { BUILTIN_MODEL_NOTICE, resolveModel } from '../model/default-model.js';
import { RepoContext } from '../assistant/repo-context.js';
import { repoPromptTokens, SessionStore } from '../assistant/conversation.js';
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
  const resolved = resolveModel(flagString(p, 'model'));
  if (resolved.builtin) console.error(BUILTIN_MODEL_NOTICE);
  const maxTokens = flagNumber(p, 'max-tokens', 256);
  const t0 = performance.now();
  const base = cacheDir();
  const engine = await Engine.load({
    model: resolved.path,
    backend: (flagString(p, 'backend') ?? 'auto') as BackendChoice,
    contextSize: p.flags.has('ctx') ? flagNumber(p, 'ctx', 8192) : 32768,
    kv: { cacheDir: join(base, 'kv') },
  });
  try {
    const tLoad = performance.now();
    const store = new SessionStore(join(base, 'sessions'));
    const sid = flagString(p, 'session');
    const session = (sid && store.load(sid)) || store.create(roots, sid);
    const template = engine.chatTemplate;
    if (!template) throw new UserError(`${resolved.path}: the model has no chat template; use an instruct/chat model`);

    // The repository gets a fixed share of the context, the same on every turn (a budget that moved
    // with the conversation would change the document, and with it every cached page); the rest is
    // the conversation's: earlier turns, the question and the answer.
    const conversationShare = Math.min(8192, Math.max(1024, Math.floor(engine.contextSize / 4)));
    const budget = engine.contextSize - conversationShare;
    const repo = await RepoContext.open(roots, engine.tokenizer, {
      budgetTokens: budget,
      stateDir: join(base, 'contexts'),
      modelKey: engine.modelPath,
    });
    if (!json) {
      const s = repo.stats;
      const inv = s.invalidation;
      console.error(
        `repokv: ${s.files} files (${s.excluded} left out), ${s.tokens} tokens` +
          (inv ? `; ${inv.unchanged ? 'unchanged since last run' : `changed from ${inv.path ?? 'the start'} on (${inv.recomputedTokens} tokens to recompute)`}` : '; first run'),
      );
    }
    const prompt = repoPromptTokens(template, engine.tokenizer, repo.segmentTokens, session.turns, question);
    if (prompt.length + maxTokens > engine.contextSize) {
      throw new UserError(`session ${session.id} has outgrown the context (${prompt.length} prompt tokens + ${maxTokens} for the answer > ${engine.contextSize}); start a new session or raise --ctx`);
    }
    const seq = engine.createSequence(Math.min(engine.contextSize, prompt.length + maxTokens + 1));
    const ac = new AbortController();
    process.once('SIGINT', () => ac.abort());
    let lastProgress = 0;
    const logits = await engine.prefill(seq, prompt, {
      signal: ac.signal,
      onProgress: (done, total) => {
        const now = performance.now();
        if (!json && process.stderr.isTTY && now - lastProgress > 250) {
          lastProgress = now;
          process.stderr.write(`\rprefill ${done}/${total} tokens`);
        }
      },
    });
    if (!json && process.stderr.isTTY) process.stderr.write('\r\x1b[K');
    const tPrefill = performance.now();
    const report = seq.lastPrefill;
    const gen = engine.generate(seq, logits, { maxTokens, temperature: flagNumber(p, 'temperature', 0), signal: ac.signal });
    let r = await gen.next();
    let tFirst = 0;
    while (!r.done) {
      if (!tFirst) tFirst = performance.now();
      if (!json) process.stdout.write(r.value.text);
      r = await gen.next();
    }
    const tEnd = performance.now();
    const result = r.value;
    session.turns.push({ role: 'user', content: question }, { role: 'assistant', content: result.text, tokens: result.tokens });
    if (!session.title) session.title = question.slice(0, 80);
    store.save(session);
    await engine.flushCache();
    const m = {
      session: session.id,
      backend: engine.backend.info.name,
      promptTokens: prompt.length,
      cachedTokens: report?.cachedTokens ?? 0,
      computedTokens: report?.computedTokens ?? prompt.length,
      repoTokens: repo.stats.tokens,
      files: repo.stats.files,
      loadMs: Math.round(tLoad - t0),
      prefillMs: Math.round(tPrefill - tLoad),
      timeToFirstTokenMs: Math.round((tFirst || tEnd) - tLoad),
      answerTokens: result.tokens.length,
      tokensPerSecond: result.tokens.length > 1 && tFirst ? (result.tokens.length - 1) / ((tEnd - tFirst) / 1000) : null,
      stopReason: result.stopReason,
    };
    if (json) console.log(JSON.stringify({ answer: result.text, ...m }));
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
    await engine.close();
  }
}
