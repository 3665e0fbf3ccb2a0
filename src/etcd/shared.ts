import type { SharedLeases } from 'cachelock';
import { type Context, cacheKey } from './leases.js';
import { acquireShared } from './shared-acquire.js';
import { extendShared } from './shared-extend.js';
import { inspectShared } from './shared-inspect.js';
import { type Space, sharedKeys, weightOf } from './shared-line.js';
import { releaseShared } from './shared-release.js';
import type { Deletion } from './transport.js';
import type { Wakeups } from './wakeups.js';

/** The `permits` or `readersWriters` capability: a line of keys per name (see shared-line.ts). */
export function sharedLeases(
  space: Space,
  open: () => Context,
  wakeups: Wakeups | undefined,
): SharedLeases {
  const leases: SharedLeases = {
    // Async, so that a closed store rejects rather than throws.
    acquire: async (key, owner, ttlMs, request) =>
      acquireShared(open(), space, key, owner, ttlMs, request),
    release: async (key, owner, keepMs) => releaseShared(open(), space, key, owner, keepMs),
    extend: async (key, owner, ttlMs) => extendShared(open(), space, key, owner, ttlMs),
    inspect: async (key) => inspectShared(open(), space, key),
  };
  if (wakeups !== undefined) {
    leases.onRelease = (key, listener) => {
      const context = open();
      const { prefix } = sharedKeys(context.namespace, space, key, '');
      return wakeups.watch(
        prefix,
        () => listener(),
        false,
        (deletion) => mayAdmit(context, prefix, deletion),
      );
    };
  }
  return leases;
}

/**
 * Whether a deletion may admit one of this store's waiters on `prefix`: only a key before a
 * waiter counts for it, and only once as much weight as it still needs has gone (the rest are
 * left asleep rather than all reading the line at every release). Unknown: yes.
 */
function mayAdmit(context: Context, prefix: Buffer, deletion: Deletion): boolean {
  const { previous } = deletion;
  if (previous === undefined) return true;
  const head = cacheKey(prefix);
  const weight = weightOf(prefix, previous);
  let waiting = false;
  let wake = false;
  for (const [id, mine] of context.mine) {
    if (!mine.waiting || !id.startsWith(head)) continue;
    waiting = true;
    if (mine.needs === undefined) {
      wake = true;
      continue;
    }
    if (previous.createRevision < mine.createRevision) mine.needs -= weight;
    if (!(mine.needs > 0)) wake = true;
  }
  // Nobody here in line yet (a first attempt under way): tell the listeners.
  return wake || !waiting;
}
