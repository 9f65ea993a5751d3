// Remote engines: RepoKV's own client (engine/assistant/remote.ts), the assistant service in remote
// mode, the extension's engine process in remote mode (EngineClient → `repokv serve --stdio` with an
// endpoint) and `repokv ask --endpoint`, all against a real `repokv serve` on loopback as the remote
// (a tiny synthetic model on the CPU backend). Checked: the streamed answer equals the official
// `openai` client's for the same request; the repository block is sent first and byte-identical, so
// the remote's prefix cache serves it (cached_tokens) on the next turn and in the next session; the
// key is sent; and unreachable endpoints, wrong keys, unknown models and non-OpenAI servers each end
// in one sentence.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync, type ChildProcess } from 'node:child_process';
import { createServer, type Server } from 'node:http';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { AddressInfo } from 'node:net';
import OpenAI from 'openai';
import { RemoteClient, normalizeEndpoint, remoteMessages, sseData, REMOTE_NOTICE } from '../../engine/assistant/remote.js';
import { AssistantService } from '../../engine/assistant/service.js';
import { UserError } from '../../engine/errors.js';
import { EngineClient } from '../../extension/engine-client.js';
import { Methods, type ContextStatus } from '../../engine/serve/protocol.js';
import { testModel } from '../helpers/models.js';
import { startServe, stopServe } from '../helpers/serve-child.js';

const root = new URL('../..', import.meta.url).pathname;
const tmp = mkdtempSync(join(tmpdir(), 'repokv-remote-'));
const repo = join(tmp, 'repo');
mkdirSync(join(repo, 'src'), { recursive: true });
writeFileSync(join(repo, 'README.md'), '# Demo\nA fixture repository answered about by a remote engine.\n');
writeFileSync(join(repo, 'src', 'math.ts'), 'export function add(a: number, b: number): number {\n  return a + b;\n}\n\nexport function mul(a: number, b: number): number {\n  return a * b;\n}\n'.repeat(6));

const KEY = 'remote-test-key';
const model = testModel('qwen2', 'q8_0');
let child: ChildProcess;
let base = '';
let other: Server;
let otherBase = '';

before(async () => {
  ({ child, base } = await startServe(['--port', '0', '--model', model, '--backend', 'cpu', '--ctx', '4096', '--api-key', KEY], { REPOKV_CACHE_DIR: join(tmp, 'server-cache'), REPOKV_API_KEY: '' }));
  // Not an OpenAI API: a web page on /v1/models, a bare 404 elsewhere.
  other = createServer((req, res) => {
    if (req.url === '/v1/models') {
      res.writeHead(200, { 'content-type': 'text/html' });
      res.end('<html><body>Welcome</body></html>');
    } else {
      res.writeHead(404, { 'content-type': 'text/plain' });
      res.end('Not Found');
    }
  });
  await new Promise<void>((r) => other.listen(0, '127.0.0.1', r));
  otherBase = `http://127.0.0.1:${(other.address() as AddressInfo).port}`;
});

after(async () => {
  other?.close();
  await stopServe(child);
  rmSync(tmp, { recursive: true, force: true });
});

/** Records the JSON bodies sent to /chat/completions by code in this process. */
function recordChatBodies(): { bodies: { messages: { role: string; content: string }[]; model: string; stream: boolean }[]; stop: () => void } {
  const orig = globalThis.fetch;
  const bodies: { messages: { role: string; content: string }[]; model: string; stream: boolean }[] = [];
  globalThis.fetch = (async (input: string | URL | Request, init?: RequestInit) => {
    if (String(input).endsWith('/chat/completions') && typeof init?.body === 'string') bodies.push(JSON.parse(init.body));
    return orig(input, init);
  }) as typeof fetch;
  return { bodies, stop: () => (globalThis.fetch = orig) };
}

