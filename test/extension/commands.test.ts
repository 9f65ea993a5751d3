// What the extension's commands send: debugging-session material (problems ordered and capped,
// terminal text clipped, the stopped frame), titles, code attachments; and "Select model…"'s
// discovery of GGUF files in settings folders, Ollama's store and LM Studio's folder.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { codeAttachment, debugAttachments, debugTitle, explainSelectionQuestion } from '../../extension/prompts.js';
import { findModels, isGGUF } from '../../extension/models.js';
import { withAttachments } from '../../engine/assistant/service.js';

const tmp = mkdtempSync(join(tmpdir(), 'repokv-ext-'));
after(() => rmSync(tmp, { recursive: true, force: true }));

test('debugging session: errors first, capped; terminal text clipped; stack frames and exception', () => {
  const diagnostics = Array.from({ length: 60 }, (_, i) => ({ path: `src/f${i}.ts`, line: i + 1, severity: (i % 2 ? 'error' : 'warning') as 'error' | 'warning', message: `m${i}` }));
  const a = debugAttachments({
    diagnostics,
    terminalText: 'x'.repeat(9000),
    debug: { sessionName: 'node', exception: 'TypeError: boom', frames: [{ name: 'add', path: 'src/math.ts', line: 2 }, { name: 'main' }] },
  });
  assert.equal(a.length, 3);
  assert.equal(a[0].label, 'Problems (60)');
  const lines = a[0].text.split('\n');
  assert.match(lines[0], /error: m1$/);
  assert.equal(lines.filter((l) => / error: /.test(l)).length, 30);
  assert.match(a[0].text, /… 10 more$/);
  assert.match(a[1].text, /… \(1000 more characters left out\)$/);
  assert.equal(a[2].text, 'Exception: TypeError: boom\nat add (src/math.ts:2)\nat main');
  assert.equal(debugTitle({ diagnostics: [], debug: { sessionName: 'n', exception: 'TypeError: boom', frames: [] } }), 'Debug: TypeError: boom');
  assert.deepEqual(debugAttachments({ diagnostics: [] }), []);
});

test('attachments go after the question, fenced, with their place', () => {
  const att = codeAttachment('src/a.ts', 'let x = "```";', 3, 4);
  assert.equal(att.label, 'src/a.ts:3-4');
  const q = withAttachments(explainSelectionQuestion('src/a.ts', 3, 4), [att]);
  assert.ok(q.startsWith('Explain the selected code from src/a.ts:3-4'));
  assert.ok(q.endsWith('src/a.ts:3-4:\n```\nlet x = "`\u200b``";\n```'));
});

test('Select model…: GGUF files from settings folders, Ollama manifests → blobs, LM Studio; by magic, no duplicates', () => {
  const gguf = Buffer.concat([Buffer.from('GGUF'), Buffer.alloc(60)]);
  const folder = join(tmp, 'models');
  mkdirSync(join(folder, 'sub'), { recursive: true });
  writeFileSync(join(folder, 'sub', 'a.gguf'), gguf);
  writeFileSync(join(folder, 'notes.txt'), 'x');
  const ollama = join(tmp, 'ollama');
  mkdirSync(join(ollama, 'blobs'), { recursive: true });
  mkdirSync(join(ollama, 'manifests', 'registry.ollama.ai', 'library', 'qwen2.5-coder'), { recursive: true });
  writeFileSync(join(ollama, 'blobs', 'sha256-abc'), gguf);
  writeFileSync(join(ollama, 'blobs', 'sha256-def'), 'not a model');
  writeFileSync(
    join(ollama, 'manifests', 'registry.ollama.ai', 'library', 'qwen2.5-coder', '7b'),
    JSON.stringify({ layers: [{ mediaType: 'application/vnd.ollama.image.template', digest: 'sha256:def' }, { mediaType: 'application/vnd.ollama.image.model', digest: 'sha256:abc' }] }),
  );
  const lms = join(tmp, 'lmstudio');
  mkdirSync(join(lms, 'pub', 'repo'), { recursive: true });
  writeFileSync(join(lms, 'pub', 'repo', 'm-Q4_K_M.gguf'), gguf);
  const found = findModels([folder, folder], { ollamaRoot: ollama, lmStudioRoots: [lms, join(tmp, 'missing')] });
  assert.deepEqual(
    found.map((m) => [m.source, m.label]),
    [
      ['settings', 'a.gguf'],
      ['ollama', 'qwen2.5-coder:7b'],
      ['lmstudio', 'm-Q4_K_M.gguf'],
    ],
  );
  assert.ok(isGGUF(found[1].path));
  assert.ok(!isGGUF(join(ollama, 'blobs', 'sha256-def')));
});
