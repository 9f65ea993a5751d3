// End-to-end test in a real VS Code: code-server (test/e2e/setup.sh installs it) with the packaged
// .vsix installed, a fixture repository made here, driven by playwright-core through Debian's
// Chromium. Steps (each leaves a screenshot in test/e2e/artifacts/):
//   01 the RepoKV panel opens            02 "Explain This Repository" streams text
//   03 Stop ends the answer early        04 a follow-up reports the repository prefix from the cache
//   05 after a window reload the session resumes, its KV read from disk
//   06 a path:line reference opens the file in the editor
//   07 remote mode: repokv.endpoint set to a `repokv serve` started here (a real server on loopback,
//      with a key), the key entered through "RepoKV: Set API Key for Endpoint…" (secret storage), the
//      banner says the remote does sparse prefill/retrieval, and a follow-up's status reports the
//      remote's cached tokens
// The engine is the real one: a tiny synthetic model (meaningless text) on the reference backend,
// whose paged KV gives the prefix cache. Usage: node test/e2e/run.mjs <path.vsix>
import { spawn, spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync, existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createServer } from 'node:net';

const here = new URL('.', import.meta.url).pathname;
const root = join(here, '..', '..');
const tools = join(here, '.code-server');
const require = createRequire(join(tools, 'package.json'));
const { chromium } = require('playwright-core');
const codeServer = join(tools, 'node_modules', '.bin', 'code-server');
const vsix = process.argv[2] ?? join(root, 'dist', 'repokv-linux-x64.vsix');
const artifacts = join(here, 'artifacts');
if (!existsSync(codeServer)) throw new Error('code-server is not installed: run test/e2e/setup.sh');
if (!existsSync(vsix)) throw new Error(`${vsix} is missing: run npm run package:extension`);
rmSync(artifacts, { recursive: true, force: true });
mkdirSync(artifacts, { recursive: true });

const t0 = Date.now();
const log = (m) => console.log(`[e2e ${((Date.now() - t0) / 1000).toFixed(1)}s] ${m}`);
const tmp = mkdtempSync(join(tmpdir(), 'repokv-e2e-'));
const ws = join(tmp, 'demo-repo');
const userData = join(tmp, 'user-data');
const extDir = join(tmp, 'extensions');
const cache = join(tmp, 'cache');

// The fixture repository.
mkdirSync(join(ws, 'src'), { recursive: true });
writeFileSync(join(ws, 'README.md'), '# demo-repo\n\nA calculator used by the RepoKV end-to-end test. See src/math.ts.\n');
writeFileSync(join(ws, 'src', 'math.ts'), 'export function add(a: number, b: number): number {\n  return a + b;\n}\n\nexport function mul(a: number, b: number): number {\n  return a * b;\n}\n');
writeFileSync(join(ws, 'src', 'main.ts'), "import { add, mul } from './math';\n\nconsole.log(add(2, 3), mul(4, 5));\n");

// A tiny synthetic model.
const model = join(tmp, 'tiny.gguf');
const mk = spawnSync(process.execPath, [join(root, 'bin', 'repokv.js'), 'make-model', '--arch', 'qwen2', '--size', 'tiny', '--type', 'q8_0', '--seed', '1', '--out', model], { encoding: 'utf8' });
if (mk.status !== 0) throw new Error(mk.stderr);

mkdirSync(join(userData, 'User'), { recursive: true });
mkdirSync(join(userData, 'Machine'), { recursive: true });
const settings = {
  'workbench.startupEditor': 'none',
  'workbench.tips.enabled': false,
  'workbench.welcomePage.walkthroughs.openOnInstall': false,
  'extensions.ignoreRecommendations': true,
  'security.workspace.trust.enabled': false,
  'telemetry.telemetryLevel': 'off',
  'update.mode': 'none',
  'chat.disableAIFeatures': true,
  'repokv.modelPath': model,
  'repokv.backend': 'reference',
  'repokv.contextSize': 4096,
  'repokv.maxAnswerTokens': 500,
  'repokv.cacheFolder': cache,
};
writeFileSync(join(userData, 'User', 'settings.json'), JSON.stringify(settings, null, 1));
writeFileSync(join(userData, 'Machine', 'settings.json'), JSON.stringify(settings, null, 1));

const env = { ...process.env, TMPDIR: join(tmp) };
log('installing the .vsix into code-server');
const inst = spawnSync(codeServer, ['--extensions-dir', extDir, '--user-data-dir', userData, '--install-extension', vsix], { encoding: 'utf8', env });
if (inst.status !== 0) throw new Error(`install failed: ${inst.stdout}\n${inst.stderr}`);

