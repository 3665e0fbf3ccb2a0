import type { SharedLeases } from 'cachelock';
import type { Context } from './leases.js';
import { acquireShared } from './shared-acquire.js';
import { extendShared } from './shared-extend.js';
import { inspectShared } from './shared-inspect.js';
import { type Space, sharedKeys } from './shared-line.js';
import { releaseShared } from './shared-release.js';
import type { Wakeups } from './wakeups.js';

/** The `permits` or `readersWriters` capability: a line of keys per name (see shared-line.ts). */
export function sharedLeases(
  space: Space,
  open: () => Context,
  wakeups: Wakeups | undefined,
): SharedLeases {
  const leases: SharedLeases = {
    acquire: (key, owner, ttlMs, request) =>
      acquireShared(open(), space, key, owner, ttlMs, request),
    release: (key, owner, keepMs) => releaseShared(open(), space, key, owner, keepMs),
    extend: (key, owner, ttlMs) => extendShared(open(), space, key, owner, ttlMs),
    inspect: (key) => inspectShared(open(), space, key),
  };
  if (wakeups !== undefined) {
    leases.onRelease = (key, listener) => {
      const { prefix } = sharedKeys(open().namespace, space, key, '');
      return wakeups.watch(prefix, () => listener());
    };
  }
  return leases;
}
