// Task generators of the fidelity harness (issue 7), modelled on RULER's passkey and SCBench's Retr.KV,
// built at the token level: each piece of text is tokenized on its own and the ids concatenated, so
// both engines (ours and llama.cpp) receive exactly the same ids and the golden answer is exactly the
// ids that follow the needle in the context.
//
// The constructed induction model (engine/model/induction.ts) continues text by its last two tokens,
// so every task checks its own answer path (checkAnswerPath): at each answer step, every earlier
// occurrence of the current 2-gram must be followed by the golden token. A task that fails the check
// is regenerated with the next seed; the check is what makes "dense gets 100%" a theorem rather than
// a hope, and a miss by another method a real loss of information.

import type { Tokenizer } from '../text/tokenizer.js';
import { Rng } from '../model/synthetic.js';

export type TaskName = 'passkey' | 'kv';
export const TASK_NAMES: readonly TaskName[] = ['passkey', 'kv'];

export interface Question {
  /** Question tokens, appended after the context (and, multi-turn, after the previous turns). */
  tokens: number[];
  /** Golden answer tokens. */
  answer: number[];
  /** Where the needle (passkey) or the asked pair (kv) starts, as a fraction of the context. */
  depth: number;
}

export interface TaskInstance {
  task: TaskName;
  /** Requested prompt length (context + first question), in tokens. */
  length: number;
  context: number[];
  questions: Question[];
  seed: number;
}

/**
 * SCBench's two shared-context modes (§3.2 of research/seed_systems.md), and 'single': one cold prompt
 * per question, context and question prefilled together (RULER / InfiniteBench / MInference's own
 * evaluation) — the question's rows are then part of the last prefill chunk, so a sparse prefill's
 * estimate and index cover them.
 */
export type SharedContextMode = 'multi-request' | 'multi-turn' | 'single';
export const MODES: readonly SharedContextMode[] = ['multi-request', 'multi-turn'];
export const ALL_MODES: readonly SharedContextMode[] = ['multi-request', 'multi-turn', 'single'];

/** The prompt of question k in a mode: context + question (multi-request) or + every earlier turn with its golden answer (multi-turn). */
export function promptOf(inst: TaskInstance, k: number, mode: SharedContextMode): number[] {
  const out = inst.context.slice();
  if (mode === 'multi-turn') for (let i = 0; i < k; i++) out.push(...inst.questions[i].tokens, ...inst.questions[i].answer);
  out.push(...inst.questions[k].tokens);
  return out;
}

/**
 * Checks that a 2-gram continuation of `prompt` is `answer`: for each answer step, the last two
 * tokens so far occur earlier (ending at j − 1, so the model copies token j) and every such
 * occurrence is followed by the golden token. Positions 0 and 1 count with the keys the model gives
 * them (its previous-token heads see only themselves there). Returns null when fine, else why not.
 */
export function checkAnswerPath(prompt: number[], answer: number[]): string | null {
  const seq = prompt.concat(answer);
  // bigram → the tokens that follow its occurrences (positions j whose two previous tokens are it)
  const follows = new Map<string, Set<number>>();
  const add = (a: number, b: number, next: number) => {
    const key = `${a},${b}`;
    let s = follows.get(key);
    if (!s) follows.set(key, (s = new Set()));
    s.add(next);
  };
  const last = prompt.length - 1 + answer.length - 1; // the last query position
  if (seq.length > 0) add(seq[0], seq[0], seq[0]);
  if (seq.length > 1) {
    add(seq[0], seq[0], seq[1]);
    add(seq[1], seq[0], seq[1]);
  }
  for (let j = 2; j <= last; j++) add(seq[j - 2], seq[j - 1], seq[j]);
  for (let k = 0; k < answer.length; k++) {
    const i = prompt.length - 1 + k;
    const s = follows.get(`${seq[i - 1]},${seq[i]}`);
    if (!s) return `answer step ${k}: the 2-gram (${seq[i - 1]}, ${seq[i]}) does not occur earlier`;
    if (s.size !== 1 || !s.has(answer[k])) return `answer step ${k}: the 2-gram (${seq[i - 1]}, ${seq[i]}) is followed by ${[...s].join(', ')} in the prompt (want ${answer[k]})`;
  }
  return null;
}

function checkInstance(inst: TaskInstance): string | null {
  for (const mode of MODES) {
    for (let k = 0; k < inst.questions.length; k++) {
      const why = checkAnswerPath(promptOf(inst, k, mode), inst.questions[k].answer);
      if (why) return `${mode} question ${k}: ${why}`;
    }
  }
  return null;
}

class Pieces {
  private cache = new Map<string, number[]>();
  constructor(readonly tok: Tokenizer) {}
  ids(text: string): number[] {
    let v = this.cache.get(text);
    if (!v) this.cache.set(text, (v = Array.from(this.tok.encode(text, { addSpecial: false, parseSpecial: false }))));
    return v;
  }
}

// ---- passkey (RULER niah / InfiniteBench passkey) ------------------------------------------------

const PASSKEY_INTRO = 'There is an important info hidden inside a lot of irrelevant text. Find it and memorize it. I will quiz you about the important information there.\n';
const PASSKEY_FILLER = ' The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again.';
const PASSKEY_QUESTION = '\n\nWhat is the pass key? The pass key is';

export interface PasskeyOptions {
  length: number;
  /** Needle depth in [0, 1]. */
  depth: number;
  seed: number;
  /** Digits of the pass key (default 6). */
  digits?: number;
}

