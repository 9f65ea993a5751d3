// Entry of the tokenizer pool's workers when RepoKV runs from its TypeScript sources (tsx). tsx's
// ESM hooks registered in this thread load the worker at full speed; `--import tsx` in a worker's
// execArgv does not reach its ES module loader on Node 20, and falling back to tsx's CommonJS path
// made tokenizing measurably (about 2x) slower. The compiled build loads tokenize-worker.js directly.
import { register } from 'tsx/esm/api';

register();
const mod = await import('./tokenize-worker.ts');
export default mod.default;
