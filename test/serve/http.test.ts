// `repokv serve` (HTTP mode) as a child process on loopback, driven by the official `openai` client:
// /v1/models, chat completions plain and streamed, /v1/completions, the repository prefix restored
// from the KV cache on the next request (usage.prompt_tokens_details.cached_tokens), stop sequences,
// seeded sampling, a client abort mid-stream cancels the generation and the server stays healthy,
// the bearer key, body and prompt limits, folders the server was not given, and a non-loopback bind
// refused without a key. The engine is real: a tiny synthetic model on the CPU backend.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync, type ChildProcess } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import OpenAI from 'openai';
import { testModel } from '../helpers/models.js';
import { startServe, stopServe } from '../helpers/serve-child.js';

const root = new URL('../..', import.meta.url).pathname;
const tmp = mkdtempSync(join(tmpdir(), 'repokv-http-'));
const repo = join(tmp, 'repo');
mkdirSync(join(repo, 'src'), { recursive: true });
writeFileSync(join(repo, 'README.md'), '# Demo\nA tiny fixture for the HTTP server.\n');
writeFileSync(join(repo, 'src', 'main.ts'), 'export function add(a: number, b: number) {\n  return a + b;\n}\n'.repeat(8));
const other = join(tmp, 'other');
mkdirSync(other);
const shared = join(tmp, 'shared');
mkdirSync(shared);
writeFileSync(join(shared, 'lib.py'), 'def mul(a, b):\n    return a * b\n\n'.repeat(12));

const KEY = 'test-key-123';
const model = testModel('qwen2', 'q8_0');
let child: ChildProcess;
let base = '';
let client: OpenAI;

before(async () => {
  ({ child, base } = await startServe(
    ['--host', '127.0.0.1', '--port', '0', '--model', model, '--backend', 'cpu', '--ctx', '2048', '--folder', repo, '--folder', shared, '--api-key', KEY, '--max-body-bytes', '65536', '--max-prompt-tokens', '1200'],
    { REPOKV_CACHE_DIR: join(tmp, 'cache'), REPOKV_API_KEY: '' },
  ));
  client = new OpenAI({ baseURL: base, apiKey: KEY, maxRetries: 0 });
});

after(async () => {
  await stopServe(child);
  rmSync(tmp, { recursive: true, force: true });
});

const health = async () => (await fetch(base.replace(/\/v1$/, '/health'), { headers: { authorization: `Bearer ${KEY}` } })).json() as Promise<{ cancelled: number; completed: number; generatedTokens: number; computedTokens: number; batch: { steps: number; rows: number; maxBatch: number } | null }>;

test('/v1/models lists the model', async () => {
  const list = await client.models.list();
  assert.deepEqual(
    list.data.map((m) => m.id),
    ['qwen2-tiny-q8_0-1'],
  );
});

test('chat completion, then the same repository prefix comes from the KV cache', async () => {
  const ask = (q: string) =>
    client.chat.completions.create({ model: 'any', messages: [{ role: 'user', content: q }], max_tokens: 6, temperature: 0, repokv: { folder: repo } } as OpenAI.ChatCompletionCreateParamsNonStreaming);
  const a = await ask('What does add do?');
  assert.equal(a.object, 'chat.completion');
  assert.equal(a.choices[0].message.role, 'assistant');
  assert.ok(a.choices[0].message.content!.length > 0);
  assert.equal(a.usage!.completion_tokens, 6);
  assert.equal(a.choices[0].finish_reason, 'length');
  assert.ok(a.usage!.prompt_tokens > 128, `repository prompt: ${a.usage!.prompt_tokens} tokens`);
  const b = await ask('And what about the README?');
  const cached = b.usage!.prompt_tokens_details!.cached_tokens!;
  assert.ok(cached >= 64, `cached ${cached}`);
  assert.ok(cached < b.usage!.prompt_tokens);
});