test('endpoint URLs: a bare origin gets /v1, pasted routes point at their base, other schemes are refused', () => {
  assert.equal(normalizeEndpoint('http://gpu:8000'), 'http://gpu:8000/v1');
  assert.equal(normalizeEndpoint('http://gpu:8000/v1/'), 'http://gpu:8000/v1');
  assert.equal(normalizeEndpoint('https://x.example/api/v1/chat/completions'), 'https://x.example/api/v1');
  assert.throws(() => normalizeEndpoint('ftp://x'), /must be an http:\/\/ or https:\/\/ URL/);
  assert.throws(() => normalizeEndpoint('not a url'), /is not a URL/);
  assert.throws(() => normalizeEndpoint('http://u:p@x/v1'), /credentials in the URL/);
});

test('server-sent events: split across chunks, CRLF, comments, multi-line data', async () => {
  const enc = new TextEncoder();
  const parts = [': keep-alive\r\n\r\ndata: {"a"', ':1}\r\n\r\nda', 'ta: x\ndata: y\n\nevent: e\ndata: [DONE]\n\n'];
  const body = new ReadableStream<Uint8Array>({
    start(c) {
      for (const p of parts) c.enqueue(enc.encode(p));
      c.close();
    },
  });
  const got: string[] = [];
  for await (const d of sseData(body)) got.push(d);
  assert.deepEqual(got, ['{"a":1}', 'x\ny', '[DONE]']);
});

test('RemoteClient: /models with the context length; the streamed answer equals the official openai client\'s', async () => {
  const rc = new RemoteClient({ endpoint: base, apiKey: KEY });
  const models = await rc.models();
  assert.deepEqual(models, [{ id: 'qwen2-tiny-q8_0-1', contextTokens: 4096 }]);
  const messages = remoteMessages('# Demo\nfiles here\n', [], 'What is this?');
  // Both requests below find the prompt's first page cached: on the CPU backend restored and freshly
  // computed KV differ by rounding (up to 0.11 in logits here), enough to flip near-tied greedy tokens
  // of this random-weight model between a cold and a warm request.
  const warm = await rc.chat({ messages, maxTokens: 1, temperature: 0 });
  assert.equal(warm.usage!.cachedTokens, 0);
  const official = await new OpenAI({ baseURL: base, apiKey: KEY, maxRetries: 0 }).chat.completions.create({ model: models[0].id, messages, max_tokens: 8, temperature: 0 });
  const deltas: string[] = [];
  const r = await rc.chat({ messages, maxTokens: 8, temperature: 0, onDelta: (t) => deltas.push(t) });
  assert.equal(r.text, official.choices[0].message.content);
  assert.equal(deltas.join(''), r.text);
  assert.ok(deltas.length > 1, 'streamed in pieces');
  assert.equal(r.finishReason, official.choices[0].finish_reason === 'length' ? 'length' : 'stop');
  assert.equal(r.usage!.promptTokens, official.usage!.prompt_tokens);
  assert.equal(r.usage!.completionTokens, official.usage!.completion_tokens);
  // The same prompt again: the remote's prefix cache has it.
  assert.ok(r.usage!.cachedTokens! >= 64, `cached ${r.usage!.cachedTokens}`);
  assert.ok(r.timeToFirstTokenMs! > 0 && r.timeToFirstTokenMs! <= r.totalMs);
});

