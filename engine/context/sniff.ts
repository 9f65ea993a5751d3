// Is a file text, and which text: content sniffing, not extensions.
//
// - A UTF-16 byte-order mark: decoded as UTF-16 (LE or BE).
// - A NUL byte in the first 8 KiB (git's own test, xdiff's buffer_is_binary): binary.
// - More than 10% control characters (other than tab, newline, CR, form feed, vertical tab, escape)
//   in the first 8 KiB: binary.
// - Valid UTF-8 (a BOM is dropped): UTF-8.
// - Otherwise the file is read as windows-1252 (a superset of latin-1; what most non-UTF-8 source
//   files in the wild are) and the walk notes the encoding: the model sees the characters the author
//   saw in such an editor, rather than losing the file or seeing replacement characters.
// Line endings are normalized (CRLF and lone CR to LF) and the text ends with exactly one newline
// unless it is empty.

export type TextEncodingName = 'utf-8' | 'utf-16le' | 'utf-16be' | 'windows-1252';

export type Sniffed = { text: string; encoding: TextEncodingName } | { binary: string };

const SAMPLE = 8192;
const utf8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: false });
const cp1252 = new TextDecoder('windows-1252');

export function sniffText(buf: Uint8Array): Sniffed {
  if (buf.length >= 2 && buf[0] === 0xff && buf[1] === 0xfe) return { text: normalizeText(new TextDecoder('utf-16le').decode(buf)), encoding: 'utf-16le' };
  if (buf.length >= 2 && buf[0] === 0xfe && buf[1] === 0xff) return { text: normalizeText(new TextDecoder('utf-16be').decode(buf)), encoding: 'utf-16be' };
  const n = Math.min(buf.length, SAMPLE);
  let control = 0;
  for (let i = 0; i < n; i++) {
    const b = buf[i];
    if (b === 0) return { binary: 'NUL byte' };
    if ((b < 0x20 && b !== 9 && b !== 10 && b !== 13 && b !== 12 && b !== 11 && b !== 27) || b === 0x7f) control++;
  }
  if (n > 0 && control / n > 0.1) return { binary: `${Math.round((100 * control) / n)}% control characters` };
  let text: string;
  let encoding: TextEncodingName = 'utf-8';
  try {
    text = utf8.decode(buf);
  } catch {
    text = cp1252.decode(buf);
    encoding = 'windows-1252';
  }
  return { text: normalizeText(text), encoding };
}

/** CRLF and lone CR to LF; exactly one trailing newline unless empty; no BOM. */
export function normalizeText(t: string): string {
  if (t.charCodeAt(0) === 0xfeff) t = t.slice(1);
  if (t.includes('\r')) t = t.replace(/\r\n?/g, '\n');
  if (t.length === 0) return t;
  if (!t.endsWith('\n')) return t + '\n';
  let end = t.length;
  while (end > 1 && t.charCodeAt(end - 2) === 10) end--;
  return end === t.length ? t : t.slice(0, end);
}
