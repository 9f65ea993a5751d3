// Where RepoKV keeps things on disk. The CLI uses the platform's cache directory; the extension passes
// its own global storage folder instead. REPOKV_CACHE_DIR overrides both (tests, CI, shared caches).
import { homedir, platform } from 'node:os';
import { join } from 'node:path';

export function cacheDir(): string {
  const env = process.env.REPOKV_CACHE_DIR;
  if (env) return env;
  const home = homedir();
  switch (platform()) {
    case 'darwin':
      return join(home, 'Library', 'Caches', 'repokv');
    case 'win32':
      return join(process.env.LOCALAPPDATA ?? join(home, 'AppData', 'Local'), 'repokv', 'cache');
    default:
      return join(process.env.XDG_CACHE_HOME || join(home, '.cache'), 'repokv');
  }
}
