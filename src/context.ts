import { AsyncLocalStorage } from 'node:async_hooks';
import type { Lock } from './lock.js';

export const lockContext = new AsyncLocalStorage<Lock>();

/**
 * The `Lock` held for the current `lock.run(...)` or `once(...)` call, found through
 * AsyncLocalStorage; `undefined` outside one.
 */
export function currentLock(): Lock | undefined {
  return lockContext.getStore();
}
