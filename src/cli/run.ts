import { type ChildProcess, spawn } from 'node:child_process';
import {
  formatDuration,
  Lock,
  LockedError,
  type LockLostError,
  LockTimeoutError,
  type Permit,
  Semaphore,
} from 'cachelock';
import type { RunRequest } from './args.js';
import { Exit, signalExit } from './exit.js';
import { showWaiting } from './waiting.js';
import { watchLease } from './watch.js';

/** Signals passed on to the command; while waiting they cancel the wait instead. */
const FORWARDED: NodeJS.Signals[] = ['SIGINT', 'SIGTERM', 'SIGHUP'];

type Outcome =
  | { kind: 'exited'; code: number | null; signal: NodeJS.Signals | null }
  | { kind: 'failed'; error: NodeJS.ErrnoException };

function say(line: string): void {
  process.stderr.write(`cachelock: ${line}\n`);
}

/**
 * `cachelock run`: take the lock, run the command while holding it, release, and exit with the
 * command's status. Store failures and bad options are thrown for the caller to report.
 */
export async function run(request: RunRequest): Promise<number> {
  const interrupt = new AbortController();
  let received: NodeJS.Signals | undefined;
  let child: ChildProcess | undefined;
  const onSignal = (signal: NodeJS.Signals) => {
    if (child !== undefined) {
      child.kill(signal);
      return;
    }
    received ??= signal;
    interrupt.abort(signal);
  };
  for (const signal of FORWARDED) process.on(signal, onSignal);
  try {
    const lock = await acquire(request, interrupt.signal);
    if (typeof lock === 'number') return lock;
    if (received !== undefined) {
      // The signal came just as the lock was granted: honour it without running anything.
      await lock.release().catch(() => undefined);
      return interrupted(request, received);
    }
    return await runHolding(request, lock, (spawned) => {
      child = spawned;
    });
  } finally {
    for (const signal of FORWARDED) process.off(signal, onSignal);
  }
}

/** The held lock, or the exit code when the command must not run. */
async function acquire(
  request: RunRequest,
  interrupt: AbortSignal,
): Promise<Lock | Permit | number> {
  const { key, cache, prefix, waitMs, quiet, permits } = request;
  const options = {
    cache,
    prefix,
    ttl: request.ttlMs,
    wait: waitMs,
    holdAtLeast: request.holdAtLeastMs,
    signal: interrupt,
  };
  // With --permits the key is a semaphore's, a namespace apart from the plain lock's.
  const lease =
    permits === undefined ? new Lock(key, options) : new Semaphore(key, { ...options, permits });
  const stopWaiting =
    quiet || waitMs === 0 ? () => {} : showWaiting(key, { cache, prefix }, waitMs, permits);
  try {
    return await lease.acquire();
  } catch (error) {
    if (interrupt.aborted) return interrupted(request, interrupt.reason as NodeJS.Signals);
    if (error instanceof LockedError || error instanceof LockTimeoutError) {
      if (!quiet) say(`${error.message}; not running ${JSON.stringify(request.argv[0])}`);
      return request.conflictExitCode;
    }
    throw error;
  } finally {
    stopWaiting();
  }
}

function interrupted(request: RunRequest, signal: NodeJS.Signals): number {
  say(
    `${signal} while waiting for ${JSON.stringify(request.key)}; not running ${JSON.stringify(request.argv[0])}`,
  );
  return signalExit(signal);
}

async function runHolding(
  request: RunRequest,
  lock: Lock | Permit,
  spawned: (child: ChildProcess) => void,
): Promise<number> {
  const { key, argv } = request;
  const env = {
    ...process.env,
    CACHELOCK_KEY: key,
    CACHELOCK_FENCE: lock.fence === undefined ? '' : lock.fence.toString(),
  };
  const lease = lock.signal;
  /** The command was told to stop because the lease was lost: exit 70 then, and only then. */
  let stopped = false;
  let ended = false;
  let killTimer: NodeJS.Timeout | undefined;
  const stopWatching = watchLease(lock, { cache: request.cache, prefix: request.prefix });

  const outcome = await new Promise<Outcome>((resolve) => {
    const child = spawn(argv[0], argv.slice(1), { stdio: 'inherit', env });
    spawned(child);
    child.once('error', (error) => resolve({ kind: 'failed', error }));
    child.once('exit', (code, signal) => resolve({ kind: 'exited', code, signal }));

    const stop = () => {
      if (ended) return;
      const lost = lease.reason as LockLostError;
      stopped = true;
      const { lostSignal, killAfterMs } = request;
      say(
        `${lost.message}; stopping ${JSON.stringify(argv[0])} with ${lostSignal}, then SIGKILL after ${formatDuration(killAfterMs)}`,
      );
      child.kill(lostSignal);
      killTimer = setTimeout(() => {
        say(`${JSON.stringify(argv[0])} did not stop after ${lostSignal}; sending SIGKILL`);
        child.kill('SIGKILL');
      }, killAfterMs);
    };
    // A command that has just ended by itself may not be reaped yet: setImmediate runs after the
    // loop has polled for its exit, so such a command keeps its own status.
    const onLost = () => setImmediate(stop);
    if (lease.aborted) onLost();
    else lease.addEventListener('abort', onLost, { once: true });
    child.once('exit', () => {
      ended = true;
      stopWatching();
      clearTimeout(killTimer);
      lease.removeEventListener('abort', onLost);
    });
  });
  ended = true;
  stopWatching();
  clearTimeout(killTimer);

  let releaseFailed = false;
  let held = false;
  try {
    held = await lock.release();
  } catch (error) {
    releaseFailed = true;
    say(
      `could not release ${JSON.stringify(key)} (${(error as Error).message}); it frees itself when its lease of ${formatDuration(request.ttlMs)} runs out`,
    );
  }

  if (outcome.kind === 'failed') {
    const { code } = outcome.error;
    const missing = code === 'ENOENT';
    say(
      `cannot run ${JSON.stringify(argv[0])}: ${missing ? 'command not found' : outcome.error.message}`,
    );
    return missing ? Exit.notFound : Exit.notExecutable;
  }
  if (stopped) return Exit.lost;
  if (!held && !releaseFailed) {
    // Lost shortly before the command ended by itself: its own status is the truth about its
    // work, but it may have run its last moments unprotected.
    say(
      `the lock ${JSON.stringify(key)} was lost before ${JSON.stringify(argv[0])} ended by itself; it may have run for a moment without it`,
    );
  }
  if (outcome.signal !== null) return signalExit(outcome.signal);
  return outcome.code ?? Exit.internal;
}
