// `repokv tokenize --model F [--file P | text] [--json]`: the token ids (and their pieces) our
// tokenizer gives a text, exactly as llama.cpp would for the same model file.
import { readFileSync } from 'node:fs';
import { GGUFFile } from '../gguf/reader.js';
import { UserError } from '../errors.js';
import { Tokenizer } from '../text/tokenizer.js';
import { flagString, parseArgs } from './args.js';

const USAGE = `usage: repokv tokenize --model FILE [--file PATH | TEXT...] [options]
  --model FILE       GGUF model whose tokenizer to use (only its metadata is read)
  --file PATH        tokenize this file's text (UTF-8) instead of TEXT
  --no-add-special   do not add the BOS/EOS tokens the model adds by default
  --parse-special    read special-token text such as <|im_end|> as those tokens
  --ids              print only the ids, space-separated
  --json             print {"model", "count", "ids", "pieces"} as JSON`;

const strict = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });

/** A token's text; a piece that is not whole UTF-8 (part of a character) shows its bytes as <0xNN>. */
function piece(tok: Tokenizer, id: number): string {
  const b = tok.tokenBytes(id, true);
  try {
    return strict.decode(b);
  } catch {
    return Array.from(b, (x) => `<0x${x.toString(16).toUpperCase().padStart(2, '0')}>`).join('');
  }
}

export async function run(args: string[]): Promise<number> {
  const p = parseArgs(args, ['json', 'help', 'no-add-special', 'parse-special', 'ids']);
  if (p.flags.has('help')) {
    console.log(USAGE);
    return 0;
  }
  const known = new Set(['model', 'file', 'json', 'help', 'no-add-special', 'parse-special', 'ids']);
  for (const k of p.flags.keys()) if (!known.has(k)) throw new UserError(`unknown option --${k} (see repokv tokenize --help)`);
  const model = flagString(p, 'model');
  if (!model) throw new UserError('option --model FILE is required (see repokv tokenize --help)');
  const file = flagString(p, 'file');
  if (file !== undefined && p.positional.length) throw new UserError('give either --file PATH or TEXT, not both');
  let text: string;
  if (file !== undefined) {
    try {
      text = readFileSync(file, 'utf8');
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      throw new UserError(`cannot read ${file} (${code === 'ENOENT' ? 'no such file' : code === 'EISDIR' ? 'is a directory' : (e as Error).message})`);
    }
  } else if (p.positional.length) text = p.positional.join(' ');
  else throw new UserError('nothing to tokenize: give TEXT or --file PATH');

  const gguf = GGUFFile.open(model, { metadataOnly: true });
  let tok: Tokenizer;
  try {
    tok = Tokenizer.fromGGUF(gguf);
  } finally {
    gguf.close();
  }
  const ids = Array.from(tok.encode(text, { addSpecial: !p.flags.has('no-add-special'), parseSpecial: p.flags.has('parse-special') }));
  if (p.flags.has('ids')) {
    console.log(ids.join(' '));
    return 0;
  }
  const pieces = ids.map((id) => piece(tok, id));
  if (p.flags.has('json')) {
    console.log(JSON.stringify({ model, count: ids.length, ids, pieces }));
    return 0;
  }
  const w = String(Math.max(0, ...ids)).length;
  const lines = ids.map((id, i) => `${String(id).padStart(w)}  ${JSON.stringify(pieces[i])}`);
  console.log(`${lines.join('\n')}\n${ids.length} tokens`);
  return 0;
}
