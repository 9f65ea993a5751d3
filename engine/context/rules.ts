// Which paths of a root enter the repository document: built-in excludes for generated and vendored
// trees, .git/info/exclude, .gitignore at every level, .repokvignore at every level, settings globs,
// and the security deny-list by name, which nothing can re-include.
//
// Precedence, lowest first (a later layer that decides, ignoring or re-including with `!`, wins):
//   1. built-in defaults (DEFAULT_EXCLUDES)         reason 'default-excluded'
//   2. <git toplevel>/.git/info/exclude             reason 'git-info-exclude'
//   3. .gitignore files, outer directories first    reason 'gitignore'
//   4. .repokvignore files, outer directories first reason 'repokvignore'
//   5. settings `exclude` patterns (gitignore syntax, `!` re-includes)   reason 'settings-exclude'
// then, for files, settings `include` patterns: when given, a file must match one (reason 'not-included').
// `.repokvignore` sits above `.gitignore` so users can re-include a gitignored tree for the model
// (Continue's users asked for exactly this: continuedev/continue#2739). The secret deny-list and `.git/`
// are checked before all layers and cannot be re-included: a `!` in an ignore file must never let a
// key into a persisted KV cache (research/vscode_anchors.md §5.2).
import { existsSync, readFileSync } from 'node:fs';
import { dirname, join, relative, sep } from 'node:path';
import ignore, { type Ignore } from 'ignore';
import { secretNameRule } from './secrets.js';

/** Generated, vendored and tool trees, lock files, minified bundles and source maps (gitignore syntax). */
export const DEFAULT_EXCLUDES: readonly string[] = [
  // dependency and vendored trees
  'node_modules/', 'bower_components/', 'jspm_packages/', 'vendor/', 'third_party/', 'Pods/',
  '.venv/', 'venv/', 'site-packages/', '.yarn/', '.pnpm-store/',
  // build outputs and caches
  'dist/', 'build/', 'out/', 'target/', '.next/', '.nuxt/', '.svelte-kit/', '.turbo/', '.parcel-cache/',
  '.cache/', 'coverage/', '.nyc_output/', '__pycache__/', '.mypy_cache/', '.pytest_cache/', '.ruff_cache/',
  '.tox/', '.gradle/', 'DerivedData/', '.terraform/', '.repokv/',
  // other version-control and editor state
  '.hg/', '.svn/', '.idea/', '.vs/', '.DS_Store',
  // lock files
  'package-lock.json', 'npm-shrinkwrap.json', 'yarn.lock', 'pnpm-lock.yaml', 'bun.lockb', 'bun.lock',
  'Cargo.lock', 'poetry.lock', 'Pipfile.lock', 'uv.lock', 'composer.lock', 'Gemfile.lock', 'go.sum',
  'flake.lock', 'packages.lock.json', 'Podfile.lock', 'mix.lock', 'pubspec.lock',
  // minified bundles, source maps, build metadata
  '*.min.js', '*.min.mjs', '*.min.cjs', '*.min.css', '*.map', '*.tsbuildinfo', '*.pyc', '*.log',
];

export type RuleReason =
  | 'vcs-dir'
  | 'secret-name'
  | 'default-excluded'
  | 'git-info-exclude'
  | 'gitignore'
  | 'repokvignore'
  | 'settings-exclude'
  | 'not-included';

export interface RuleDecision {
  reason: RuleReason;
  /** The rule that decided, as `<file>: <pattern>` or the pattern alone. */
  detail: string;
}

export interface RuleOptions {
  /** Extra exclude patterns (gitignore syntax, relative to the root; `!` re-includes). */
  exclude?: readonly string[];
  /** When non-empty, only files matching one of these patterns (gitignore syntax) are included. */
  include?: readonly string[];
  /** Use the built-in DEFAULT_EXCLUDES (default true). */
  defaultExcludes?: boolean;
  /** Read .gitignore and .git/info/exclude (default true). */
  gitignore?: boolean;
  /** The name of the project's own ignore file (default '.repokvignore'). */
  ignoreFileName?: string;
}

/** Git on Linux compares paths case-sensitively; macOS and Windows default to case-insensitive. */
const IGNORE_CASE = process.platform === 'darwin' || process.platform === 'win32';

/** A pattern and where it came from: `mark` is `<reason>|<file>:<line>`. */
interface Rule {
  pattern: string;
  mark: string;
}

function parseRules(text: string, file: string, reason: RuleReason): Rule[] {
  const out: Rule[] = [];
  const lines = text.split(/\r?\n/);
  for (let i = 0; i < lines.length; i++) {
    const p = lines[i];
    if (!p || p.startsWith('#') || !p.trim()) continue;
    out.push({ pattern: p, mark: `${reason}|${file}:${i + 1}` });
  }
  return out;
}

function readRules(path: string): string | undefined {
  try {
    return readFileSync(path, 'utf8');
  } catch {
    return undefined; // absent or unreadable: no rules from it
  }
}

function toPosix(p: string): string {
  return sep === '/' ? p : p.split(sep).join('/');
}

