// Secrets never enter the repository document (and so never a persisted KV cache).
//
// Two checks:
// 1. By name (SECRET_NAMES, gitignore syntax): key and certificate files, .env files, cloud and SSH
//    credential folders, kubeconfigs, credential JSON files. Checked before every ignore layer, so no
//    `!` negation can re-include them (research/vscode_anchors.md §5.2, Continue's security list).
//    Templates that by convention hold no values — `.env.example`, `.env.sample`, `.env.template`,
//    `.env.dist` — are allowed by name, and still go through the content scan below.
// 2. By content (scanSecrets): private key blocks and the token formats of the common providers,
//    configuration files that carry credentials (.npmrc, .pypirc, .netrc, …), URLs with a password, and
//    `password|secret|token|api_key = "value"` assignments whose value looks random (entropy).
//
// Policy: a file with a finding is excluded whole and reported (`secret-content`, with the kind and
// line, never the value). Files are not redacted in part: a redaction that misses the second half of
// a multi-line key, or a value the patterns do not know next to one they do, would leak silently,
// and a file that is visibly absent is better than one that is silently altered.
import ignore from 'ignore';

/** Files and folders excluded by name because they hold keys or credentials (gitignore syntax). */
export const SECRET_NAMES: readonly string[] = [
  '.env', '.env.*', '*.env', '!.env.example', '!.env.sample', '!.env.template', '!.env.dist', '!*.env.example',
  '*.pem', '*.key', '*.p12', '*.pfx', '*.jks', '*.keystore', '*.p8', '*.ppk', '*.gpg', '*.asc', '*.kdbx',
  'id_rsa*', 'id_dsa*', 'id_ecdsa*', 'id_ed25519*', '*.ovpn',
  '.aws/', '.gcloud/', '.gcp/', '.azure/', '.ssh/', '.kube/', '.gnupg/', '.docker/config.json', '.dockercfg',
  'credentials*.json', 'client_secret*.json', 'service-account*.json', 'application_default_credentials.json',
  'kubeconfig', '*.kubeconfig', '.git-credentials', '.htpasswd', '.pgpass', 'auth.json', '*.token',
  '*.tfstate', '*.tfstate.backup', 'secrets/', '.secrets/', 'secrets.yml', 'secrets.yaml', 'secrets.json',
  'master.key', 'credentials.yml.enc',
];

/** Configuration files that are ordinary text unless they carry credentials: scanned with CREDENTIAL_CONFIG. */
const CREDENTIAL_CONFIG_NAMES = new Set(['.npmrc', '.yarnrc', '.yarnrc.yml', '.pypirc', '.netrc', '_netrc', 'pip.conf', 'pip.ini', 'settings.xml', '.gem/credentials', '.bowerrc', '.condarc']);
const CREDENTIAL_CONFIG = /(_authToken|_auth|_password|npmAuthToken|npmAlwaysAuth\s*:\s*true\s*\n[^\n]*npmAuthIdent)\s*[=:]\s*\S+|^\s*password\s*[=:]\s*\S+|\bmachine\s+\S+\s+login\s+\S+\s+password\s+\S+|<password>[^<]+<\/password>/im;

const names = ignore({ ignorecase: true }).add([...SECRET_NAMES]);

/** The deny-list rule a path (relative, posix) matches, or undefined. */
export function secretNameRule(rel: string, isDir: boolean): string | undefined {
  const r = names.test(isDir ? rel + '/' : rel);
  return r.ignored ? (r.rule?.pattern ?? 'secret name') : undefined;
}

export interface SecretFinding {
  /** What was found, e.g. 'aws-access-key', 'private-key', 'assignment'. */
  kind: string;
  /** 1-based line of the finding. */
  line: number;
}

/** Whether the file being scanned takes bare values (set per scan; the scan is synchronous). */
let bareValues = false;

interface Detector {
  kind: string;
  re: RegExp;
  /** Extra check on the match (e.g. entropy of the value); default accept. */
  accept?: (m: RegExpExecArray) => boolean;
  /**
   * A cheap pattern every match contains: then `re` runs only on the lines where it occurs (the
   * generic detectors would otherwise try every position of every file: half the walk's time).
   */
  hint?: RegExp;
}

/** Shannon entropy of a string in bits per character. */
export function entropy(s: string): number {
  const counts = new Map<string, number>();
  for (const c of s) counts.set(c, (counts.get(c) ?? 0) + 1);
  let h = 0;
  const n = [...s].length;
  for (const k of counts.values()) {
    const p = k / n;
    h -= p * Math.log2(p);
  }
  return h;
}