test('remote mode: repository block first and byte-identical; the next turn and the next session hit the remote prefix cache', async () => {
  const svc = new AssistantService({ cacheDir: join(tmp, 'svc'), remote: { endpoint: base, apiKey: KEY } });
  const rec = recordChatBodies();
  try {
    assert.equal(svc.model().remote?.notice, REMOTE_NOTICE);
    const ctx = await svc.openContext([repo]);
    assert.equal(ctx.files, 2);
    assert.ok(ctx.tokens > 100, `estimated ${ctx.tokens} tokens`);
    const deltas: string[] = [];
    const a = await svc.ask({ question: 'What does add do?', roots: [repo], maxTokens: 6, onToken: (t) => deltas.push(t) });
    assert.equal(deltas.join(''), a.answer);
    assert.equal(a.status.remote?.model, 'qwen2-tiny-q8_0-1');
    assert.equal(a.status.remote?.cachedReported, true);
    assert.ok(a.status.promptTokens > 200, `prompt ${a.status.promptTokens}`);
    const b = await svc.ask({ question: 'And mul?', sessionId: a.status.session, maxTokens: 6 });
    // The whole first prompt is a prefix of the second (the repository, the question, the answer as text).
    assert.ok(b.status.cachedTokens >= Math.floor(a.status.promptTokens / 64) * 64 - 64, `turn 2: ${b.status.cachedTokens} of ${b.status.promptTokens} cached`);
    const c = await svc.ask({ question: 'Where is the README?', roots: [repo], maxTokens: 4 });
    assert.notEqual(c.status.session, a.status.session);
    assert.ok(c.status.cachedTokens >= c.status.promptTokens / 2, `new session: ${c.status.cachedTokens} of ${c.status.promptTokens} cached`);
    assert.equal(c.status.computedTokens, c.status.promptTokens - c.status.cachedTokens);

    const [b0, b1, b2] = rec.bodies;
    assert.deepEqual(b0.messages.map((m) => m.role), ['system', 'user']);
    assert.deepEqual(b1.messages.map((m) => m.role), ['system', 'user', 'assistant', 'user']);
    assert.equal(b1.messages[0].content, b0.messages[0].content);
    assert.equal(b2.messages[0].content, b0.messages[0].content);
    assert.ok(b0.messages[0].content.includes('export function mul'));
    assert.ok(b0.stream);
    // The session keeps the turns as text, so it continues locally or remotely.
    const s = svc.getSession(a.status.session)!;
    assert.equal(s.turns.length, 4);
    assert.equal(s.turns[1].content, a.answer);
    // A stopped answer keeps what came.
    const ac = new AbortController();
    let got = 0;
    const d = await svc.ask({ question: 'Go on for long.', roots: [repo], maxTokens: 2000, signal: ac.signal, onToken: () => ++got >= 2 && ac.abort() });
    assert.equal(d.status.stopReason, 'cancelled');
    assert.ok(d.status.answerTokens < 2000);
  } finally {
    rec.stop();
    await svc.close();
  }
});

