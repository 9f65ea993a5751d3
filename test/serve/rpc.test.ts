// `repokv serve --stdio` as a child process, driven through the extension's own EngineClient (and a
// raw vscode-jsonrpc connection for the framing): streamed deltas equal the answer, a follow-up finds
// the repository prefix in the KV cache, cancellation stops an answer and keeps it, sessions can be
// listed, renamed and deleted, user errors come back as one sentence, a killed engine is restarted
// with its sessions intact and its KV read back from disk, and shutdown ends the process.
// The engine is real: a tiny synthetic model on the reference backend (the backend with paged KV).
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createMessageConnection, StreamMessageReader, StreamMessageWriter } from 'vscode-jsonrpc/node';
import { EngineClient, EngineUserError, type EngineState } from '../../extension/engine-client.js';
import { Methods, type EngineSettings, type SessionSummary, type Session, type InitializeResult } from '../../engine/serve/protocol.js';
import { testModel } from '../helpers/models.js';

const root = new URL('../..', import.meta.url).pathname;
const tmp = mkdtempSync(join(tmpdir(), 'repokv-serve-'));
after(() => rmSync(tmp, { recursive: true, force: true }));

const repo = join(tmp, 'repo');
mkdirSync(join(repo, 'src'), { recursive: true });
writeFileSync(join(repo, 'README.md'), '# Demo\nA tiny fixture.\n');
writeFileSync(join(repo, 'src', 'main.ts'), 'export function add(a: number, b: number) {\n  return a + b;\n}\n');

const settings: EngineSettings = { cacheDir: join(tmp, 'cache'), model: testModel('qwen2', 'q8_0'), backend: 'reference', contextSize: 2048 };
const serverArgs = [join(root, 'bin', 'repokv.js'), 'serve', '--stdio'];

function client(states: EngineState[] = []): EngineClient {
  return new EngineClient({ command: process.execPath, args: serverArgs, settings, onState: (s) => states.push(s), restartWindowMs: 60_000 });
}

test('framing: initialize over a raw vscode-jsonrpc connection, then shutdown ends the process with code 0', async () => {
  const child = spawn(process.execPath, serverArgs, { stdio: ['pipe', 'pipe', 'pipe'] });
  const conn = createMessageConnection(new StreamMessageReader(child.stdout), new StreamMessageWriter(child.stdin));
  conn.listen();
  const exit = new Promise<number | null>((r) => child.once('exit', (c) => r(c)));
  const notInit = await conn.sendRequest(Methods.sessionList).then(
    () => null,
    (e: { code: number }) => e.code,
  );
  assert.equal(notInit, -32002);
  const info = await conn.sendRequest<InitializeResult>(Methods.initialize, settings);
  assert.equal(info.protocol, 1);
  assert.equal(info.model.builtin, false);
  await conn.sendRequest(Methods.shutdown);
  assert.equal(await exit, 0);
  conn.dispose();
});

test('ask streams, follow-up is served from the prefix cache, cancel keeps the partial answer, sessions, errors, crash + restart', async () => {
  const states: EngineState[] = [];
  const c = client(states);
  try {
    const ctx = await c.request<{ files: number; tokens: number }>(Methods.contextOpen, { roots: [repo] });
    assert.equal(ctx.files, 2);

    // 1. streamed deltas add up to the answer
    let streamed = '';
    let deltas = 0;
    const first = await c.ask({ requestId: 'a1', question: 'What does this repository do?', roots: [repo], maxTokens: 12 }, { onDelta: (t) => ((streamed += t), deltas++) });
    assert.ok(deltas >= 1);
    assert.equal(streamed, first.answer);
    assert.equal(first.status.answerTokens, 12);
    assert.equal(first.status.cachedTokens, 0);
    const sid = first.status.session;

    // 2. follow-up: everything up to the new question comes from the cache (whole 64-token pages)
    const second = await c.ask({ requestId: 'a2', question: 'And the add function?', sessionId: sid, maxTokens: 4 });
    assert.ok(second.status.cachedTokens >= Math.floor(ctx.tokens / 64) * 64, `cached ${second.status.cachedTokens} of repo ${ctx.tokens}`);
    assert.ok(second.status.computedTokens < second.status.promptTokens / 2);

    // 3. cancellation after the first delta: stops early, the turn is kept
    const ac = new AbortController();
    const third = await c.ask({ requestId: 'a3', question: 'Explain it all at length.', sessionId: sid, maxTokens: 600 }, { onDelta: () => ac.abort(), signal: ac.signal });
    assert.equal(third.status.stopReason, 'cancelled');
    assert.ok(third.status.answerTokens < 600);
    const kept = await c.request<Session>(Methods.sessionGet, { id: sid });
    assert.equal(kept.turns.length, 6);
    assert.equal(kept.turns[5].content, third.answer);
    assert.ok(kept.statuses && kept.statuses[5].stopReason === 'cancelled');

    // 4. sessions: list, rename, add material, new, delete
    await c.request(Methods.sessionRename, { id: sid, title: 'Fixture tour' });
    const extra = await c.request<Session>(Methods.sessionNew, { roots: [repo], title: 'scratch' });
    await c.request(Methods.sessionAdd, { id: extra.id, attachment: { label: 'Problem', text: 'src/main.ts:2 error' } });
    let list = await c.request<SessionSummary[]>(Methods.sessionList);
    assert.deepEqual(list.map((s) => s.title).sort(), ['Fixture tour', 'scratch']);
    assert.equal((await c.request<Session>(Methods.sessionGet, { id: extra.id })).pending?.length, 1);
    assert.equal(await c.request(Methods.sessionDelete, { id: extra.id }), true);
    list = await c.request<SessionSummary[]>(Methods.sessionList);
    assert.equal(list.length, 1);

    // 5. a user error is one sentence, not a stack
    await assert.rejects(c.request(Methods.contextOpen, { roots: [join(tmp, 'nope')] }), (e: Error) => e instanceof EngineUserError && /does not exist/.test(e.message));

    // 6. the engine is killed: restarted with the same settings; the session resumes with its KV from disk
    const pid = c.pid!;
    const restarted = new Promise<void>((r) => {
      const t = setInterval(() => {
        if (c.state === 'ready' && c.pid !== pid) {
          clearInterval(t);
          r();
        }
      }, 50);
    });
    process.kill(pid, 'SIGKILL');
    await restarted;
    assert.ok(states.includes('restarting'));
    assert.equal(c.crashes, 1);
    const resumed = await c.ask({ requestId: 'a4', question: 'One more thing?', sessionId: sid, maxTokens: 4 });
    assert.ok(resumed.status.fromDisk >= Math.floor(ctx.tokens / 64) * 64, `from disk ${resumed.status.fromDisk}`);

    const cache = await c.request<{ fileBytes: number; stores: unknown[] }>(Methods.cacheStatus);
    assert.ok(cache.fileBytes > 0 && cache.stores.length === 1);
    const purged = await c.request<{ removed: string[] }>(Methods.cachePurge);
    assert.equal(purged.removed.length, 1);
  } finally {
    await c.stop();
  }
  assert.equal(c.state, 'stopped');
});
