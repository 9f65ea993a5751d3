// Content addressing of KV pages. A full page (PAGE_SIZE tokens) is named by a chained hash:
//   hash_i = SHA-256(hash_{i-1} ‖ token ids of page i as int32 little-endian),  hash_{-1} = the model
// fingerprint (fingerprint.ts). So a page's name covers every token before it and the model, KV
// format and RoPE it was computed with: two sequences share page i exactly when their first
// (i+1)·PAGE_SIZE tokens are equal under the same fingerprint (vLLM v1's block hash, with the
// fingerprint in place of its per-request extra keys; seed_systems.md §4.2). SHA-256 rather than a fast
// 64-bit hash because pages persist across processes and a collision would serve a wrong KV silently.
import { createHash } from 'node:crypto';

/** Tokens per page: lines up with the 64×64 tiles of sparse prefill (GUIDE.md §2). */
export const PAGE_SIZE = 64;

/** 32 raw bytes. */
export type PageHash = Buffer;

/** Map key of a page hash (hex, 64 characters). */
export function hashKey(h: PageHash): string {
  return h.toString('hex');
}

export function pageHash(parent: PageHash, tokens: ArrayLike<number>, from: number, to: number): PageHash {
  const ids = Buffer.allocUnsafe((to - from) * 4);
  for (let i = from; i < to; i++) ids.writeInt32LE(tokens[i], (i - from) * 4);
  return createHash('sha256').update(parent).update(ids).digest();
}

/**
 * Hashes of the full pages [firstPage, …) of `tokens` that end at or before `limit` tokens, chained
 * from `parent` (the hash of page firstPage−1, or the fingerprint for page 0).
 */
export function chainHashes(parent: PageHash, tokens: ArrayLike<number>, firstPage: number, limit = tokens.length, pageSize = PAGE_SIZE): PageHash[] {
  const out: PageHash[] = [];
  let p = parent;
  for (let i = firstPage; (i + 1) * pageSize <= limit; i++) {
    p = pageHash(p, tokens, i * pageSize, (i + 1) * pageSize);
    out.push(p);
  }
  return out;
}
