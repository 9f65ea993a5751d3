// Finding GGUF model files for "Select model…": folders from the settings, Ollama's model store (its
// blobs are GGUF files named by digest; the manifests say which model each is), and LM Studio's
// models folder. No `vscode` import: the tests run it on made-up folders.

import { existsSync, readdirSync, readFileSync, statSync, openSync, readSync, closeSync } from 'node:fs';
import { homedir } from 'node:os';
import { basename, join } from 'node:path';

export interface FoundModel {
  path: string;
  label: string;
  source: 'settings' | 'ollama' | 'lmstudio';
  bytes: number;
}

/** True when the file starts with the GGUF magic. */
export function isGGUF(path: string): boolean {
  let fd: number | undefined;
  try {
    fd = openSync(path, 'r');
    const b = Buffer.alloc(4);
    return readSync(fd, b, 0, 4, 0) === 4 && b.toString('latin1') === 'GGUF';
  } catch {
    return false;
  } finally {
    if (fd !== undefined) closeSync(fd);
  }
}

function ggufFilesUnder(dir: string, depth = 4): string[] {
  const out: string[] = [];
  let entries: import('node:fs').Dirent[];
  try {
    entries = readdirSync(dir, { withFileTypes: true });
  } catch {
    return out;
  }
  for (const e of entries) {
    const p = join(dir, e.name);
    if (e.isDirectory() && depth > 0 && !e.name.startsWith('.')) out.push(...ggufFilesUnder(p, depth - 1));
    else if (e.isFile() && e.name.toLowerCase().endsWith('.gguf')) out.push(p);
  }
  return out;
}

function size(p: string): number {
  try {
    return statSync(p).size;
  } catch {
    return 0;
  }
}

/** Ollama: manifests/<registry>/<namespace>/<model>/<tag> → the layer whose mediaType is the model. */
export function ollamaModels(root = process.env.OLLAMA_MODELS || join(homedir(), '.ollama', 'models')): FoundModel[] {
  const manifests = join(root, 'manifests');
  const out: FoundModel[] = [];
  const walk = (dir: string, parts: string[]) => {
    let entries: import('node:fs').Dirent[];
    try {
      entries = readdirSync(dir, { withFileTypes: true });
    } catch {
      return;
    }
    for (const e of entries) {
      const p = join(dir, e.name);
      if (e.isDirectory()) walk(p, [...parts, e.name]);
      else if (e.isFile()) {
        try {
          const m = JSON.parse(readFileSync(p, 'utf8')) as { layers?: { mediaType?: string; digest?: string }[] };
          const layer = m.layers?.find((l) => l.mediaType === 'application/vnd.ollama.image.model');
          if (!layer?.digest) continue;
          const blob = join(root, 'blobs', layer.digest.replace(':', '-'));
          if (!existsSync(blob) || !isGGUF(blob)) continue;
          const model = parts.slice(-1)[0] ?? '?';
          const ns = parts.slice(-2, -1)[0];
          out.push({ path: blob, label: `${ns && ns !== 'library' ? `${ns}/` : ''}${model}:${e.name}`, source: 'ollama', bytes: size(blob) });
        } catch {
          /* not a manifest */
        }
      }
    }
  };
  walk(manifests, []);
  return out;
}

/** LM Studio keeps models as plain GGUF files under ~/.lmstudio/models (older: ~/.cache/lm-studio/models). */
export function lmStudioModels(roots = [join(homedir(), '.lmstudio', 'models'), join(homedir(), '.cache', 'lm-studio', 'models')]): FoundModel[] {
  return roots.flatMap((r) => ggufFilesUnder(r).map((p) => ({ path: p, label: basename(p), source: 'lmstudio' as const, bytes: size(p) })));
}

/** Every GGUF model found: settings folders first, then Ollama, then LM Studio; no duplicates. */
export function findModels(folders: string[], opts: { ollamaRoot?: string; lmStudioRoots?: string[] } = {}): FoundModel[] {
  const seen = new Set<string>();
  const out: FoundModel[] = [];
  const add = (m: FoundModel) => {
    if (seen.has(m.path)) return;
    seen.add(m.path);
    out.push(m);
  };
  for (const f of folders) for (const p of ggufFilesUnder(f)) add({ path: p, label: basename(p), source: 'settings', bytes: size(p) });
  for (const m of ollamaModels(opts.ollamaRoot)) add(m);
  for (const m of lmStudioModels(opts.lmStudioRoots)) add(m);
  return out;
}
