import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { meta, writeGGUF } from '../../engine/gguf/writer.js';
import { syntheticTokenizerMetadata } from '../../engine/text/synthetic.js';


const root = new URL('../..', import.meta.url).pathname;
function repokv(...args: string[]) {
  const r = spawnSync(process.execPath, [join(root, 'bin', 'repokv.js'), ...args], { encoding: 'utf8', timeout: 60_000 });
  return { code: r.status, out: r.stdout, err: r.stderr };
}

test('repokv tokenize and bench tokenize', () => {
  const dir = mkdtempSync(join(tmpdir(), 'repokv-tokcmd-'));
  try {
    const model = join(dir, 'q.gguf');
    writeGGUF(model, { metadata: [['general.architecture', meta.str('qwen2')], ...syntheticTokenizerMetadata('qwen2')], tensors: [] });
    const r = repokv('tokenize', '--model', model, '--json', '--parse-special', 'hi <|im_end|> 日');
    assert.equal(r.code, 0, r.err);
    const j = JSON.parse(r.out);
    assert.equal(j.count, j.ids.length);
    assert.ok(j.pieces.includes('<|im_end|>'), j.pieces.join('|'));
    assert.deepEqual(j.pieces.slice(-2), ['<0xE6><0x97>', '<0xA5>']); // 日 is split by the small vocabulary
    const file = join(dir, 'a.ts');
    writeFileSync(file, 'export const x = 1;\n'.repeat(50));
    const b = repokv('bench', 'tokenize', '--kind', 'spm', '--file', file, '--repeat', '1', '--json');
    assert.equal(b.code, 0, b.err);
    const rows = b.out.trim().split('\n').map((l) => JSON.parse(l));
    assert.deepEqual(rows.map((x) => x.engine + (x.cache ? '/' + x.cache : '')), ['llama.cpp', 'repokv/cold', 'repokv/warm']);
    for (const x of rows) assert.ok(x.tokens_per_s > 0 && x.tokens === rows[0].tokens);
    assert.equal(rows[1].identical_to_llama_cpp, true);
    assert.ok(rows[1].ratio_vs_llama_cpp > 0);
    const bad = repokv('tokenize', '--model', join(dir, 'missing.gguf'), 'x');
    assert.equal(bad.code, 1);
    assert.match(bad.err, /missing\.gguf: cannot open model file \(no such file\)/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
