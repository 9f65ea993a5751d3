// Watches the roots of a walk for the CLI and the engine (the VS Code extension feeds its own watcher's
// events to refreshWalk instead: research/vscode_anchors.md §2.5, openai/codex#23574).
//
// - chokidar with an `ignored` function built on the same RuleSet as the walk, so it never descends
//   into excluded trees (node_modules, build outputs, gitignored folders): the watched folders are the
//   walked ones, and their count is checked against `maxDirs` before anything is watched.
// - Bursts are debounced: events are gathered until `debounceMs` pass without one, or `maxWaitMs`
//   after the first, then delivered as one batch (a `git checkout` of thousands of files is one update).
// - Symlinks are not followed (bounded watches, no loops); a change of an ignore file is reported as
//   `rulesChanged` and the watcher restarts with the new rules.
import { lstatSync, type Stats } from 'node:fs';
import { relative, sep } from 'node:path';
import { watch, type FSWatcher } from 'chokidar';
import { UserError } from '../errors.js';
import { findGitTopLevel, RuleSet } from './rules.js';
import type { WalkResult } from './walk.js';

export interface WatchOptions {
  /** Quiet time that ends a burst (default 300 ms). */
  debounceMs?: number;
  /** Longest wait from a burst's first event to its delivery (default 3 s). */
  maxWaitMs?: number;
  /** Most folders to watch (default 20,000): above it, watching is refused with a clear message. */
  maxDirs?: number;
}

export interface ChangeBatch {
  /** Absolute paths created, changed or deleted (files or folders), sorted. */
  paths: string[];
  /** An ignore file changed: re-walk everything (refreshWalk does that by itself). */
  rulesChanged: boolean;
}

export class RepoWatcher {
  private watcher?: FSWatcher;
  private pending = new Set<string>();
  private rulesChanged = false;
  private timer?: NodeJS.Timeout;
  private first = 0;
  private closed = false;
  private rules: RuleSet[];
  private delivering: Promise<void> = Promise.resolve();

  private constructor(
    private readonly walk: WalkResult,
    private readonly onBatch: (b: ChangeBatch) => void | Promise<void>,
    private readonly opts: Required<WatchOptions>,
  ) {
    this.rules = walk.roots.map((r) => new RuleSet(r.abs, walk.options, findGitTopLevel(r.abs)));
  }

  /** Starts watching; resolves once the initial scan of the watched folders is done. */
  static async start(walk: WalkResult, onBatch: (b: ChangeBatch) => void | Promise<void>, opts: WatchOptions = {}): Promise<RepoWatcher> {
    const o = { debounceMs: opts.debounceMs ?? 300, maxWaitMs: opts.maxWaitMs ?? 3000, maxDirs: opts.maxDirs ?? 20_000 };
    if (walk.stats.dirs > o.maxDirs) {
      throw new UserError(`too many folders to watch (${walk.stats.dirs}, the limit is ${o.maxDirs}): exclude generated or vendored trees in a .repokvignore file`);
    }
    const w = new RepoWatcher(walk, onBatch, o);
    await w.open();
    return w;
  }

  /** Folders being watched now. */
  watchedDirs(): number {
    return this.watcher ? Object.keys(this.watcher.getWatched()).length : 0;
  }

  private ignored = (path: string, stats?: Stats): boolean => {
    for (let i = 0; i < this.walk.roots.length; i++) {
      const root = this.walk.roots[i].abs;
      if (path !== root && !path.startsWith(root + sep)) continue;
      const rel = relative(root, path).split(sep).join('/');
      if (!rel) return false;
      let isDir = stats?.isDirectory();
      if (isDir === undefined) {
        try {
          isDir = lstatSync(path).isDirectory();
        } catch {
          return false; // gone: let its removal through
        }
      }
      // ignore files themselves are watched even where excluded, so rule changes are seen
      if (!isDir && this.rules[i].isRuleFile(rel)) return false;
      return this.rules[i].check(rel, isDir) !== undefined;
    }
    return true; // outside every root (chokidar asks for parents too)
  };

  private async open(): Promise<void> {
    const w = watch(
      this.walk.roots.map((r) => r.abs),
      { ignored: this.ignored, ignoreInitial: true, followSymlinks: false, persistent: true },
    );
    this.watcher = w;
    const onEvent = (path: string) => this.event(path);
    w.on('add', onEvent).on('change', onEvent).on('unlink', onEvent).on('addDir', onEvent).on('unlinkDir', onEvent);
    w.on('error', () => undefined); // e.g. a folder removed while being read: the next event catches up
    await new Promise<void>((resolve) => w.once('ready', () => resolve()));
  }

  private event(path: string): void {
    if (this.closed) return;
    for (let i = 0; i < this.walk.roots.length; i++) {
      const root = this.walk.roots[i].abs;
      if (path.startsWith(root + sep) && this.rules[i].isRuleFile(relative(root, path).split(sep).join('/'))) this.rulesChanged = true;
    }
    this.pending.add(path);
    const now = Date.now();
    if (!this.timer) this.first = now;
    clearTimeout(this.timer);
    const wait = Math.max(0, Math.min(this.opts.debounceMs, this.first + this.opts.maxWaitMs - now));
    this.timer = setTimeout(() => this.flush(), wait);
  }

  private flush(): void {
    this.timer = undefined;
    if (this.closed || !this.pending.size) return;
    const batch: ChangeBatch = { paths: [...this.pending].sort(), rulesChanged: this.rulesChanged };
    this.pending = new Set();
    this.rulesChanged = false;
    this.delivering = this.delivering.then(async () => {
      if (batch.rulesChanged && !this.closed) {
        // new rules: new RuleSets, and chokidar re-scans with them (a re-included folder gets watched)
        this.rules = this.walk.roots.map((r) => new RuleSet(r.abs, this.walk.options, findGitTopLevel(r.abs)));
        await this.watcher?.close();
        await this.open();
      }
      await this.onBatch(batch);
    });
  }

  /** Resolves when every batch delivered so far has been handled. */
  idle(): Promise<void> {
    return this.delivering;
  }

  async close(): Promise<void> {
    this.closed = true;
    clearTimeout(this.timer);
    await this.watcher?.close();
  }
}
