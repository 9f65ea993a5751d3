// `repokv serve` as a child process on loopback, for tests that drive it over HTTP: started with the
// given arguments (a --port 0 is answered with the bound URL on stdout), stopped with SIGTERM.
import { spawn, type ChildProcess } from 'node:child_process';
import { join } from 'node:path';

const root = new URL('../..', import.meta.url).pathname;

/** Starts `repokv serve ARGS`; resolves with the child and its base URL (http://127.0.0.1:PORT/v1). */
export async function startServe(args: string[], env: Record<string, string>): Promise<{ child: ChildProcess; base: string }> {
  const child = spawn(process.execPath, [join(root, 'bin', 'repokv.js'), 'serve', ...args], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ...env } });
  let err = '';
  child.stderr!.on('data', (d) => (err += d));
  const base = await new Promise<string>((ok, fail) => {
    let out = '';
    child.stdout!.on('data', (d) => {
      out += d;
      const m = /(http:\/\/127\.0\.0\.1:\d+\/v1)/.exec(out);
      if (m) ok(m[1]);
    });
    child.once('exit', (c) => fail(new Error(`server exited (${c}): ${err}`)));
  });
  return { child, base };
}

/** Stops a server started by startServe (no-op when it already exited). */
export async function stopServe(child: ChildProcess | undefined): Promise<void> {
  if (!child || child.exitCode !== null) return;
  const gone = new Promise((r) => child.once('exit', r));
  child.kill('SIGTERM');
  await gone;
}
