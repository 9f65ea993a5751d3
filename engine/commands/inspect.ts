// `repokv inspect <model.gguf> [--json]`: what a model file is, without loading its weights —
// architecture, size, tensor types, hyper-parameters, RoPE, KV cost per token, tokenizer, chat template.
import { UserError } from '../errors.js';
import { GGUFFile, type GGUFArray } from '../gguf/reader.js';
import { FILE_TYPE_NAMES, readHParams, type ModelHParams } from '../gguf/hparams.js';
import { typeName } from '../gguf/types.js';
import { parseArgs } from './args.js';

const TEMPLATE_LINES = 8;

export interface ModelInspection {
  file: string;
  fileBytes: number;
  ggufVersion: number;
  alignment: number;
  architecture: string;
  name?: string;
  fileType?: string;
  parameters: number;
  tensorCount: number;
  /** Per tensor type: how many tensors, elements and bytes. */
  tensorTypes: Record<string, { tensors: number; elements: number; bytes: number }>;
  hparams: Omit<ModelHParams, 'kvBytesPerToken' | 'unusedTensors'>;
  unusedTensors: string[];
  kvBytesPerToken: { f16: number; f32: number };
  kvBytesAtContext: { f16: number; f32: number };
  tokenizer: {
    model?: string;
    pre?: string;
    vocabSize: number;
    special: Record<string, { id: number; text?: string }>;
    addBos?: boolean;
    addEos?: boolean;
  };
  chatTemplate?: { chars: number; lines: number; head: string[] };
}

/** Everything `inspect` reports, as data (used by --json and by tests). */
export function inspectModel(path: string): ModelInspection {
  const file = GGUFFile.open(path);
  try {
    const hp = readHParams(file);
    const tensorTypes: ModelInspection['tensorTypes'] = {};
    let parameters = 0;
    for (const t of file.tensors) {
      const k = typeName(t.type);
      const e = (tensorTypes[k] ??= { tensors: 0, elements: 0, bytes: 0 });
      e.tensors++;
      e.elements += t.nElements;
      e.bytes += t.nBytes;
      parameters += t.nElements;
    }
    const tokens = file.getArray('tokenizer.ggml.tokens');
    const tokenText = (id: number): string | undefined => {
      const v = tokens?.items[id];
      return typeof v === 'string' ? v : undefined;
    };
    const special: ModelInspection['tokenizer']['special'] = {};
    for (const [key, v] of file.metadata) {
      const m = /^tokenizer\.ggml\.(\w+)_token_id$/.exec(key);
      if (!m || typeof v.value !== 'number') continue;
      const text = tokenText(v.value);
      special[m[1]] = { id: v.value, ...(text !== undefined ? { text } : {}) };
    }
    const template = file.get('tokenizer.chat_template');
    const lines = typeof template === 'string' ? template.split('\n') : [];
    const { kvBytesPerToken, unusedTensors, ...plain } = hp;
    const ft = hp.fileType;
    const addBos = file.get('tokenizer.ggml.add_bos_token');
    const addEos = file.get('tokenizer.ggml.add_eos_token');
    const tokModel = file.get('tokenizer.ggml.model');
    const tokPre = file.get('tokenizer.ggml.pre');
    return {
      file: path,
      fileBytes: file.size,
      ggufVersion: file.version,
      alignment: file.alignment,
      architecture: hp.arch,
      ...(hp.name !== undefined ? { name: hp.name } : {}),
      ...(ft !== undefined ? { fileType: FILE_TYPE_NAMES[ft] ?? `unknown(${ft})` } : {}),
      parameters,
      tensorCount: file.tensors.length,
      tensorTypes,
      hparams: plain,
      unusedTensors,
      kvBytesPerToken: { f16: kvBytesPerToken('f16'), f32: kvBytesPerToken('f32') },
      kvBytesAtContext: { f16: kvBytesPerToken('f16') * hp.contextLength, f32: kvBytesPerToken('f32') * hp.contextLength },
      tokenizer: {
        ...(typeof tokModel === 'string' ? { model: tokModel } : {}),
        ...(typeof tokPre === 'string' ? { pre: tokPre } : {}),
        vocabSize: tokens?.items.length ?? 0,
        special,
        ...(typeof addBos === 'boolean' ? { addBos } : {}),
        ...(typeof addEos === 'boolean' ? { addEos } : {}),
      },
      ...(typeof template === 'string' ? { chatTemplate: { chars: template.length, lines: lines.length, head: lines.slice(0, TEMPLATE_LINES) } } : {}),
    };
  } finally {
    file.close();
  }
}

function bytes(n: number): string {
  if (n < 1024) return `${n} B`;
  const units = ['KiB', 'MiB', 'GiB', 'TiB'];
  let v = n / 1024;
  let u = 0;
  while (v >= 1024 && u < units.length - 1) {
    v /= 1024;
    u++;
  }
  return `${v < 10 ? v.toFixed(2) : v < 100 ? v.toFixed(1) : v.toFixed(0)} ${units[u]}`;
}

