// The secret filter: planted credentials of every kind are found (built at run time from pieces and a
// seeded generator, so this file holds nothing a secret scanner would flag), look-alikes are not, and
// a walk excludes the files whole with the reason and line.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { scanSecrets, secretNameRule } from '../../engine/context/secrets.js';
import { walkRepository } from '../../engine/context/walk.js';
import { randomString, remove, tempDir, writeTree } from './helpers.js';

const UP = 'ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789';
const B64 = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/';
const b64url = (s: string) => Buffer.from(s).toString('base64url');

/** kind → [file name, content] with the credential on line 3. */
function planted(): Record<string, [string, string]> {
  const pre = '// config\nconst x = 1;\n';
  const r = (seed: number, n: number, a?: string) => randomString(seed, n, a);
  return {
    'private-key': ['key.txt', pre + '-----BEGIN ' + 'RSA PRIVATE' + ' KEY-----\n' + r(1, 64, B64) + '\n-----END ' + 'RSA PRIVATE KEY-----\n'],
    'private-key-openssh': ['deploy.txt', pre + '-----BEGIN ' + 'OPENSSH PRIVATE' + ' KEY-----\n' + r(2, 64, B64) + '\n'],
    'aws-access-key': ['aws.ts', pre + `const id = '${'AK' + 'IA' + r(3, 16, UP)}';\n`],
    'aws-secret-key': ['aws.py', pre + `aws_secret_access_key = "${r(4, 40, B64)}"\n`],
    'github-token': ['gh.js', pre + `fetch(url, { headers: { authorization: 'token ${'gh' + 'p_' + r(5, 36)}' } });\n`],
    'github-pat': ['gh2.js', pre + `const t = "${'github' + '_pat_' + r(6, 22) + '_' + r(7, 59)}";\n`],
    'gitlab-token': ['gl.sh', pre + `curl -H "PRIVATE-TOKEN: ${'gl' + 'pat-' + r(8, 20)}" x\n`],
    'slack-token': ['slack.rb', pre + `SLACK = '${'xo' + 'xb-' + r(9, 12, '0123456789') + '-' + r(10, 24)}'\n`],
    'slack-webhook': ['hook.md', pre + `https://hooks.slack.com/services/T${r(11, 8, UP)}/B${r(12, 8, UP)}/${r(13, 24)}\n`],
    'google-api-key': ['maps.html', pre + `<script src="https://maps.example/js?key=${'AI' + 'za' + r(14, 35)}"></script>\n`],
    'npm-token': ['publish.yml', pre + `  token: ${'np' + 'm_' + r(15, 36)}\n`],
    'stripe-key': ['pay.go', pre + `var key = "${'sk' + '_live_' + r(16, 24)}"\n`],
    'openai-key': ['ai.py', pre + `client = OpenAI(api_key="${'sk-' + 'proj-' + r(17, 48)}")\n`],
    'anthropic-key': ['claude.ts', pre + `const k = '${'sk-ant-' + 'api03-' + r(18, 90)}';\n`],
    'huggingface-token': ['hf.py', pre + `login("${'h' + 'f_' + r(19, 34)}")\n`],
    jwt: ['session.json', pre + `"${b64url('{"alg":"HS256","typ":"JWT"}') + '.' + b64url('{"sub":"1234567890","name":"x"}') + '.' + r(20, 43)}"\n`],
    'url-password': ['db.ts', pre + `const url = 'postgres://admin:${r(21, 18)}@db.internal:5432/app';\n`],
    assignment: ['client.ts', pre + `const clientSecret = "${r(22, 32, B64)}";\n`],
    'assignment-ini': ['app.ini', '[db]\nhost = x\nDB_PASSWORD=' + r(23, 24) + '\n'],
    'credential-config': ['.npmrc', 'registry=https://npm.registry.example/\n\n//npm.registry.example/:_authToken=' + r(24, 36) + '\n'],
    'credential-config-netrc': ['.netrc', '# netrc\n\nmachine example.com login me password ' + r(25, 16) + '\n'],
  };
}

test('every planted credential is found, with its kind and line', () => {
  for (const [name, [file, text]] of Object.entries(planted())) {
    const f = scanSecrets(text, `src/${file}`);
    assert.ok(f, `${name}: not found in ${JSON.stringify(text)}`);
    const kind = name === 'github-pat' ? 'github-token' : name.replace(/-(openssh|ini|netrc)$/, '');
    assert.equal(f.kind, kind, name);
    assert.equal(f.line, 3, name);
  }
});