test('two concurrent sessions over one repository context compute the shared prefix once', async () => {
  const ask = (q: string) =>
    client.chat.completions.create({ model: 'm', messages: [{ role: 'user', content: q }], max_tokens: 4, temperature: 0, repokv: { folder: shared } } as OpenAI.ChatCompletionCreateParamsNonStreaming);
  const h0 = await health();
  const [a, b] = await Promise.all([ask('What does mul do?'), ask('Where is mul defined?')]);
  const h1 = await health();
  const computed = (r: OpenAI.ChatCompletion) => r.usage!.prompt_tokens - r.usage!.prompt_tokens_details!.cached_tokens!;
  const cached = a.usage!.prompt_tokens_details!.cached_tokens! + b.usage!.prompt_tokens_details!.cached_tokens!;
  // The repository block (well over a page of 64 tokens) is computed by one of them and restored by the other.
  assert.ok(Math.min(a.usage!.prompt_tokens, b.usage!.prompt_tokens) > 192);
  assert.ok(cached >= 192, `cached ${cached}`);
  assert.ok(computed(a) + computed(b) <= a.usage!.prompt_tokens + b.usage!.prompt_tokens - 192);
  // The server's own count of computed prompt tokens agrees with what usage reported.
  assert.equal(h1.computedTokens - h0.computedTokens, computed(a) + computed(b));
});

test('concurrent streams decode together (continuous batching): one engine step for several requests', async () => {
  const h0 = await health();
  const stream = async (q: string) => {
    const st = await client.chat.completions.create({ model: 'm', messages: [{ role: 'user', content: q }], max_tokens: 24, temperature: 0, stream: true, stream_options: { include_usage: true } });
    let text = '';
    let usage: OpenAI.CompletionUsage | undefined;
    let finish: string | null = null;
    for await (const c of st) {
      if (c.usage) usage = c.usage;
      text += c.choices[0]?.delta.content ?? '';
      finish = c.choices[0]?.finish_reason ?? finish;
    }
    return { text, usage, finish };
  };
  const rs = await Promise.all(['First question about add.', 'A second, different question.', 'Third one, about the README.'].map(stream));
  const h1 = await health();
  for (const r of rs) {
    assert.ok(r.finish === 'length' || r.finish === 'stop', String(r.finish));
    assert.ok(r.usage && r.usage.completion_tokens > 0);
  }
  const b0 = h0.batch ?? { steps: 0, rows: 0, maxBatch: 0 };
  const b1 = h1.batch!;
  // Prefills run one at a time, so the first request decodes alone for a while; once the others have
  // prefilled they join it: some steps carried more than one request.
  assert.ok(b1.maxBatch >= 2, `largest batch ${b1.maxBatch}`);
  assert.ok(b1.rows - b0.rows > b1.steps - b0.steps, `rows ${b1.rows - b0.rows} over ${b1.steps - b0.steps} steps`);
});