/** Values that are obviously not real credentials: placeholders, references, examples. */
const PLACEHOLDER = /\$\{|\$\(|\{\{|^<|^%|process\.env|os\.environ|getenv|x{4,}|\*{3,}|\.{3}|changeme|change_me|example|placeholder|your[_-]|dummy|sample|redacted|test|fake|secret[_-]?here/i;

/**
 * A value that looks like a generated secret: long enough, no spaces, letters and digits mixed, high
 * entropy, and not a placeholder, a path or a dotted identifier (`this.usedOutputTokens`).
 */
function randomLooking(v: string, minLength = 16, minEntropy = 3.5): boolean {
  if (v.length < minLength || PLACEHOLDER.test(v) || /\s/.test(v)) return false;
  if (!/[0-9]/.test(v) || !/[A-Za-z]/.test(v)) return false;
  if (/^[A-Za-z_$][\w$]*(\.[A-Za-z_$][\w$]*)+$/.test(v)) return false; // a dotted identifier
  if (/^(https?:|\.{0,2}\/)/.test(v) && !/@/.test(v)) return false; // paths and plain URLs
  return entropy(v) >= minEntropy;
}

/** Files where a bare (unquoted) `KEY=value` is a value: env, ini, properties, toml, yaml. */
const BARE_VALUE_FILES = /(^|\/)(\.?env[^/]*|[^/]*\.(env|ini|cfg|conf|properties|toml|ya?ml)|[^/.]+)$/i;

// Token formats are the providers' documented prefixes and lengths.
const DETECTORS: Detector[] = [
  { kind: 'private-key', re: /-----BEGIN ((RSA|DSA|EC|OPENSSH|ENCRYPTED|PGP) )?PRIVATE KEY( BLOCK)?-----/ },
  { kind: 'aws-access-key', re: /\b(AKIA|ASIA|ABIA|ACCA)[0-9A-Z]{16}\b/ },
  { kind: 'aws-secret-key', re: /aws_?secret_?access_?key\s*["']?\s*[=:]\s*["']?([A-Za-z0-9/+=]{40})\b/i },
  { kind: 'github-token', re: /\b(gh[pousr]_[A-Za-z0-9]{36,255}|github_pat_[A-Za-z0-9_]{60,255})\b/ },
  { kind: 'gitlab-token', re: /\bglpat-[A-Za-z0-9_-]{20,}\b/ },
  { kind: 'slack-token', re: /\bxox[abposr]-[A-Za-z0-9-]{10,}\b/ },
  { kind: 'slack-webhook', re: /hooks\.slack\.com\/services\/T[A-Za-z0-9_]+\/B[A-Za-z0-9_]+\/[A-Za-z0-9_]{16,}/ },
  { kind: 'google-api-key', re: /\bAIza[0-9A-Za-z_-]{35}\b/ },
  { kind: 'npm-token', re: /\bnpm_[A-Za-z0-9]{36}\b/ },
  { kind: 'stripe-key', re: /\b[sr]k_live_[0-9a-zA-Z]{24,}\b/ },
  { kind: 'openai-key', re: /\bsk-(proj-|svcacct-|admin-)?[A-Za-z0-9_-]{20,}T3BlbkFJ[A-Za-z0-9_-]{20,}\b|\bsk-(proj|svcacct|admin)-[A-Za-z0-9_-]{40,}\b/ },
  { kind: 'anthropic-key', re: /\bsk-ant-(api|admin)\d{2}-[A-Za-z0-9_-]{80,}\b/ },
  { kind: 'huggingface-token', re: /\bhf_[A-Za-z0-9]{34,}\b/ },
  { kind: 'sendgrid-key', re: /\bSG\.[A-Za-z0-9_-]{22}\.[A-Za-z0-9_-]{43}\b/ },
  { kind: 'twilio-key', re: /\bSK[0-9a-f]{32}\b/ },
  {
    kind: 'jwt',
    re: /\beyJ[A-Za-z0-9_-]{10,}\.eyJ[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{16,}/,
    // a JWT whose header decodes to JSON with "alg": the format, not an accident of base64-looking text
    accept: (m) => {
      try {
        return /"alg"\s*:/.test(Buffer.from(m[0].split('.')[0], 'base64url').toString('utf8'));
      } catch {
        return false;
      }
    },
  },
  {
    kind: 'url-password',
    re: /\b[a-z][a-z0-9+.-]{1,20}:\/\/[^\s/:@'"`]{1,64}:([^\s/:@'"`]{6,128})@[^\s'"`]/i,
    accept: (m) => randomLooking(decodeURIComponent(m[1].replace(/%(?![0-9a-f]{2})/gi, '%25')), 10, 3),
    hint: /:\/\/[^\s/:@'"`]{1,64}:/,
  },
  {
    kind: 'assignment',
    // `password = "…"`, `api_key: '…'`, `"clientSecret": "…"`, `SECRET_TOKEN=…` (quoted or, in .env
    // style, bare); the value must look random
    re: /(?:^|[^A-Za-z0-9])((?:[A-Za-z0-9]+[_-]?)?(?:password|passwd|pwd|secret|token|api[_-]?key|apikey|access[_-]?key|auth[_-]?key|private[_-]?key|client[_-]?secret|credentials?)(?:[_-]?[A-Za-z0-9]+)?)["']?\s*(?::=|=>|[=:])\s*(?:["'`]([^"'`\s]{16,256})["'`]|([A-Za-z0-9+/=_\-.~!@#$%^&*]{20,256})\s*$)/im,
    accept: (m) => (m[2] !== undefined ? randomLooking(m[2]) : bareValues && randomLooking(m[3])),
    hint: /password|passwd|pwd|secret|token|api[_-]?key|apikey|access[_-]?key|auth[_-]?key|private[_-]?key|client[_-]?secret|credential/i,
  },
];

/** Cheap pre-check: every detector needs one of these substrings (case-insensitive). */
const PREFILTER = /PRIVATE KEY|AKIA|ASIA|ABIA|ACCA|secret|gh[pousr]_|github_pat_|glpat-|xox|hooks\.slack|AIza|npm_|_live_|sk-|hf_|SG\.|SK[0-9a-f]|eyJ|:\/\/|pass|pwd|token|key|credential/i;

/** Index of the first accepted match (from its first non-space character), or undefined. */
function firstMatch(text: string, d: Detector, re: RegExp, offset = 0): number | undefined {
  for (let m = re.exec(text); m; m = re.exec(text)) {
    // the match may start with the character before the key (assignment): count from its first non-space
    if (!d.accept || d.accept(m)) return offset + m.index + (m[0].length - m[0].trimStart().length);
    if (m[0].length === 0) re.lastIndex++;
  }
  return undefined;
}

/** firstMatch, run only on the lines that contain the detector's hint. */
function firstOnHintedLines(text: string, d: Detector, re: RegExp): number | undefined {
  const hint = new RegExp(d.hint!.source, d.hint!.flags.replace('g', '') + 'g');
  for (let h = hint.exec(text); h; h = hint.exec(text)) {
    const start = text.lastIndexOf('\n', h.index) + 1;
    let end = text.indexOf('\n', h.index);
    if (end < 0) end = text.length;
    re.lastIndex = 0;
    const at = firstMatch(text.slice(start, end), d, re, start);
    if (at !== undefined) return at;
    hint.lastIndex = end + 1;
  }
  return undefined;
}

function lineOf(text: string, index: number): number {
  let n = 1;
  for (let i = text.indexOf('\n'); i >= 0 && i < index; i = text.indexOf('\n', i + 1)) n++;
  return n;
}

/**
 * The first credential found in a file's text, or undefined. `name` is the file's path (relative,
 * posix): configuration files such as .npmrc are checked for their credential keys as well.
 */
export function scanSecrets(text: string, name: string): SecretFinding | undefined {
  const base = name.slice(name.lastIndexOf('/') + 1);
  if (CREDENTIAL_CONFIG_NAMES.has(base) || name.endsWith('.gem/credentials')) {
    const m = CREDENTIAL_CONFIG.exec(text);
    if (m) return { kind: 'credential-config', line: lineOf(text, m.index) };
  }
  if (!PREFILTER.test(text)) return undefined;
  bareValues = BARE_VALUE_FILES.test(name);
  // the first line with a finding; on one line, the more specific detector (earlier in the list)
  let best: SecretFinding | undefined;
  for (const d of DETECTORS) {
    const re = new RegExp(d.re.source, d.re.flags.includes('g') ? d.re.flags : d.re.flags + 'g');
    const found = d.hint ? firstOnHintedLines(text, d, re) : firstMatch(text, d, re);
    if (found === undefined) continue;
    const line = lineOf(text, found);
    if (!best || line < best.line) best = { kind: d.kind, line };
  }
  return best;
}
