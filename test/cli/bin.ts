import { type ChildProcess, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

/** The built bin: these tests run what users run (`npm test` builds first). */
export const BIN = fileURLToPath(new URL('../../dist/cli/main.js', import.meta.url));

export function assertBuilt(): void {
  if (!existsSync(BIN)) {
    throw new Error(`${BIN} is missing: run \`npm run build\` first (npm test does)`);
  }
}

export interface Finished {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

export interface Running {
  child: ChildProcess;
  /** Output so far. */
  stdout(): string;
  stderr(): string;
  done: Promise<Finished>;
}

/** Start `node <bin> ...args` with `env` added to a copy of this process's environment. */
export function start(args: string[], env: NodeJS.ProcessEnv = {}, bin = BIN): Running {
  const child = spawn(process.execPath, [bin, ...args], {
    env: { ...process.env, ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
    // A process group of its own, so that `killAll` can end the command along with cachelock.
    detached: true,
  });
  let stdout = '';
  let stderr = '';
  child.stdout!.setEncoding('utf8').on('data', (chunk: string) => {
    stdout += chunk;
  });
  child.stderr!.setEncoding('utf8').on('data', (chunk: string) => {
    stderr += chunk;
  });
  const done = new Promise<Finished>((resolve, reject) => {
    child.once('error', reject);
    child.once('close', (code, signal) => resolve({ code, signal, stdout, stderr }));
  });
  return { child, stdout: () => stdout, stderr: () => stderr, done };
}

/**
 * SIGKILL cachelock and the command it runs. Killing cachelock alone would leave the command
 * running, holding the output pipes open, so that `done` would never come.
 */
export function killAll(proc: Running): void {
  if (proc.child.exitCode !== null || proc.child.signalCode !== null) return;
  try {
    process.kill(-proc.child.pid!, 'SIGKILL');
  } catch {
    proc.child.kill('SIGKILL');
  }
}

/** Run the bin to the end. */
export function cachelock(
  args: string[],
  env?: NodeJS.ProcessEnv,
  bin?: string,
): Promise<Finished> {
  return start(args, env, bin).done;
}

/** Poll until `check` is true; fails with `what` after `timeoutMs` (a guard, not a measure). */
export async function until(what: string, check: () => boolean, timeoutMs = 15_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

/** Wait for `path`; with `process`, fail at once (with its output) if it ends first. */
export async function untilFile(path: string, process?: Running): Promise<void> {
  await until(`${path} to exist`, () => {
    if (existsSync(path)) return true;
    if (process !== undefined && process.child.exitCode !== null) {
      throw new Error(
        `cachelock exited with ${process.child.exitCode} before ${path} existed; stderr: ${process.stderr()}`,
      );
    }
    return false;
  });
}

export function read(path: string): string {
  return readFileSync(path, 'utf8');
}

export function tempDir(): string {
  return mkdtempSync(join(tmpdir(), 'cachelock-cli-'));
}

/** A key nobody else uses, so that runs and parallel files never meet. */
export function uniqueKey(name: string): string {
  return `cli-${name}-${randomBytes(4).toString('hex')}`;
}

/** Quote a path for `sh -c`. */
export function sq(text: string): string {
  return `'${text.replaceAll("'", `'\\''`)}'`;
}
