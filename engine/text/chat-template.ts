// Chat templates: the Jinja template a model carries in tokenizer.chat_template, rendered with
// @huggingface/jinja the way Hugging Face's apply_chat_template does (trim_blocks, lstrip_blocks,
// messages, add_generation_prompt, bos_token, eos_token, optional tools). A template that does not
// parse or fails to render is the model file's problem: the error names the file and Jinja's message.

import { Template } from '@huggingface/jinja';
import type { GGUFFile } from '../gguf/reader.js';
import { UserError } from '../errors.js';

export interface ChatMessage {
  role: 'system' | 'user' | 'assistant' | 'tool' | (string & {});
  content: string;
  /** Tool calls of an assistant message, as the OpenAI API shapes them. */
  tool_calls?: { type?: 'function'; function: { name: string; arguments: unknown } }[];
}

export interface RenderOptions {
  /** End with the header of an assistant turn, so the model writes the reply (default true). */
  addGenerationPrompt?: boolean;
  /** Tool (function) definitions, for templates that describe them. */
  tools?: unknown[];
  /** More variables for the template. */
  variables?: Record<string, unknown>;
  /**
   * The tokenizer will add BOS (EOS) itself (Tokenizer.addBos, encode with addSpecial): drop a BOS
   * (EOS) text the template wrote at the start (end), so the prompt does not get it twice. llama.cpp
   * does the same (common/chat.cpp).
   */
  addBos?: boolean;
  addEos?: boolean;
}

export class ChatTemplate {
  private readonly template: Template;

  /**
   * @param source the Jinja text
   * @param bosToken text of the model's BOS token (the template's bos_token)
   * @param eosToken text of the model's EOS token (eos_token)
   * @param origin names the template in errors (the model file)
   */
  constructor(
    readonly source: string,
    readonly bosToken: string,
    readonly eosToken: string,
    readonly origin = 'chat template',
  ) {
    try {
      this.template = new Template(source);
    } catch (e) {
      throw new UserError(`${origin}: its chat template does not parse (Jinja: ${oneLine(e)}); pass a template of your own or use another model file`);
    }
  }

  /** The template of a GGUF model, with its BOS/EOS token texts; null when the file has none. */
  static fromGGUF(file: GGUFFile): ChatTemplate | null {
    const source = file.getString('tokenizer.chat_template');
    if (source === undefined) return null;
    const tokens = file.getArray('tokenizer.ggml.tokens');
    const text = (key: string): string => {
      const id = file.getNumber(key);
      const t = id !== undefined && tokens ? tokens.items[id] : undefined;
      return typeof t === 'string' ? t : '';
    };
    return new ChatTemplate(source, text('tokenizer.ggml.bos_token_id'), text('tokenizer.ggml.eos_token_id'), file.path);
  }

  render(messages: ChatMessage[], opts: RenderOptions = {}): string {
    let out: string;
    try {
      out = this.template.render({
        ...opts.variables,
        messages,
        add_generation_prompt: opts.addGenerationPrompt ?? true,
        bos_token: this.bosToken,
        eos_token: this.eosToken,
        ...(opts.tools ? { tools: opts.tools } : {}),
      });
    } catch (e) {
      throw new UserError(`${this.origin}: its chat template failed to render these messages (Jinja: ${oneLine(e)})`);
    }
    if (opts.addBos && this.bosToken && out.startsWith(this.bosToken)) out = out.slice(this.bosToken.length);
    if (opts.addEos && this.eosToken && out.endsWith(this.eosToken)) out = out.slice(0, out.length - this.eosToken.length);
    return out;
  }
}

function oneLine(e: unknown): string {
  const m = e instanceof Error ? e.message : String(e);
  return m.replace(/\s+/g, ' ').trim();
}
