// The repository document, independent of the model: walk (ignore rules, secret filter), order,
// budget, incremental updates, watching, and parallel tokenization. See each module's header.
export { walkRepository, refreshWalk, rootNames, EXCLUSION_REASONS, DEFAULT_MAX_FILE_BYTES, DEFAULT_MAX_FILES } from './walk.js';
export type { WalkOptions, WalkResult, RepoFile, Exclusion, ExclusionReason, RootInfo, ChangeInfo } from './walk.js';
export { DEFAULT_EXCLUDES, RuleSet } from './rules.js';
export type { RuleOptions } from './rules.js';
export { SECRET_NAMES, scanSecrets, secretNameRule } from './secrets.js';
export {
  buildDocument,
  updateDocument,
  invalidation,
  manifestOf,
  documentText,
  preamble,
  fileSegmentText,
  outlineSegmentText,
  compareForStability,
  isGeneratedLooking,
  estimateTokens,
  DOCUMENT_FORMAT,
  END_MARKER,
} from './document.js';
export type { RepoDocument, DocumentManifest, Segment, Invalidation, DocumentOptions, TokenCounter, Omission, Outlined } from './document.js';
export { RepoWatcher } from './watch.js';
export type { WatchOptions, ChangeBatch } from './watch.js';
export { TokenizerPool, tokenizeHere, countingFrom } from './tokenize-pool.js';
export type { TokenizeProgress, TokenizerPoolOptions } from './tokenize-pool.js';