/** Escapes glob characters in a literal directory path so it can prefix a pattern. */
function escapeGlob(s: string): string {
  return s.replace(/[\\*?[\]]/g, (c) => '\\' + c);
}

/**
 * A pattern from an ignore file in directory `base` (relative to the root, posix, non-empty),
 * rewritten to mean the same thing relative to the root. gitignore(5): a pattern with a slash at
 * its start or middle is relative to its file's directory; one without matches at any depth below it.
 */
export function rebasePattern(pattern: string, base: string): string {
  if (!base) return pattern;
  let neg = '';
  let p = pattern;
  if (p.startsWith('!')) {
    neg = '!';
    p = p.slice(1);
  }
  const body = p.startsWith('/') ? p.slice(1) : p;
  const anchored = p.startsWith('/') || body.replace(/\/+$/, '').includes('/');
  return `${neg}/${escapeGlob(base)}/${anchored ? '' : '**/'}${body}`;
}

/** One gitignore path segment pattern (`*`, `?`, `[...]`) as a regular expression. */
function segmentRegex(seg: string): RegExp {
  let re = '';
  for (let i = 0; i < seg.length; i++) {
    const c = seg[i];
    if (c === '\\' && i + 1 < seg.length) re += '\\' + seg[++i];
    else if (c === '*') re += '[^/]*';
    else if (c === '?') re += '[^/]';
    else if (c === '[') {
      const j = seg.indexOf(']', i + 2);
      if (j < 0) re += '\\[';
      else {
        re += '[' + seg.slice(i + 1, j).replace(/^!/, '^').replace(/\\/g, '\\\\') + ']';
        i = j;
      }
    } else re += c.replace(/[.+^${}()|]/g, '\\$&');
  }
  return new RegExp('^' + re + '$', IGNORE_CASE ? 'i' : '');
}

/**
 * A pattern from an ignore file `up` directories above the root (rootFromTop: the root's path from
 * that file's directory), rewritten relative to the root, or undefined when it cannot match inside
 * the root. Unanchored patterns apply at any depth and stay as they are; anchored ones must match the
 * root's leading segments (a `**` among them is kept as a match-anywhere prefix: an approximation).
 */
export function rebaseFromAbove(pattern: string, rootFromTop: string): string | undefined {
  let neg = '';
  let p = pattern;
  if (p.startsWith('!')) {
    neg = '!';
    p = p.slice(1);
  }
  const body = p.startsWith('/') ? p.slice(1) : p;
  const anchored = p.startsWith('/') || body.replace(/\/+$/, '').includes('/');
  if (!anchored) return pattern;
  const segs = body.split('/');
  const rootSegs = rootFromTop.split('/');
  for (let i = 0; i < rootSegs.length; i++) {
    if (i >= segs.length) return undefined;
    if (segs[i] === '**') return `${neg}/**/${segs.slice(i + 1).join('/')}`;
    if (i === segs.length - 1 || (i === segs.length - 2 && segs[i + 1] === '')) {
      // the pattern names the root itself or an ancestor: it excludes (or re-includes) the whole root,
      // which the caller handles (a root is never excluded by rules from above it)
      return undefined;
    }
    if (!segmentRegex(segs[i]).test(rootSegs[i])) return undefined;
  }
  return `${neg}/${segs.slice(rootSegs.length).join('/')}`;
}

/**
 * The rules of one root. `check(rel, isDir)` answers for a path relative to the root (posix). All
 * layers are merged into one ordered pattern list per directory (nested files' patterns rewritten
 * relative to the root), so that git's "last matching pattern wins" and "a file under an excluded
 * directory cannot be re-included" hold across layers exactly as inside one file. Per-directory
 * ignore files are read lazily and cached; `forget()` drops the cache when one of them changes.
 */
export class RuleSet {
  readonly root: string;
  private readonly ignoreFileName: string;
  private readonly useGitignore: boolean;
  private readonly head: Rule[] = [];
  private readonly tail: Rule[] = [];
  private readonly include?: Ignore;
  private dirCache = new Map<string, { git: Rule[]; own: Rule[]; ig: Ignore }>();
  /** Notes for --explain (e.g. that rules from above the root were not applied). */
  readonly notes: string[] = [];

  constructor(root: string, options: RuleOptions = {}, gitTopLevel?: string) {
    this.root = root;
    this.ignoreFileName = options.ignoreFileName ?? '.repokvignore';
    this.useGitignore = options.gitignore ?? true;
    if (options.defaultExcludes ?? true) this.head.push(...DEFAULT_EXCLUDES.map((pattern) => ({ pattern, mark: 'default-excluded|built-in' })));
    if (this.useGitignore && gitTopLevel) this.loadAbove(gitTopLevel);
    if (options.exclude?.length) this.tail.push(...options.exclude.map((pattern) => ({ pattern, mark: 'settings-exclude|settings' })));
    if (options.include?.length) this.include = ignore({ ignorecase: IGNORE_CASE }).add([...options.include]);
  }

