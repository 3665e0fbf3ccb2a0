import { AsyncLocalStorage } from 'node:async_hooks';
import type { Lock } from './lock.js';
import type { Permit } from './semaphore.js';

/** A lease held for a call: a `Lock`, or a `Permit` of a `Semaphore` or `ReadWriteLock`. */
export type Held = Lock | Permit;

export const lockContext = new AsyncLocalStorage<Held>();

/**
 * The lease held for the current `run(...)` or `once(...)` call (a `Lock` or a `Permit`), found
 * through AsyncLocalStorage; `undefined` outside one.
 */
export function currentLock(): Held | undefined {
  return lockContext.getStore();
}
