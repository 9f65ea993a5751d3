// A conversation about a repository, laid out for prefix caching:
//
//   [template start] [system: instructions + repository document] [template glue] [user 1] … [user N] [assistant header]
//
// The model's own chat template renders the structure; message contents are tokenized on their own
// (the repository segment by segment, earlier answers as the very ids that were generated), so the
// repository block is the same tokens in every request, turn and session, and each turn only appends.
// Anything volatile (the question, diagnostics, dates) comes after the repository, never inside it.

import { existsSync, mkdirSync, readFileSync, renameSync, writeFileSync, readdirSync, unlinkSync } from 'node:fs';
import { join } from 'node:path';
import { randomUUID } from 'node:crypto';
import type { ChatTemplate } from '../text/chat-template.js';
import type { Tokenizer } from '../text/tokenizer.js';
import { UserError } from '../errors.js';

export const SYSTEM_INSTRUCTIONS =
  'You are RepoKV, an assistant that answers questions about the software repository below. ' +
  'Refer to files by their paths and to lines as path:line. Say so when the repository does not contain the answer.\n\n';

export interface Turn {
  role: 'user' | 'assistant';
  content: string;
  /** For assistant turns: the generated ids, replayed as they were so the KV stays valid. */
  tokens?: number[];
}

export interface SessionRecord {
  id: string;
  title: string;
  roots: string[];
  created: string;
  turns: Turn[];
}

/** Content of a message: text to tokenize, or pre-tokenized pieces. */
type Content = { text: string } | { tokens: ArrayLike<number>[] };

// Private-use sentinels: survive trim/strip in templates and cannot collide with repository text
// (they are never produced by decoding the document, which is plain file text).
const sentinel = (i: number) => `\uE000RKV${i}\uE001`;

/**
 * Token ids of a chat with the given contents. The template is rendered once with sentinels in
 * place of the contents; the text between sentinels (role headers, separators) is tokenized with
 * special tokens parsed, each content on its own.
 */
export function chatPromptTokens(
  template: ChatTemplate,
  tokenizer: Tokenizer,
  messages: { role: string; content: Content }[],
  addGenerationPrompt = true,
  /** Stop after this message's content (the prefix every longer conversation starts with). */
  throughMessage?: number,
): number[] {
  const rendered = template.render(
    messages.map((m, i) => ({ role: m.role, content: sentinel(i) })),
    { addGenerationPrompt, addBos: tokenizer.addBos },
  );
  const out: number[] = [];
  const push = (a: ArrayLike<number>) => {
    for (let i = 0; i < a.length; i++) out.push(a[i]);
  };
  let rest = rendered;
  let first = true;
  for (let i = 0; i < messages.length; i++) {
    const at = rest.indexOf(sentinel(i));
    if (at < 0) throw new UserError(`the model's chat template drops message ${i + 1} (${messages[i].role}); use a model whose template keeps the conversation`);
    push(tokenizer.encode(rest.slice(0, at), { addSpecial: first, parseSpecial: true }));
    first = false;
    const c = messages[i].content;
    if ('text' in c) push(tokenizer.encode(c.text, { addSpecial: false, parseSpecial: false }));
    else for (const piece of c.tokens) push(piece);
    rest = rest.slice(at + sentinel(i).length);
    if (i === throughMessage) return out;
  }
  push(tokenizer.encode(rest, { addSpecial: first, parseSpecial: true }));
  return out;
}

/** Prompt for the next answer: repository (segments), earlier turns, and the new question. */
export function repoPromptTokens(
  template: ChatTemplate,
  tokenizer: Tokenizer,
  repoSegments: ArrayLike<number>[],
  turns: Turn[],
  question: string,
): number[] {
  const instructions = tokenizer.encode(SYSTEM_INSTRUCTIONS, { addSpecial: false, parseSpecial: false });
  const messages: { role: string; content: Content }[] = [{ role: 'system', content: { tokens: [instructions, ...repoSegments] } }];
  for (const t of turns) messages.push({ role: t.role, content: t.role === 'assistant' && t.tokens ? { tokens: [t.tokens] } : { text: t.content } });
  messages.push({ role: 'user', content: { text: question } });
  return chatPromptTokens(template, tokenizer, messages);
}

/**
 * The repository prefix alone — template start, instructions, repository document — exactly the
 * tokens every conversation about it starts with. Prefilling it (repokv index) fills the cache.
 */
export function repoPrefixTokens(template: ChatTemplate, tokenizer: Tokenizer, repoSegments: ArrayLike<number>[]): number[] {
  const instructions = tokenizer.encode(SYSTEM_INSTRUCTIONS, { addSpecial: false, parseSpecial: false });
  return chatPromptTokens(
    template,
    tokenizer,
    [
      { role: 'system', content: { tokens: [instructions, ...repoSegments] } },
      { role: 'user', content: { text: '' } },
    ],
    true,
    0,
  );
}

/** Sessions on disk: one JSON file each, written atomically. */
export class SessionStore {
  constructor(readonly dir: string) {}

  private path(id: string): string {
    if (!/^[A-Za-z0-9._-]{1,80}$/.test(id)) throw new UserError(`session id "${id}" is not valid (letters, digits, . _ - only)`);
    return join(this.dir, `${id}.json`);
  }

  create(roots: string[], id = randomUUID().slice(0, 8), title = ''): SessionRecord {
    return { id, title, roots, created: new Date().toISOString(), turns: [] };
  }

  load(id: string): SessionRecord | undefined {
    const p = this.path(id);
    if (!existsSync(p)) return undefined;
    try {
      return JSON.parse(readFileSync(p, 'utf8')) as SessionRecord;
    } catch {
      throw new UserError(`session "${id}" is damaged (${p}); delete it or start a new session`);
    }
  }

  save(s: SessionRecord): void {
    mkdirSync(this.dir, { recursive: true });
    const p = this.path(s.id);
    const tmp = `${p}.tmp-${process.pid}`;
    writeFileSync(tmp, JSON.stringify(s, null, 1));
    renameSync(tmp, p);
  }

  list(): SessionRecord[] {
    if (!existsSync(this.dir)) return [];
    const out: SessionRecord[] = [];
    for (const f of readdirSync(this.dir).sort()) {
      if (!f.endsWith('.json')) continue;
      try {
        out.push(JSON.parse(readFileSync(join(this.dir, f), 'utf8')) as SessionRecord);
      } catch {
        /* a damaged session is skipped in listings; load() names it */
      }
    }
    return out;
  }

  delete(id: string): boolean {
    const p = this.path(id);
    if (!existsSync(p)) return false;
    unlinkSync(p);
    return true;
  }
}
