// The `repokv` command line. Each subcommand lives in engine/commands/<name>.ts and exports
// `run(args): Promise<number>` (the exit code). Errors a user can cause are printed as one sentence.

import { GGUFError } from './gguf/reader.js';
import { UserError } from './errors.js';

type Command = { summary: string; load: () => Promise<{ run(args: string[]): Promise<number> }> };

const commands: Record<string, Command> = {
  inspect: { summary: 'inspect <model.gguf>: architecture, sizes, tensor types, tokenizer, template', load: () => import('./commands/inspect.js') },
  tokenize: { summary: 'tokenize --model F [--file P | text]: token ids and pieces', load: () => import('./commands/tokenize.js') },
  'make-model': { summary: 'make-model --arch llama|qwen2|qwen3 --size tiny|small --type T --seed N --out F', load: () => import('./commands/make-model.js') },
  cache: { summary: 'cache stats|gc|purge [--dir D] [--max-gb N] [--verify] [--model F] [--json]: the persistent KV cache', load: () => import('./commands/cache.js') },
  generate: { summary: 'generate --model F --prompt P [--chat] [--max-tokens N --temperature T --top-k K --top-p P --seed N]', load: () => import('./commands/generate.js') },
  ask: { summary: 'ask <folder...> "question" [--session ID] [--model F]: answers about a repository (its KV cached on disk)', load: () => import('./commands/ask.js') },
  index: { summary: 'index <folder...> [--explain] [--json] [--model F] [--budget N] [--watch]: the repository document', load: () => import('./commands/index.js') },
  calibrate: { summary: 'calibrate [--model F] [--length 32K] [--recall 0.95]: per-head sparse-prefill patterns (MInference search), saved for the model', load: () => import('./commands/calibrate.js') },
  bench: { summary: 'bench tokenize|engine ... --json: measurements against llama.cpp', load: () => import('./commands/bench.js') },
  serve: { summary: 'serve [--host H --port N --model F --folder DIR... --api-key K]: OpenAI-compatible HTTP API; serve --stdio: JSON-RPC for the VS Code extension', load: () => import('./serve/rpc.js') },
  doctor: { summary: 'doctor [--json]: GPU adapter, features, limits, and which backend auto picks', load: () => import('./commands/doctor.js') },
};

function usage(): string {
  return ['usage: repokv <command> [options]', '', ...Object.entries(commands).map(([k, c]) => `  ${k.padEnd(12)} ${c.summary}`)].join('\n');
}

export async function main(argv: string[]): Promise<number> {
  const [name, ...rest] = argv;
  if (!name || name === '--help' || name === '-h' || name === 'help') {
    console.log(usage());
    return name ? 0 : 2;
  }
  const cmd = commands[name];
  if (!cmd) {
    console.error(`repokv: unknown command "${name}"\n${usage()}`);
    return 2;
  }
  try {
    const mod = await cmd.load();
    return await mod.run(rest);
  } catch (e) {
    if (e instanceof GGUFError || e instanceof UserError) {
      console.error(`repokv: ${e.message}`);
      return 1;
    }
    throw e;
  }
}