test('one-sentence errors: unreachable, wrong key, unknown model, context exceeded, not an OpenAI API', async () => {
  const closed = createServer();
  await new Promise<void>((r) => closed.listen(0, '127.0.0.1', r));
  const port = (closed.address() as AddressInfo).port;
  await new Promise<void>((r) => closed.close(() => r()));
  const oneSentence = (re: RegExp) => (e: unknown) => e instanceof UserError && re.test(e.message) && !e.message.includes('\n');
  const msgs = [{ role: 'user' as const, content: 'hi' }];
  await assert.rejects(new RemoteClient({ endpoint: `http://127.0.0.1:${port}` }).chat({ messages: msgs }), oneSentence(/^cannot reach the endpoint http:\/\/127\.0\.0\.1:\d+\/v1 \(connection refused\); is the server running/));
  await assert.rejects(new RemoteClient({ endpoint: base, apiKey: 'wrong', keyHint: 'put the key in REPOKV_API_KEY' }).models(), oneSentence(/refused the request \(HTTP 401: missing or wrong API key.*check the API key \(put the key in REPOKV_API_KEY\)$/));
  await assert.rejects(new RemoteClient({ endpoint: base }).models(), oneSentence(/refused the request \(HTTP 401.*it needs an API key$/));
  await assert.rejects(new RemoteClient({ endpoint: base, apiKey: KEY, model: 'gpt-5' }).chat({ messages: msgs }), oneSentence(/has no model "gpt-5" \(it serves qwen2-tiny-q8_0-1\); pick one of its models$/));
  await assert.rejects(
    new RemoteClient({ endpoint: base, apiKey: KEY }).chat({ messages: [{ role: 'user', content: 'lorem ipsum dolor '.repeat(2000) }] }),
    oneSentence(/^the remote model's context is too small for the repository and the question \(HTTP 400: the prompt has \d+ tokens.*lower the repository's budget \(--context-budget/),
  );
  await assert.rejects(new RemoteClient({ endpoint: otherBase }).models(), oneSentence(/did not answer like an OpenAI-compatible API \(GET \/models: text\/html instead of JSON\)/));
  await assert.rejects(new RemoteClient({ endpoint: `${otherBase}/api` }).models(), oneSentence(/did not answer like an OpenAI-compatible API \(GET \/models: HTTP 404\)/));
});

test('the extension\'s engine process in remote mode: context built locally, answers streamed from the remote, cached tokens reported', async () => {
  const c = new EngineClient({
    command: process.execPath,
    args: [join(root, 'bin', 'repokv.js'), 'serve', '--stdio'],
    settings: { cacheDir: join(tmp, 'ext'), endpoint: base, endpointModel: '', apiKey: KEY },
  });
  try {
    const info = await c.start();
    assert.equal(info.model.remote?.endpoint, base);
    assert.match(info.model.remote!.notice, /sparse prefill and retrieval attention are the remote engine's business/);
    const ctx = await c.request<ContextStatus>(Methods.contextOpen, { roots: [repo] });
    assert.equal(ctx.files, 2);
    let streamed = '';
    const a = await c.ask({ requestId: 'x1', question: 'What is in src?', roots: [repo], maxTokens: 5 }, { onDelta: (t) => (streamed += t) });
    assert.equal(streamed, a.answer);
    assert.equal(a.status.remote?.cachedReported, true);
    const b = await c.ask({ requestId: 'x2', question: 'And the README?', sessionId: a.status.session, maxTokens: 5 });
    assert.ok(b.status.cachedTokens >= 64, `cached ${b.status.cachedTokens}`);
    // A wrong key is a user error, worded for the extension.
    await c.configure({ cacheDir: join(tmp, 'ext'), endpoint: base, apiKey: 'nope' });
    await assert.rejects(c.ask({ requestId: 'x3', question: 'Hi?', roots: [repo], maxTokens: 2 }), /refused the request \(HTTP 401.*Set API Key for Endpoint/);
    // Back to the local model: the endpoint cleared with an empty string.
    const local = await c.configure({ cacheDir: join(tmp, 'ext'), endpoint: '', apiKey: '', model: model, backend: 'cpu', contextSize: 2048 });
    assert.equal(local.model.remote, undefined);
    assert.equal(local.model.path, model);
  } finally {
    await c.stop();
  }
});

test('repokv ask --endpoint: key from the environment, the remote\'s business said, its cached tokens printed', () => {
  const ask = (q: string, extra: string[], env: Record<string, string>) =>
    spawnSync(process.execPath, [join(root, 'bin', 'repokv.js'), 'ask', repo, q, '--endpoint', base.replace(/\/v1$/, ''), '--max-tokens', '4', '--session', 'r1', ...extra], {
      encoding: 'utf8',
      env: { ...process.env, REPOKV_CACHE_DIR: join(tmp, 'cli'), REPOKV_API_KEY: '', ...env },
      timeout: 60_000,
    });
  const a = ask('What is this?', ['--api-key-env', 'MY_KEY'], { MY_KEY: KEY });
  assert.equal(a.status, 0, a.stderr);
  assert.match(a.stderr, /answering with the remote engine at http:\/\/127\.0\.0\.1:\d+\/v1: sparse prefill and retrieval attention are the remote engine's business/);
  assert.match(a.stderr, /prompt \d+ tokens \(\d+ cached by the remote, \d+ computed there\)/);
  const b = JSON.parse(ask('And then?', ['--json'], { REPOKV_API_KEY: KEY }).stdout);
  assert.equal(b.session, 'r1');
  assert.equal(b.cachedReported, true);
  assert.ok(b.cachedTokens >= 64, `cached ${b.cachedTokens}`);
  const bad = ask('Hi?', ['--api-model', 'nope'], { REPOKV_API_KEY: KEY });
  assert.equal(bad.status, 1);
  assert.match(bad.stderr.trim().split('\n').pop()!, /has no model "nope" \(it serves qwen2-tiny-q8_0-1\)/);
  const flag = ask('Hi?', ['--api-key', KEY], {});
  assert.equal(flag.status, 1);
  assert.match(flag.stderr, /ask takes no --api-key/);
});