  /** .git/info/exclude and the .gitignore files between the git top level and the root. */
  private loadAbove(top: string): void {
    const rootFromTop = toPosix(relative(top, this.root));
    if (rootFromTop.startsWith('..')) return;
    const files: { dirFromTop: string; text: string; file: string; reason: RuleReason }[] = [];
    const info = readRules(join(top, '.git', 'info', 'exclude'));
    if (info !== undefined) files.push({ dirFromTop: '', text: info, file: '.git/info/exclude', reason: 'git-info-exclude' });
    if (rootFromTop) {
      const parts = rootFromTop.split('/');
      for (let i = 0; i < parts.length; i++) {
        const dirFromTop = parts.slice(0, i).join('/');
        const text = readRules(join(top, ...parts.slice(0, i), '.gitignore'));
        if (text !== undefined) files.push({ dirFromTop, text, file: toPosix(relative(this.root, join(top, dirFromTop, '.gitignore'))), reason: 'gitignore' });
      }
    }
    if (!files.length) return;
    // A root that these rules exclude (a user who opens node_modules/typescript on purpose) would be
    // left empty: then they are not applied, and --explain says so.
    if (rootFromTop) {
      const probe = ignore({ ignorecase: IGNORE_CASE });
      for (const f of files) probe.add(parseRules(f.text, f.file, f.reason).map((r) => ({ pattern: rebasePattern(r.pattern, f.dirFromTop), mark: r.mark })));
      const t = probe.test(rootFromTop + '/');
      if (t.ignored) {
        this.notes.push(`the root is itself excluded by ${t.rule?.mark?.split('|')[1] ?? 'a rule above it'}; rules from above the root are not applied`);
        return;
      }
    }
    for (const f of files) {
      const sub = f.dirFromTop ? rootFromTop.slice(f.dirFromTop.length + 1) : rootFromTop;
      for (const r of parseRules(f.text, f.file, f.reason)) {
        const q = sub ? rebaseFromAbove(r.pattern, sub) : r.pattern;
        if (q !== undefined) this.head.push({ pattern: q, mark: r.mark });
      }
    }
  }

  private dir(dirRel: string): { git: Rule[]; own: Rule[]; ig: Ignore } {
    const c = this.dirCache.get(dirRel);
    if (c) return c;
    const parent = dirRel ? this.dir(dirRel.includes('/') ? dirRel.slice(0, dirRel.lastIndexOf('/')) : '') : undefined;
    const abs = dirRel ? join(this.root, dirRel) : this.root;
    const prefix = dirRel ? dirRel + '/' : '';
    const gitText = this.useGitignore ? readRules(join(abs, '.gitignore')) : undefined;
    const ownText = readRules(join(abs, this.ignoreFileName));
    let entry: { git: Rule[]; own: Rule[]; ig: Ignore };
    if (parent && gitText === undefined && ownText === undefined) entry = parent;
    else {
      const rebase = (rs: Rule[]) => rs.map((r) => ({ pattern: rebasePattern(r.pattern, dirRel), mark: r.mark }));
      const git = [...(parent?.git ?? []), ...(gitText !== undefined ? rebase(parseRules(gitText, prefix + '.gitignore', 'gitignore')) : [])];
      const own = [...(parent?.own ?? []), ...(ownText !== undefined ? rebase(parseRules(ownText, prefix + this.ignoreFileName, 'repokvignore')) : [])];
      const ig = ignore({ ignorecase: IGNORE_CASE }).add([...this.head, ...git, ...own, ...this.tail]);
      entry = { git, own, ig };
    }
    this.dirCache.set(dirRel, entry);
    return entry;
  }

  /** Drop the cached rules (after an ignore file changed). */
  forget(): void {
    this.dirCache = new Map();
  }

  /** Whether a path (relative to the root, posix) is one of the files that define rules. */
  isRuleFile(rel: string): boolean {
    const name = rel.slice(rel.lastIndexOf('/') + 1);
    return name === '.gitignore' || name === this.ignoreFileName || rel === '.git/info/exclude';
  }

  /** undefined when the path is included; otherwise why it is not. */
  check(rel: string, isDir: boolean): RuleDecision | undefined {
    const slash = rel.lastIndexOf('/');
    const name = rel.slice(slash + 1);
    if (name === '.git' || rel.startsWith('.git/')) return { reason: 'vcs-dir', detail: '.git' };
    const secret = secretNameRule(rel, isDir);
    if (secret) return { reason: 'secret-name', detail: secret };
    const r = this.dir(slash < 0 ? '' : rel.slice(0, slash)).ig.test(isDir ? rel + '/' : rel);
    if (r.ignored) {
      const [reason, where] = (r.rule?.mark ?? 'default-excluded|built-in').split('|');
      return { reason: reason as RuleReason, detail: `${where}: ${r.rule?.pattern ?? ''}` };
    }
    if (!isDir && this.include && !this.include.ignores(rel)) return { reason: 'not-included', detail: 'settings include' };
    return undefined;
  }
}

/** The git top level of a folder (walking up to a `.git` entry), or undefined outside a repository. */
export function findGitTopLevel(dir: string): string | undefined {
  let d = dir;
  for (;;) {
    if (existsSync(join(d, '.git'))) return d;
    const up = dirname(d);
    if (up === d) return undefined;
    d = up;
  }
}
