// `repokv bench <what> ...`: measurements printed as one JSON object per line (--json) or as text.
// Each benchmark lives in engine/bench/<what>.ts and exports `run(args): Promise<number>`; add new
// ones to the table below.
import { UserError } from '../errors.js';

type Bench = { summary: string; load: () => Promise<{ run(args: string[]): Promise<number> }> };

const benches: Record<string, Bench> = {
  cache: {
    summary: 'cache [--model F] [--backend cpu] [--contexts 4096,16384] [--turn 32] [--storage f16|int8] [--json]: cold prefill, follow-up TTFT, restore from disk vs recompute, bytes on disk per token',
    load: () => import('../bench/cache.js'),
  },
  context: { summary: 'context [--tree DIR] [--model F] [--threads 1,2] [--json]: walk + tokenize throughput, tokens recomputed after an edit', load: () => import('../bench/context.js') },
  engine: {
    summary: 'engine [--model F] [--backend cpu] [--threads N] [--prompt 512,4096] [--decode 64] [--json]: prefill and decode tok/s vs llama.cpp, same file and threads, peak RSS',
    load: () => import('../bench/engine.js'),
  },
  fidelity: {
    summary: 'fidelity [--model F] [--methods dense,llama] [--tasks passkey,kv] [--lengths 4K,32K] [--depths 0,50,100] [--out heat.svg|png] [--json]: accuracy of attention methods on a constructed induction model',
    load: () => import('../bench/fidelity.js'),
  },
  retrieval: {
    summary: 'retrieval [--contexts 8K,32K,128K] [--methods dense,flat,ivf,graph,nsw] [--top-k 100] [--recall 0.9] [--json]: retrieval attention at decode — keys scanned, recall@k, time per token, index build share, memory',
    load: () => import('../bench/retrieval.js'),
  },
  serve: {
    summary: 'serve [--model F] [--backend cpu] [--sessions 4] [--repo-bytes 6000] [--max-tokens 24] [--duration 20] [--json]: K concurrent streaming sessions over HTTP, one shared repository prefix vs K independent ones (tokens computed, time to first token, tokens/s, errors, server RSS)',
    load: () => import('../bench/serve.js'),
  },
  sparse: {
    summary: 'sparse [--model F] [--lengths 16K,32K,64K,128K] [--pattern config|vs:V,S|ashape:S,L|block:K] [--cache-dir D] [--json]: sparse vs dense prefill, density, recall, answers',
    load: () => import('../bench/sparse.js'),
  },
  tokenize: {
    summary: 'tokenize [--model F] [--file P...] [--json]: tokens/s, repokv vs llama.cpp, same file, one thread',
    load: () => import('../bench/tokenize.js'),
  },
};

export async function run(args: string[]): Promise<number> {
  const [what, ...rest] = args;
  if (!what || what === '--help' || what === '-h') {
    console.log(['usage: repokv bench <benchmark> [options]', '', ...Object.entries(benches).map(([k, b]) => `  ${k.padEnd(10)} ${b.summary}`)].join('\n'));
    return what ? 0 : 2;
  }
  const b = benches[what];
  if (!b) throw new UserError(`unknown benchmark "${what}" (available: ${Object.keys(benches).join(', ')})`);
  return (await b.load()).run(rest);
}
