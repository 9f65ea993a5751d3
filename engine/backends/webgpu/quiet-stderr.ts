// Dawn's start-up notices, kept off the user's terminal.
//
// Cause: when an instance first enumerates its adapters, Dawn clamps the Vulkan driver's raw limits to
// its own internal maxima (dawn/native/Limits.cpp NormalizeLimits). Drivers report huge dynamic-buffer
// counts (lavapipe and NVIDIA: 1,000,000; RADV: 500,000) against Dawn's 16, so every process prints
//   Warning: maxDynamicUniformBuffersPerPipelineLayout artificially reduced from 1000000 to 16 …
//   Warning: maxDynamicStorageBuffersPerPipelineLayout artificially reduced from 1000000 to 16 …
// with dawn::WarningLog, i.e. fprintf(stderr) from native code. It happens inside the synchronous part
// of the instance's first requestAdapter() call, before any device exists, so the limits a device
// requests (requiredLimits) cannot change it, and nothing in Dawn's API (toggles, logging callbacks,
// which belong to devices) silences it.
//
// Remedy: around that one synchronous call, file descriptor 2 points at a temporary file; afterwards
// it is restored and whatever native code wrote there goes back to stderr except those two notices
// (Vulkan loader errors and the like still reach the user). Node has no dup2, so fd 2 is re-pointed by
// closing it and opening the file through /proc/self/fd, which takes the lowest free descriptor. In the
// microseconds between the close and the open another thread opening a file would take number 2; the
// swap is therefore skipped while this thread has file-system or DNS requests in flight (libuv's pool
// is the other opener of files in this process; SQLite never uses descriptors 0-2), each step checks
// the descriptor it got, and REPOKV_DAWN_STDERR=keep turns the whole thing off. Linux only (elsewhere
// the notices stay).

import { closeSync, fstatSync, openSync, readFileSync, unlinkSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

/** The two notices Dawn prints when it clamps the driver's dynamic-buffer limits (nothing else matches). */
export const DAWN_LIMIT_NOTICE = /^Warning: maxDynamic(?:Uniform|Storage)BuffersPerPipelineLayout artificially reduced from \d+ to \d+ to fit dynamic offset allocation limit\.$/;

/** Drops Dawn's limit notices from captured native output, keeping every other line. */
export function withoutDawnNotices(text: string): string {
  return text
    .split('\n')
    .filter((l) => l.length > 0 && !DAWN_LIMIT_NOTICE.test(l))
    .map((l) => l + '\n')
    .join('');
}

function swapAllowed(): boolean {
  if (process.platform !== 'linux' || process.env.REPOKV_DAWN_STDERR === 'keep') return false;
  return !process.getActiveResourcesInfo().some((r) => /FSReq|FileHandle|GetAddrInfo|GetNameInfo|Statfs/i.test(r));
}

function sameFile(a: number, b: number): boolean {
  try {
    const x = fstatSync(a);
    const y = fstatSync(b);
    return x.dev === y.dev && x.ino === y.ino;
  } catch {
    return false;
  }
}

/**
 * Runs `fn` (synchronous) with native writes to stderr captured; writes them back without Dawn's limit
 * notices. Falls back to a plain call when the swap is not allowed or cannot be set up.
 */
export function quietNativeStderr<T>(fn: () => T): T {
  if (!swapAllowed()) return fn();
  let keep = -1;
  let tmp = -1;
  let path = '';
  try {
    keep = openSync('/proc/self/fd/2', 'a'); // the user's stderr, reopened (fails for sockets: no swap)
    path = join(tmpdir(), `repokv-dawn-stderr-${process.pid}-${Date.now()}.txt`);
    tmp = openSync(path, 'w+', 0o600);
  } catch {
    if (keep >= 0) closeSync(keep);
    if (tmp >= 0) closeSync(tmp);
    return fn();
  }
  let swapped = false;
  try {
    closeSync(2);
    const fd = openSync(`/proc/self/fd/${tmp}`, 'a');
    swapped = fd === 2;
    if (!swapped) closeSync(fd);
  } catch {
    swapped = false;
  }
  try {
    return fn();
  } finally {
    let restored = false;
    try {
      if (swapped || !sameFile(2, keep)) {
        if (swapped) closeSync(2);
        const fd = openSync(`/proc/self/fd/${keep}`, 'a');
        restored = fd === 2;
        if (!restored) closeSync(fd);
      } else restored = true;
    } catch {
      restored = false;
    }
    if (!restored) {
      // Another thread took descriptor 2 in the gap: keep Node's own stderr writes on the user's
      // stderr through the descriptor kept aside (native writes would go astray, as before the swap).
      const fd = keep;
      keep = -1;
      process.stderr.write = ((chunk: string | Uint8Array, enc?: unknown, cb?: unknown) => {
        writeSync(fd, typeof chunk === 'string' ? Buffer.from(chunk) : chunk);
        const done = typeof enc === 'function' ? enc : cb;
        if (typeof done === 'function') (done as () => void)();
        return true;
      }) as typeof process.stderr.write;
    }
    let captured = '';
    try {
      captured = readFileSync(path, 'utf8');
    } catch {
      captured = '';
    }
    closeSync(tmp);
    try {
      unlinkSync(path);
    } catch {
      // already gone
    }
    if (keep >= 0) closeSync(keep);
    const rest = withoutDawnNotices(captured);
    if (rest) process.stderr.write(rest);
  }
}
