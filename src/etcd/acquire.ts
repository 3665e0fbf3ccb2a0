import type { Acquired } from 'cachelock';
import { lockKeys, ownerValue } from './keys.js';
import {
  type Context,
  cacheKey,
  effective,
  grant,
  isOwners,
  leaseSeconds,
  type Mine,
  readTxn,
  revokeLater,
} from './leases.js';
import { type KeyValue, prefixEnd } from './transport.js';

/**
 * Take the lock as etcd's Mutex does, in one transaction: put our own key under the lock's
 * prefix, with a lease of our own, only if no key is there. Its create revision is the fence:
 * etcd's revision only rises and is kept on disk, so fences rise across releases, expiries and
 * restarts. A waiter (`lineMs`) that finds the lock held puts its key anyway, with a lease of
 * `lineMs`: the line is the keys in create-revision order, and when every older key is gone the
 * waiter's key is the oldest, which makes it the holder (a hand-off). It then confirms with an
 * acquire, which moves its key onto a lease of `ttlMs`, keeping the create revision.
 */
export async function acquire(
  context: Context,
  key: string,
  owner: string,
  ttlMs: number,
  lineMs: number | undefined,
): Promise<Acquired | null> {
  const { transport } = context;
  const { prefix, mine } = lockKeys(context.namespace, key, owner);
  const seconds = leaseSeconds(ttlMs);
  const known = context.mine.get(cacheKey(mine));

  if (known?.waiting && lineMs !== undefined) {
    // Already in line here: a read tells whether our turn came, without a write.
    const read = await transport.txn(readTxn(prefix, mine));
    const holder = read.results[0]?.[0];
    const own = read.results[1]?.[0];
    if (own === undefined || own.lease !== known.lease) {
      // Our place lapsed (the process stalled past lineMs): start again.
      context.mine.delete(cacheKey(mine));
    } else if (isOwners(holder, prefix, owner)) {
      return confirm(context, mine, owner, own, seconds);
    } else {
      // Renew our place in line; a lease that is gone means the place is gone.
      if ((await transport.keepAlive(known.lease)) > 0) return null;
      context.mine.delete(cacheKey(mine));
    }
  }

  const lease = await grant(context, seconds);
  let kept = false;
  try {
    const result = await transport.txn({
      compare: [
        { key: prefix, rangeEnd: prefixEnd(prefix), target: 'CREATE', result: 'EQUAL', value: 0n },
      ],
      success: [{ put: { key: mine, value: ownerValue(owner), lease: lease.id } }],
      failure: [
        { range: { key: prefix, rangeEnd: prefixEnd(prefix), limit: 1, oldestFirst: true } },
        { range: { key: mine } },
      ],
    });
    if (result.succeeded) {
      kept = true;
      context.mine.set(cacheKey(mine), {
        lease: lease.id,
        granted: lease.ttl,
        createRevision: result.revision,
        waiting: false,
      });
      return { fence: result.revision };
    }
    const holder = result.results[0]?.[0];
    const own = result.results[1]?.[0];
    if (own !== undefined && isOwners(own, prefix, owner)) {
      if (isOwners(holder, prefix, owner)) {
        // Ours already (a retry, a refresh, or a hand-off this instance did not see).
        const confirmed = await moveOnto(context, mine, owner, own, lease);
        kept = confirmed !== null;
        return confirmed;
      }
      // In line already (put by another instance with the same owner, or a lost reply).
      if (lineMs !== undefined) {
        context.mine.set(cacheKey(mine), {
          lease: own.lease,
          granted: 0,
          createRevision: own.createRevision,
          waiting: true,
        });
        await transport.keepAlive(own.lease);
      }
      return null;
    }
    if (lineMs === undefined) return null;
    // Join the line. The line lease is the acquisition's own when it is no longer than lineMs
    // (then a confirm is one keep-alive), else a lease of lineMs, so a waiter that dies leaves
    // the line after lineMs.
    const lineSeconds = leaseSeconds(lineMs);
    const lineLease = seconds <= lineSeconds ? lease : await grant(context, lineSeconds);
    const joined = await transport.txn({
      compare: [{ key: mine, target: 'CREATE', result: 'EQUAL', value: 0n }],
      success: [
        { put: { key: mine, value: ownerValue(owner), lease: lineLease.id } },
        { range: { key: prefix, rangeEnd: prefixEnd(prefix), limit: 1, oldestFirst: true } },
      ],
      failure: [],
    });
    if (!joined.succeeded) {
      if (lineLease !== lease) revokeLater(context, lineLease.id);
      return null;
    }
    if (lineLease === lease) kept = true;
    const place: Mine = {
      lease: lineLease.id,
      granted: lineLease.ttl,
      createRevision: joined.revision,
      waiting: true,
    };
    context.mine.set(cacheKey(mine), place);
    const first = joined.results[1]?.[0];
    if (isOwners(first, prefix, owner)) {
      // The holder left between our two transactions: the lock is ours at once.
      const own: KeyValue = {
        key: mine,
        value: ownerValue(owner),
        createRevision: joined.revision,
        modRevision: joined.revision,
        lease: lineLease.id,
      };
      if (lineLease === lease) {
        place.waiting = false;
        return { fence: joined.revision };
      }
      const confirmed = await moveOnto(context, mine, owner, own, lease);
      kept = confirmed !== null;
      return confirmed;
    }
    return null;
  } finally {
    if (!kept) revokeLater(context, lease.id);
  }
}

/** Our key is the oldest: hold it for `seconds`, by a keep-alive when its lease fits. */
async function confirm(
  context: Context,
  mine: Buffer,
  owner: string,
  own: KeyValue,
  seconds: number,
): Promise<Acquired | null> {
  const known = context.mine.get(cacheKey(mine));
  if (
    known !== undefined &&
    known.lease === own.lease &&
    known.granted === effective(context, seconds)
  ) {
    if ((await context.transport.keepAlive(own.lease)) <= 0) {
      context.mine.delete(cacheKey(mine));
      return null;
    }
    known.waiting = false;
    return { fence: own.createRevision };
  }
  const lease = await grant(context, seconds);
  const confirmed = await moveOnto(context, mine, owner, own, lease);
  if (confirmed === null) revokeLater(context, lease.id);
  return confirmed;
}

/**
 * Put our key again with `lease`, only if it is still the same key (same create revision, so
 * the same place and fence), then revoke the lease it had. Resolves null if the key is gone.
 */
async function moveOnto(
  context: Context,
  mine: Buffer,
  owner: string,
  own: KeyValue,
  lease: { id: string; ttl: number },
): Promise<Acquired | null> {
  const moved = await context.transport.txn({
    compare: [{ key: mine, target: 'CREATE', result: 'EQUAL', value: own.createRevision }],
    success: [{ put: { key: mine, value: ownerValue(owner), lease: lease.id } }],
    failure: [],
  });
  if (!moved.succeeded) {
    context.mine.delete(cacheKey(mine));
    return null;
  }
  if (own.lease !== lease.id) revokeLater(context, own.lease);
  context.mine.set(cacheKey(mine), {
    lease: lease.id,
    granted: lease.ttl,
    createRevision: own.createRevision,
    waiting: false,
  });
  return { fence: own.createRevision };
}