test('look-alikes are not credentials', () => {
  const clean = [
    'password = "changeme"\n',
    'const token = process.env.GITHUB_TOKEN;\n',
    'apiKey: "${API_KEY}"\n',
    'const secret = "short";\n',
    'registry=https://npm.registry.example/\nfund=false\n',
    '-----BEGIN PUBLIC KEY-----\nMIIB\n',
    'const maxTokens = this.usedOutputTokens;\n',
    'wavtokenizerDec = "wavtokenizer-dec",\n',
    'token = `@{${tokens.length}}@`;\n',
    'const resolvedMaxTokens = !disableContextShift\n',
    'postgres://user:password@localhost:5432/db\n',
    'const id = "AKIAEXAMPLE";\n',
    'API_KEY=your-api-key-here\n',
    `const hash = "${randomString(30, 40, '0123456789abcdef')}"; // a commit id, no assignment keyword\n`,
  ];
  for (const t of clean) assert.equal(scanSecrets(t, 'src/a.ts'), undefined, t);
  // a bare value is a value only in env/ini-like files, not in code
  const bare = `SECRET_KEY=${randomString(31, 24)}\n`;
  assert.equal(scanSecrets(bare, 'src/a.ts'), undefined);
  assert.equal(scanSecrets(bare, 'config/.env.example')?.kind, 'assignment');
});

test('secret names: deny-list, templates allowed, folders', () => {
  const denied = ['.env', '.env.local', 'prod.env', 'server.pem', 'tls/server.key', 'id_rsa', 'id_ed25519.pub', 'cert.p12', 'cert.pfx', 'kubeconfig', 'config/credentials.json', 'credentials-prod.json', '.docker/config.json', '.git-credentials', 'terraform.tfstate'];
  for (const p of denied) assert.ok(secretNameRule(p, false), p);
  for (const d of ['.aws', '.ssh', '.gcloud', '.azure', 'home/.kube', 'secrets']) {
    assert.ok(secretNameRule(d, true), d);
    assert.ok(secretNameRule(`${d}/anything.txt`, false), `${d}/anything.txt`);
  }
  for (const p of ['.env.example', '.env.sample', '.env.template', 'src/env.ts', 'keys.ts', 'docker/config.json', 'config.json', 'token.ts']) assert.equal(secretNameRule(p, false), undefined, p);
});

test('a walk excludes every planted file whole, and nothing can re-include a secret name', async () => {
  const dir = tempDir('secrets');
  try {
    const tree: Record<string, string> = { 'README.md': '# clean\n', '.repokvignore': '!.env\n!secrets/\n' };
    for (const [, [file, text]] of Object.entries(planted())) tree[`src/${file}`] = text;
    tree['.env'] = 'X=1\n';
    tree['.env.example'] = 'API_KEY=\nDB_HOST=localhost\n';
    tree['secrets/a.txt'] = 'nothing\n';
    tree['.ssh/config'] = 'Host x\n';
    tree['src/.npmrc.clean/.npmrc'] = 'fund=false\n';
    writeTree(dir, tree);
    const w = await walkRepository([dir], { git: false });
    assert.deepEqual(w.files.map((f) => f.path), ['.env.example', '.repokvignore', 'README.md', 'src/.npmrc.clean/.npmrc']);
    const why = new Map(w.excluded.map((e) => [e.path, `${e.reason} ${e.detail}`]));
    assert.match(why.get('.env') ?? '', /^secret-name /);
    assert.equal(why.get('secrets/'), 'secret-name secrets/');
    assert.equal(why.get('.ssh/'), 'secret-name .ssh/');
    assert.equal(why.get('src/aws.ts'), 'secret-content aws-access-key at line 3');
    assert.equal(why.get('src/.npmrc'), 'secret-content credential-config at line 3');
    const planted_ = Object.values(planted()).map(([f]) => `src/${f}`);
    for (const p of planted_) assert.match(why.get(p) ?? '', /^secret-content /, p);
    // the reports never carry the value
    for (const e of w.excluded) assert.ok(e.detail.length < 80 && !/[A-Za-z0-9]{16}/.test(e.detail), e.detail);
  } finally {
    remove(dir);
  }
});