const port = await new Promise((r) => {
  const s = createServer().listen(0, '127.0.0.1', () => {
    const p = s.address().port;
    s.close(() => r(p));
  });
});
const server = spawn(
  codeServer,
  ['--auth', 'none', '--bind-addr', `127.0.0.1:${port}`, '--disable-telemetry', '--disable-update-check', '--disable-workspace-trust', '--extensions-dir', extDir, '--user-data-dir', userData, ws],
  { env, stdio: ['ignore', 'pipe', 'pipe'] },
);
let serverLog = '';
server.stdout.on('data', (d) => (serverLog += d));
server.stderr.on('data', (d) => (serverLog += d));
const ready = async () => {
  for (let i = 0; i < 300; i++) {
    try {
      const r = await fetch(`http://127.0.0.1:${port}/healthz`);
      if (r.ok) return;
    } catch {
      /* not yet */
    }
    await new Promise((r) => setTimeout(r, 200));
  }
  throw new Error(`code-server did not start:\n${serverLog}`);
};
await ready();
log(`code-server on port ${port}`);

const browser = await chromium.launch({
  executablePath: '/usr/bin/chromium',
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update', '--no-first-run', '--disable-sync'],
});
const page = await browser.newPage({ viewport: { width: 1400, height: 900 } });
let step = 0;
const shot = async (name) => {
  const f = join(artifacts, `${String(++step).padStart(2, '0')}-${name}.png`);
  await page.screenshot({ path: f });
  log(`screenshot ${f}`);
};

