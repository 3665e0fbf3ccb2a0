import { hostname } from 'node:os';
import { type Holder, Lock, type LockOptions, Permit, Semaphore } from 'cachelock';

/** How often `run` asks the cache who holds its key. */
export const CHECK_EVERY_MS = 500;

/**
 * Notice within about `CHECK_EVERY_MS` that the key was taken away from a running command
 * (`cachelock release --force`, or a new owner after the lease ran out). The lock's watchdog
 * would only find out at its next extension, a third of the ttl away, while a second command
 * may already run. Push wake-ups cannot serve: Redis announces only releases that a waiter
 * asked for, so one inspect per interval is the check on every cache. A holder that does not
 * look like this process is confirmed by extending, which is owner-checked and, when the lease
 * is gone, aborts `lock.signal`. Returns the stop function.
 */
export function watchLease(
  lock: Lock | Permit,
  lockOptions: Pick<LockOptions, 'cache' | 'prefix'>,
  everyMs = CHECK_EVERY_MS,
): () => void {
  const host = hostname();
  let stopped = false;
  let timer: NodeJS.Timeout | undefined;

  const look = async () => {
    try {
      const ours = (await holdersOf(lock, lockOptions)).some(
        (holder) =>
          holder.pid === process.pid &&
          holder.host === host &&
          (holder.fence === undefined || holder.fence === lock.fence),
      );
      if (!ours && !stopped) await lock.extend();
    } catch {
      // A LockLostError has aborted lock.signal; a cache that cannot be reached is the
      // watchdog's to judge, as the lease runs out.
    }
    if (stopped || lock.signal.aborted) return;
    timer = setTimeout(look, everyMs);
    timer.unref();
  };
  timer = setTimeout(look, everyMs);
  timer.unref();

  return () => {
    stopped = true;
    clearTimeout(timer);
  };
}

/** The holders of the lock's key, or of the permit's semaphore. */
export async function holdersOf(
  lease: Lock | Permit,
  lockOptions: Pick<LockOptions, 'cache' | 'prefix'>,
): Promise<Holder[]> {
  if (lease instanceof Permit) return (await Semaphore.inspect(lease.key, lockOptions)).holders;
  const holder = await Lock.inspect(lease.key, lockOptions);
  return holder === null ? [] : [holder];
}
