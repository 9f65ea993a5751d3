// What the commands ask, and the material they attach, as plain functions (no `vscode` import, so
// the tests check them directly). Material from the editor is data for the model: it goes after the
// repository block (the prefix stays cached) as fenced, labelled attachments.

import type { Attachment } from '../engine/serve/protocol.js';

export const EXPLAIN_REPOSITORY =
  'Explain this repository: what it is for, how it is organised (the main folders and files, as path references), ' +
  'the main components and how they fit together, and where to start reading.';

export function explainFileQuestion(relPath: string): string {
  return `Explain the file ${relPath}: its purpose, its main parts (with path:line references), and how the rest of the repository uses it.`;
}

export function explainSelectionQuestion(relPath: string, startLine: number, endLine: number): string {
  return `Explain the selected code from ${relPath}:${startLine}${endLine > startLine ? `-${endLine}` : ''}: what it does, step by step, and how it fits into the repository.`;
}

export const DEBUG_QUESTION =
  'Help me debug this. Using the repository and the material below, what is going wrong, where (path:line), and what should I check or change first?';

export interface DiagnosticInfo {
  path: string;
  /** 1-based */
  line: number;
  severity: 'error' | 'warning' | 'info' | 'hint';
  message: string;
  source?: string;
}

export interface StackFrameInfo {
  name: string;
  path?: string;
  line?: number;
}

export interface DebugMaterial {
  diagnostics: DiagnosticInfo[];
  terminalText?: string;
  debug?: { sessionName: string; exception?: string; frames: StackFrameInfo[] };
}

const MAX_DIAGNOSTICS = 50;
const MAX_TEXT = 8000;

function clip(text: string, max = MAX_TEXT): string {
  return text.length > max ? `${text.slice(0, max)}\n… (${text.length - max} more characters left out)` : text;
}

/** The attachments of a debugging session: problems first, then the terminal, then the stopped frame. */
export function debugAttachments(m: DebugMaterial): Attachment[] {
  const out: Attachment[] = [];
  const diags = [...m.diagnostics].sort((a, b) => rank(a.severity) - rank(b.severity)).slice(0, MAX_DIAGNOSTICS);
  if (diags.length) {
    const more = m.diagnostics.length - diags.length;
    out.push({
      label: `Problems (${m.diagnostics.length})`,
      text: diags.map((d) => `${d.path}:${d.line} ${d.severity}: ${d.message}${d.source ? ` [${d.source}]` : ''}`).join('\n') + (more > 0 ? `\n… ${more} more` : ''),
    });
  }
  if (m.terminalText?.trim()) out.push({ label: 'Selected terminal output', text: clip(m.terminalText.trim()) });
  if (m.debug) {
    const lines = m.debug.frames.slice(0, 30).map((f) => `at ${f.name}${f.path ? ` (${f.path}${f.line ? `:${f.line}` : ''})` : ''}`);
    out.push({
      label: `Debug session "${m.debug.sessionName}", stopped`,
      text: `${m.debug.exception ? `Exception: ${clip(m.debug.exception, 2000)}\n` : ''}${lines.join('\n') || '(no stack frames)'}`,
    });
  }
  return out;
}

function rank(s: DiagnosticInfo['severity']): number {
  return { error: 0, warning: 1, info: 2, hint: 3 }[s];
}

/** The title of a debugging session: the first error if there is one. */
export function debugTitle(m: DebugMaterial): string {
  const first = m.debug?.exception ?? m.diagnostics.find((d) => d.severity === 'error')?.message ?? m.terminalText?.trim().split('\n').pop() ?? 'debugging';
  return `Debug: ${first.replace(/\s+/g, ' ').slice(0, 60)}`;
}

/** A selection or file as an attachment, with its place. */
export function codeAttachment(relPath: string, text: string, startLine?: number, endLine?: number): Attachment {
  const where = startLine ? `${relPath}:${startLine}${endLine && endLine > startLine ? `-${endLine}` : ''}` : relPath;
  return { label: where, text: clip(text) };
}