test('repository contexts by content hash: listed, used by id (its KV reused), 409 once the folder changes, 404 unknown', async () => {
  const list = (await (await fetch(`${base}/repokv/contexts`, { headers: { authorization: `Bearer ${KEY}` } })).json()) as { data: { id: string; folder: string; tokens: number }[] };
  const ctx = list.data.find((c) => c.folder.endsWith('shared'))!;
  assert.match(ctx.id, /^ctx-[0-9a-f]{24}$/);
  assert.ok(ctx.tokens > 100);
  const ask = (ext: Record<string, string>) =>
    client.chat.completions.create({ model: 'm', messages: [{ role: 'user', content: 'What is in lib.py?' }], max_tokens: 2, temperature: 0, repokv: ext } as OpenAI.ChatCompletionCreateParamsNonStreaming);
  const byFolder = (await ask({ folder: shared })) as OpenAI.ChatCompletion & { repokv?: { context: string } };
  assert.equal(byFolder.repokv?.context, ctx.id);
  const byId = await ask({ context: ctx.id });
  assert.equal(byId.usage!.prompt_tokens, byFolder.usage!.prompt_tokens);
  assert.ok(byId.usage!.prompt_tokens_details!.cached_tokens! >= byId.usage!.prompt_tokens - 64, 'the named context comes from the KV cache');
  await assert.rejects(ask({ context: 'ctx-000000000000000000000000' }), (e: { status?: number }) => e.status === 404);
  writeFileSync(join(shared, 'lib.py'), 'def mul(a, b):\n    return a * b * 1\n\n'.repeat(12));
  // The server's watcher sees the edit (debounced): then the old id no longer names the content.
  let status = 0;
  for (let i = 0; i < 40 && status !== 409; i++) {
    await new Promise((r) => setTimeout(r, 250));
    status = await ask({ context: ctx.id }).then(
      () => 200,
      (e: { status?: number; message?: string }) => (/has changed/.test(String(e.message)) ? (e.status ?? 0) : -1),
    );
  }
  assert.equal(status, 409);
});

test('streaming chat: role first, deltas add up to the plain answer, usage at the end, [DONE]', async () => {
  const messages: OpenAI.ChatCompletionMessageParam[] = [
    { role: 'system', content: 'You are terse.' },
    { role: 'user', content: 'Say something.' },
  ];
  const plain = await client.chat.completions.create({ model: 'm', messages, max_tokens: 8, temperature: 0 });
  const stream = await client.chat.completions.create({ model: 'm', messages, max_tokens: 8, temperature: 0, stream: true, stream_options: { include_usage: true } });
  let text = '';
  let role = '';
  let finish: string | null = null;
  let usage: OpenAI.CompletionUsage | undefined;
  for await (const c of stream) {
    if (c.usage) usage = c.usage;
    const ch = c.choices[0];
    if (!ch) continue;
    if (ch.delta.role) role = ch.delta.role;
    text += ch.delta.content ?? '';
    if (ch.finish_reason) finish = ch.finish_reason;
  }
  assert.equal(role, 'assistant');
  assert.equal(text, plain.choices[0].message.content);
  assert.equal(finish, plain.choices[0].finish_reason);
  assert.equal(usage?.completion_tokens, plain.usage!.completion_tokens);
  assert.equal(usage?.prompt_tokens, plain.usage!.prompt_tokens);
});

test('stop sequences cut the answer before the match; seeded sampling repeats; /v1/completions', async () => {
  const messages: OpenAI.ChatCompletionMessageParam[] = [{ role: 'user', content: 'Tell me a story.' }];
  const full = (await client.chat.completions.create({ model: 'm', messages, max_tokens: 16, temperature: 0 })).choices[0].message.content!;
  assert.ok(full.length >= 6, full);
  const stop = full.slice(Math.floor(full.length / 2), Math.floor(full.length / 2) + 3);
  const cut = await client.chat.completions.create({ model: 'm', messages, max_tokens: 16, temperature: 0, stop: [stop] });
  assert.equal(cut.choices[0].message.content, full.slice(0, full.indexOf(stop)));
  assert.equal(cut.choices[0].finish_reason, 'stop');

  const sampled = () => client.chat.completions.create({ model: 'm', messages, max_tokens: 8, temperature: 0.9, top_p: 0.9, seed: 7, top_k: 40 } as OpenAI.ChatCompletionCreateParamsNonStreaming);
  assert.equal((await sampled()).choices[0].message.content, (await sampled()).choices[0].message.content);

  const c = await client.completions.create({ model: 'm', prompt: 'def add(a, b):', max_tokens: 5, temperature: 0 });
  assert.equal(c.object, 'text_completion');
  assert.equal(c.usage!.completion_tokens, 5);
  let streamed = '';
  for await (const ch of await client.completions.create({ model: 'm', prompt: 'def add(a, b):', max_tokens: 5, temperature: 0, stream: true })) streamed += ch.choices[0]?.text ?? '';
  assert.equal(streamed, c.choices[0].text);
});