export function passkeyTask(tok: Tokenizer, o: PasskeyOptions): TaskInstance {
  const p = new Pieces(tok);
  for (let attempt = 0; attempt < 20; attempt++) {
    const rng = new Rng((o.seed * 7919 + attempt * 104729 + Math.round(o.depth * 1000)) >>> 0);
    let key = String(1 + rng.int(9));
    while (key.length < (o.digits ?? 6)) key += String(rng.int(10));
    const keyIds = p.ids(` ${key}`);
    const needle = [...p.ids(' The pass key is'), ...keyIds, ...p.ids('. Remember it.')];
    const intro = p.ids(PASSKEY_INTRO);
    const filler = p.ids(PASSKEY_FILLER);
    const question = p.ids(PASSKEY_QUESTION);
    const units = Math.max(0, Math.floor((o.length - intro.length - needle.length - question.length) / filler.length));
    const at = Math.round(Math.min(1, Math.max(0, o.depth)) * units);
    const context = intro.slice();
    for (let u = 0; u < units; u++) {
      if (u === at) context.push(...needle);
      context.push(...filler);
    }
    const needleStart = at === units ? context.length : intro.length + at * filler.length;
    if (at === units) context.push(...needle);
    const inst: TaskInstance = {
      task: 'passkey',
      length: o.length,
      context,
      questions: [{ tokens: question, answer: keyIds, depth: context.length ? needleStart / context.length : 0 }],
      seed: o.seed,
    };
    if (!checkInstance(inst)) return inst;
  }
  throw new Error(`passkey task: no unambiguous needle for length ${o.length}, depth ${o.depth}, seed ${o.seed}`);
}

// ---- key-value retrieval (SCBench Retr.KV, InfiniteBench kv_retrieval) -----------------------------

const KV_INTRO = 'Extract the value corresponding to the specified key in the list below.\n\n';
const KV_QUESTION = '\nWhat is the value of the following key? ';

export interface KVOptions {
  length: number;
  /** Questions per context (asked pairs at evenly spread depths). */
  questions: number;
  seed: number;
  /** Tokens per key and per value (default 8 each; SCBench's UUIDs are ~36 characters). */
  keyTokens?: number;
  valueTokens?: number;
}

/** Alphabetic tokens without a leading space: the alphabet keys and values are drawn from. */
function kvPool(tok: Tokenizer): number[] {
  const pool: number[] = [];
  const n = tok.vocab.texts.length;
  for (let i = 0; i < n; i++) if (/^[A-Za-z]{2,}$/.test(tok.decode([i]))) pool.push(i);
  return pool;
}

export function kvTask(tok: Tokenizer, o: KVOptions): TaskInstance {
  const p = new Pieces(tok);
  const pool = kvPool(tok);
  const kt = o.keyTokens ?? 8;
  const vt = o.valueTokens ?? 8;
  const intro = p.ids(KV_INTRO);
  const sep = p.ids(':');
  const nl = p.ids('\n');
  const qText = p.ids(KV_QUESTION);
  if (sep.length !== 1 || nl.length !== 1) throw new Error('kv task: ":" and "\\n" must be single tokens');
  const pairLen = kt + 1 + vt + 1;
  for (let attempt = 0; attempt < 20; attempt++) {
    const rng = new Rng((o.seed * 15485863 + attempt * 32452843) >>> 0);
    const qLen = qText.length + kt + 1;
    const nPairs = Math.max(o.questions, Math.floor((o.length - intro.length - qLen) / pairLen));
    // The 2-gram model needs every 2-gram on an asked pair's answer path (key's last token + ":", then
    // the value's) to be unique in the context: the asked keys' last tokens and their values' tokens
    // come from a reserved part of the pool that no other pair uses.
    const asked = Array.from({ length: o.questions }, (_, q) => (o.questions === 1 ? 0 : Math.round((q * (nPairs - 1)) / (o.questions - 1))));
    const askedSet = new Set(asked);
    const shuffled = pool.slice();
    for (let i = shuffled.length - 1; i > 0; i--) {
      const j = rng.int(i + 1);
      [shuffled[i], shuffled[j]] = [shuffled[j], shuffled[i]];
    }
    const nReserved = o.questions * (1 + vt);
    if (pool.length < nReserved + 64) throw new Error(`kv task: ${o.questions} questions need ${nReserved} reserved tokens of a pool of ${pool.length}`);
    const reserved = shuffled.slice(0, nReserved);
    const free = shuffled.slice(nReserved);
    const draw = (n: number) => Array.from({ length: n }, () => free[rng.int(free.length)]);
    const context = intro.slice();
    const pairs: { key: number[]; value: number[]; start: number }[] = [];
    let r = 0;
    for (let i = 0; i < nPairs; i++) {
      const key = draw(kt);
      const value = draw(vt);
      if (askedSet.has(i)) {
        key[kt - 1] = reserved[r++];
        for (let v = 0; v < vt; v++) value[v] = reserved[r++];
      }
      pairs.push({ key, value, start: context.length });
      context.push(...key, ...sep, ...value, ...nl);
    }
    const questions: Question[] = asked.map((i) => ({ tokens: [...qText, ...pairs[i].key, ...sep], answer: pairs[i].value, depth: pairs[i].start / context.length }));
    const inst: TaskInstance = { task: 'kv', length: o.length, context, questions, seed: o.seed };
    if (!checkInstance(inst)) return inst;
  }
  throw new Error(`kv task: no unambiguous key set for length ${o.length}, seed ${o.seed}`);
}

/** Renders token ids as text (for reports and debugging). */
export function render(tok: Tokenizer, ids: number[]): string {
  return tok.decode(ids);
}