let failed = null;
let remote = null;
try {
  await page.goto(`http://127.0.0.1:${port}/?folder=${encodeURIComponent(ws)}`);
  await page.locator('.monaco-workbench').waitFor({ timeout: 60_000 });
  const panelFrame = () => page.frameLocator('iframe.webview.ready[src*="extensionId=repokv.repokv"]').frameLocator('#active-frame');
  const runCommand = async (title) => {
    await page.locator('.monaco-workbench').click({ position: { x: 700, y: 450 } }).catch(() => {});
    await page.keyboard.press('F1');
    const input = page.locator('.quick-input-widget input');
    await input.waitFor({ timeout: 15_000 });
    await input.fill(`>${title}`);
    await page.locator('.quick-input-list .monaco-list-row').first().waitFor({ timeout: 15_000 });
    await page.waitForTimeout(300);
    await page.keyboard.press('Enter');
  };
  const openPanel = async () => {
    await page.locator('.activitybar .action-item a[aria-label^="RepoKV"]').click({ timeout: 60_000 });
    await panelFrame().locator('#input').waitFor({ timeout: 60_000 });
  };

  // 01: the panel in its activity-bar container
  await openPanel();
  await shot('panel-open');

  // 02: Explain This Repository streams text
  await runCommand('RepoKV: Explain This Repository');
  const answers = panelFrame().locator('.msg.assistant');
  const firstAnswer = answers.first();
  await firstAnswer.locator('.cursor').waitFor({ timeout: 120_000 });
  let streamedChars = 0;
  for (let i = 0; i < 600 && streamedChars < 40; i++) {
    streamedChars = ((await firstAnswer.locator('.body').textContent()) ?? '').length;
    if (streamedChars < 40) await page.waitForTimeout(100);
  }
  if (streamedChars < 40) throw new Error('no streamed text arrived');
  const streamingStatus = await firstAnswer.locator('.status').textContent();
  if (!/answering/.test(streamingStatus ?? '')) throw new Error(`expected a streaming answer, status is "${streamingStatus}"`);
  await shot('streaming');

  // 03: Stop
  await panelFrame().locator('#stop').click();
  await firstAnswer.locator('.status', { hasText: 'stopped' }).waitFor({ timeout: 60_000 });
  const stoppedStatus = await firstAnswer.locator('.status').textContent();
  log(`stopped: ${stoppedStatus}`);
  await shot('stopped');

  // 04: a follow-up; its status reports the repository prefix from the cache
  const input = panelFrame().locator('#input');
  await input.fill('Where is add defined? Look at src/math.ts:1 please.');
  await input.press('Enter');
  const second = answers.nth(1);
  await second.locator('.status', { hasText: 'tokens/s' }).waitFor({ timeout: 180_000 });
  const followStatus = (await second.locator('.status').textContent()) ?? '';
  log(`follow-up: ${followStatus}`);
  const m = /(\d+) from cache/.exec(followStatus);
  if (!m || Number(m[1]) === 0 || !/repository \d+ tokens \(cached\)/.test(followStatus)) throw new Error(`follow-up status does not report the repository as cached: ${followStatus}`);
  await shot('followup-cached');

  // 05: reload the window; the session is still there and its KV comes back from disk
  await page.reload();
  await page.locator('.monaco-workbench').waitFor({ timeout: 60_000 });
  await openPanel().catch(async () => {
    // the container may already be open after a reload
    await panelFrame().locator('#input').waitFor({ timeout: 60_000 });
  });
  await panelFrame().locator('.msg.user').nth(1).waitFor({ timeout: 60_000 });
  const restored = await panelFrame().locator('.msg').count();
  log(`after reload the panel shows ${restored} messages`);
  const input2 = panelFrame().locator('#input');
  await input2.fill('And mul?');
  await input2.press('Enter');
  const third = panelFrame().locator('.msg.assistant').nth(2);
  await third.locator('.status', { hasText: 'tokens/s' }).waitFor({ timeout: 180_000 });
  const resumedStatus = (await third.locator('.status').textContent()) ?? '';
  log(`resumed: ${resumedStatus}`);
  const d = /\((\d+) from disk\)/.exec(resumedStatus);
  if (!d || Number(d[1]) === 0) throw new Error(`the resumed session did not read its KV from disk: ${resumedStatus}`);
  await shot('resumed-from-disk');

  // 06: a path:line link opens the file at that line
  await panelFrame().locator('a.ref[data-path="src/math.ts"]').first().click();
  await page.locator('.tabs-container .tab[aria-label*="math.ts"]').waitFor({ timeout: 30_000 });
  await page.waitForTimeout(500);
  await shot('file-opened');
  // 07: remote mode against a real `repokv serve` on loopback
  const remoteKey = 'e2e-remote-key';
  remote = spawn(process.execPath, [join(root, 'bin', 'repokv.js'), 'serve', '--port', '0', '--model', model, '--backend', 'cpu', '--ctx', '4096', '--api-key', remoteKey], {
    env: { ...process.env, REPOKV_CACHE_DIR: join(tmp, 'remote-cache'), REPOKV_API_KEY: '' },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const endpoint = await new Promise((ok, fail) => {
    let out = '';
    remote.stdout.on('data', (d) => {
      out += d;
      const m = /(http:\/\/127\.0\.0\.1:\d+\/v1)/.exec(out);
      if (m) ok(m[1]);
    });
    remote.once('exit', (c) => fail(new Error(`repokv serve exited (${c})`)));
  });
  log(`remote engine at ${endpoint}`);
  const remoteSettings = { ...settings, 'repokv.endpoint': endpoint };
  writeFileSync(join(userData, 'User', 'settings.json'), JSON.stringify(remoteSettings, null, 1));
  writeFileSync(join(userData, 'Machine', 'settings.json'), JSON.stringify(remoteSettings, null, 1));
  await panelFrame().locator('#banner', { hasText: 'Remote engine' }).waitFor({ timeout: 60_000 });
  await runCommand('RepoKV: Set API Key for Endpoint');
  const keyInput = page.locator('.quick-input-widget input[type="password"]');
  await keyInput.waitFor({ timeout: 15_000 });
  await keyInput.fill(remoteKey);
  await page.keyboard.press('Enter');
  await page.waitForTimeout(1500);
  await panelFrame().locator('#new').click();
  const input3 = panelFrame().locator('#input');
  await input3.fill('What does src/math.ts export?');
  await input3.press('Enter');
  const r1 = panelFrame().locator('.msg.assistant').first();
  await r1.locator('.status', { hasText: 'tokens/s' }).waitFor({ timeout: 120_000 });
  log(`remote, first: ${await r1.locator('.status').textContent()}`);
  await input3.fill('And src/main.ts?');
  await input3.press('Enter');
  const r2 = panelFrame().locator('.msg.assistant').nth(1);
  await r2.locator('.status', { hasText: 'tokens/s' }).waitFor({ timeout: 120_000 });
  const remoteStatus = (await r2.locator('.status').textContent()) ?? '';
  log(`remote, follow-up: ${remoteStatus}`);
  const rc = /(\d+) cached by the remote/.exec(remoteStatus);
  if (!rc || Number(rc[1]) === 0 || !/remote /.test(remoteStatus)) throw new Error(`the remote follow-up does not report the remote's cached tokens: ${remoteStatus}`);
  const banner = (await panelFrame().locator('#banner').textContent()) ?? '';
  if (!/sparse prefill and retrieval attention are the remote engine's business/i.test(banner)) throw new Error(`the banner does not say the remote does sparse prefill: ${banner}`);
  await shot('remote-cached');
  log('all steps passed');
} catch (e) {
  failed = e;
  await shot('failure').catch(() => {});
  console.error(serverLog.split('\n').slice(-40).join('\n'));
} finally {
  await browser.close();
  remote?.kill('SIGTERM');
  server.kill('SIGTERM');
  await new Promise((r) => setTimeout(r, 500));
  if (server.exitCode === null) server.kill('SIGKILL');
  rmSync(tmp, { recursive: true, force: true });
}
const secs = ((Date.now() - t0) / 1000).toFixed(1);
if (failed) {
  console.error(`e2e failed after ${secs} s: ${failed.stack ?? failed}`);
  console.log('0 passed, 1 failed');
  process.exit(1);
}
console.log(`e2e passed in ${secs} s`);
console.log('1 passed, 0 failed');