test('aborting a stream cancels the generation; the server keeps serving', async () => {
  const before = await health();
  const stream = await client.chat.completions.create({ model: 'm', messages: [{ role: 'user', content: 'Go on forever.' }], max_tokens: 1500, temperature: 0, stream: true });
  let got = 0;
  for await (const c of stream) {
    if (c.choices[0]?.delta.content) got++;
    if (got >= 2) {
      stream.controller.abort();
      break;
    }
  }
  let h = await health();
  for (let i = 0; i < 100 && h.cancelled === before.cancelled; i++) {
    await new Promise((r) => setTimeout(r, 50));
    h = await health();
  }
  assert.equal(h.cancelled, before.cancelled + 1);
  assert.ok(h.generatedTokens - before.generatedTokens < 1500, `generated ${h.generatedTokens - before.generatedTokens} tokens after the abort`);
  const next = await client.chat.completions.create({ model: 'm', messages: [{ role: 'user', content: 'Still there?' }], max_tokens: 3, temperature: 0 });
  assert.equal(next.usage!.completion_tokens, 3);
});

test('errors in OpenAI shape: 401 without the key, 413 oversized body, 400 long prompt and bad JSON, 403 unknown folder', async () => {
  const noKey = await fetch(`${base}/models`);
  assert.equal(noKey.status, 401);
  assert.equal(((await noKey.json()) as { error: { type: string } }).error.type, 'authentication_error');
  const wrong = new OpenAI({ baseURL: base, apiKey: 'nope', maxRetries: 0 });
  await assert.rejects(wrong.models.list(), (e: unknown) => e instanceof OpenAI.AuthenticationError && e.status === 401);

  await assert.rejects(
    client.chat.completions.create({ model: 'm', messages: [{ role: 'user', content: 'x'.repeat(70_000) }] }),
    (e: unknown) => e instanceof OpenAI.APIError && e.status === 413 && /larger than this server accepts/.test(e.message),
  );
  await assert.rejects(
    client.chat.completions.create({ model: 'm', messages: [{ role: 'user', content: 'lorem ipsum dolor '.repeat(800) }] }),
    (e: unknown) => e instanceof OpenAI.BadRequestError && (e.code as string) === 'context_length_exceeded',
  );
  await assert.rejects(
    client.chat.completions.create({ model: 'm', messages: [{ role: 'user', content: 'hi' }], repokv: { folder: other } } as OpenAI.ChatCompletionCreateParamsNonStreaming),
    (e: unknown) => e instanceof OpenAI.PermissionDeniedError && e.status === 403,
  );
  const bad = await fetch(`${base}/chat/completions`, { method: 'POST', headers: { authorization: `Bearer ${KEY}`, 'content-type': 'application/json' }, body: '{"messages": [' });
  assert.equal(bad.status, 400);
  const body = (await bad.json()) as { error: { message: string; type: string; code: string } };
  assert.equal(body.error.code, 'invalid_json');
  assert.equal(body.error.type, 'invalid_request_error');
  // The server is still healthy after all that.
  assert.equal((await client.models.list()).data.length, 1);
});

test('binding a non-loopback address without an API key is refused before listening', () => {
  const r = spawnSync(process.execPath, [join(root, 'bin', 'repokv.js'), 'serve', '--host', '0.0.0.0', '--port', '0', '--model', model, '--backend', 'cpu'], {
    encoding: 'utf8',
    env: { ...process.env, REPOKV_CACHE_DIR: join(tmp, 'cache2'), REPOKV_API_KEY: '' },
    timeout: 20_000,
  });
  assert.equal(r.status, 1, r.stderr);
  assert.match(r.stderr, /needs an API key: pass --api-key or set REPOKV_API_KEY/);
});