function count(n: number): string {
  if (n >= 1e9) return `${(n / 1e9).toFixed(2)}B`;
  if (n >= 1e6) return `${(n / 1e6).toFixed(2)}M`;
  if (n >= 1e3) return `${(n / 1e3).toFixed(1)}K`;
  return String(n);
}

/** Keeps control characters of token texts and template lines from garbling the terminal. */
function printable(s: string): string {
  return s.replace(/[\u0000-\u001f\u007f-\u009f]/g, (c) => (c === '\t' ? '  ' : `\\x${c.charCodeAt(0).toString(16).padStart(2, '0')}`));
}

export function formatInspection(m: ModelInspection): string {
  const h = m.hparams;
  const out: string[] = [];
  const row = (k: string, v: string) => out.push(`  ${k.padEnd(14)} ${v}`);
  out.push(`${m.file}  (${bytes(m.fileBytes)}, GGUF v${m.ggufVersion})`);
  row('architecture', `${m.architecture}${m.name ? `  "${printable(m.name)}"` : ''}`);
  row('parameters', `${count(m.parameters)}${m.fileType ? `  (file type ${m.fileType})` : ''}`);
  const types = Object.entries(m.tensorTypes)
    .sort((a, b) => b[1].bytes - a[1].bytes)
    .map(([k, v]) => `${v.tensors} ${k} (${bytes(v.bytes)})`)
    .join(', ');
  row('tensors', `${m.tensorCount}: ${types}`);
  row('shape', `${h.nLayers} layers, embd ${h.nEmbd}, ${h.nHeads} heads (${h.nKVHeads} KV, head size ${h.headDim}), ff ${h.nFF}, vocab ${h.nVocab}`);
  row('context', `${h.contextLength} tokens`);
  const sc = h.ropeScaling;
  const scaling = sc.type === 'none' ? 'no scaling' : `${sc.type} scaling x${sc.factor} from ${sc.origCtx}`;
  row('rope', `${h.ropeType === 'norm' ? 'norm (adjacent pairs)' : 'neox (half split)'}, base ${h.ropeFreqBase}, ${h.ropeDim} dims, ${scaling}${h.hasRopeFreqs ? ', rope_freqs' : ''}`);
  row('layers', `RMS norm eps ${Number(h.normEps.toPrecision(6))}, ${h.tiedEmbeddings ? 'tied' : 'untied'} embeddings, QKV bias ${h.hasQKVBias ? 'yes' : 'no'}, Q/K norm ${h.hasQKNorm ? 'yes' : 'no'}`);
  row('KV per token', `${bytes(m.kvBytesPerToken.f16)} f16, ${bytes(m.kvBytesPerToken.f32)} f32  (full context: ${bytes(m.kvBytesAtContext.f16)} f16)`);
  const t = m.tokenizer;
  const specials = Object.entries(t.special)
    .map(([k, v]) => `${k} ${v.id}${v.text !== undefined ? ` "${printable(v.text)}"` : ''}`)
    .join(', ');
  row('tokenizer', `${t.model ?? 'none'}${t.pre ? ` / ${t.pre}` : ''}, ${t.vocabSize} tokens${t.addBos !== undefined ? `, add_bos ${t.addBos}` : ''}`);
  if (specials) row('special', specials);
  if (m.unusedTensors.length) row('unused', `${m.unusedTensors.length} tensors not used by ${m.architecture}: ${m.unusedTensors.slice(0, 5).join(', ')}${m.unusedTensors.length > 5 ? ', ...' : ''}`);
  if (m.chatTemplate) {
    row('chat template', `${m.chatTemplate.chars} chars, ${m.chatTemplate.lines} lines${m.chatTemplate.lines > m.chatTemplate.head.length ? `, first ${m.chatTemplate.head.length}:` : ':'}`);
    for (const l of m.chatTemplate.head) out.push(`    | ${printable(l).slice(0, 160)}`);
  } else row('chat template', 'none');
  return out.join('\n');
}

export async function run(args: string[]): Promise<number> {
  const p = parseArgs(args, ['json', 'help']);
  if (p.flags.has('help')) {
    console.log('usage: repokv inspect <model.gguf> [--json]');
    return 0;
  }
  for (const k of p.flags.keys()) if (k !== 'json') throw new UserError(`unknown option --${k} (usage: repokv inspect <model.gguf> [--json])`);
  if (p.positional.length !== 1) throw new UserError('give exactly one model file (usage: repokv inspect <model.gguf> [--json])');
  const m = inspectModel(p.positional[0]);
  console.log(p.flags.has('json') ? JSON.stringify(m, null, 2) : formatInspection(m));
  return 0;
}
