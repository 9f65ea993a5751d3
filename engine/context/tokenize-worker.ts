// A worker of the tokenizer pool (tokenize-pool.ts): loads the model's tokenizer once per thread and
// tokenizes batches of segment texts. The reply is one Int32Array, moved (not copied) back:
// [count, length_1 … length_count, ids…].
import { move } from 'piscina';
import { GGUFFile } from '../gguf/reader.js';
import { Tokenizer } from '../text/tokenizer.js';

const tokenizers = new Map<string, Tokenizer>();

function tokenizerOf(model: string): Tokenizer {
  let t = tokenizers.get(model);
  if (!t) {
    const f = GGUFFile.open(model, { metadataOnly: true });
    try {
      t = Tokenizer.fromGGUF(f);
    } finally {
      f.close();
    }
    tokenizers.set(model, t);
  }
  return t;
}

export default function tokenizeBatch(task: { model: string; texts: string[] }): Int32Array {
  const tok = tokenizerOf(task.model);
  // segments are document text: control-token text inside a file stays text (parseSpecial false)
  const parts = task.texts.map((t) => tok.encode(t, { addSpecial: false, parseSpecial: false }));
  const total = parts.reduce((s, p) => s + p.length, 0);
  const out = new Int32Array(1 + parts.length + total);
  out[0] = parts.length;
  let o = 1 + parts.length;
  for (let i = 0; i < parts.length; i++) {
    out[1 + i] = parts[i].length;
    out.set(parts[i], o);
    o += parts[i].length;
  }
  return move(out) as unknown as Int32Array;
}
