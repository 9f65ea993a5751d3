// Minimal argument parsing shared by the subcommands: --flag value, --flag=value, boolean --flag.
import { UserError } from '../errors.js';

export interface ParsedArgs {
  flags: Map<string, string | true>;
  positional: string[];
}

export function parseArgs(args: string[], booleans: string[] = []): ParsedArgs {
  const flags = new Map<string, string | true>();
  const positional: string[] = [];
  for (let i = 0; i < args.length; i++) {
    const a = args[i];
    if (a === '--') {
      positional.push(...args.slice(i + 1));
      break;
    }
    if (a.startsWith('--')) {
      const eq = a.indexOf('=');
      if (eq > 0) flags.set(a.slice(2, eq), a.slice(eq + 1));
      else if (booleans.includes(a.slice(2))) flags.set(a.slice(2), true);
      else {
        const v = args[i + 1];
        if (v === undefined) throw new UserError(`option ${a} needs a value`);
        flags.set(a.slice(2), v);
        i++;
      }
    } else positional.push(a);
  }
  return { flags, positional };
}

export function flagString(p: ParsedArgs, name: string): string | undefined {
  const v = p.flags.get(name);
  if (v === true) throw new UserError(`option --${name} needs a value`);
  return v;
}

export function flagNumber(p: ParsedArgs, name: string, dflt: number): number {
  const v = flagString(p, name);
  if (v === undefined) return dflt;
  const n = Number(v);
  if (!Number.isFinite(n)) throw new UserError(`option --${name} must be a number, got "${v}"`);
  return n;
}

/** A token count as typed on the command line: 4096, 16K, 1.5K (K = 1024). */
export function parseTokenCount(s: string): number {
  const m = /^(\d+(?:\.\d+)?)([kK])?$/.exec(s.trim());
  if (!m) throw new UserError(`"${s}" is not a token count (e.g. 4096 or 16K)`);
  return Math.round(Number(m[1]) * (m[2] ? 1024 : 1));
}
