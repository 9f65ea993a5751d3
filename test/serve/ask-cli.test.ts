// `repokv ask` on top of the assistant service: the CLI's JSON output keeps its fields, a second
// question in the same session (a new process) restores the repository prefix from the disk cache,
// and the human-readable status line still goes to stderr.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { testModel } from '../helpers/models.js';

const root = new URL('../..', import.meta.url).pathname;
const tmp = mkdtempSync(join(tmpdir(), 'repokv-ask-'));
after(() => rmSync(tmp, { recursive: true, force: true }));
const repo = join(tmp, 'repo');
mkdirSync(repo);
writeFileSync(join(repo, 'main.py'), 'def greet(name):\n    return f"hello {name}"\n');
const model = testModel('qwen2', 'q8_0');

function ask(question: string, extra: string[]) {
  const r = spawnSync(process.execPath, [join(root, 'bin', 'repokv.js'), 'ask', repo, question, '--model', model, '--backend', 'reference', '--ctx', '2048', '--max-tokens', '6', '--session', 'cli1', ...extra], {
    encoding: 'utf8',
    env: { ...process.env, REPOKV_CACHE_DIR: join(tmp, 'cache') },
  });
  assert.equal(r.status, 0, r.stderr);
  return r;
}

test('repokv ask: JSON fields, then the session continues from the disk cache in a new process', () => {
  const a = JSON.parse(ask('What is this?', ['--json']).stdout);
  for (const k of ['answer', 'session', 'backend', 'promptTokens', 'cachedTokens', 'computedTokens', 'repoTokens', 'files', 'loadMs', 'prefillMs', 'timeToFirstTokenMs', 'answerTokens', 'tokensPerSecond', 'stopReason']) assert.ok(k in a, k);
  assert.equal(a.session, 'cli1');
  assert.equal(a.files, 1);
  assert.equal(a.cachedTokens, 0);
  const b = ask('And then?', []);
  assert.match(b.stderr, /repokv: 1 files \(0 left out\), \d+ tokens; unchanged since last run/);
  const m = /prompt (\d+) tokens \((\d+) from cache, (\d+) computed\)/.exec(b.stderr);
  assert.ok(m, b.stderr);
  assert.ok(Number(m[2]) >= Math.floor(a.repoTokens / 64) * 64, b.stderr);
  assert.match(b.stderr, /continue with --session cli1/);
});
