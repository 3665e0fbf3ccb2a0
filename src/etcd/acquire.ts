import type { Acquired } from 'cachelock';
import { lockKeys, ownerValue } from './keys.js';
import {
  beforeRange,
  type Context,
  cacheKey,
  effective,
  isOwners,
  LEASE_GONE,
  type Lease,
  learnBefore,
  leaseSeconds,
  readTxn,
  retire,
  revokeLater,
  txnOnLease,
} from './leases.js';
import { type KeyValue, prefixEnd, type TxnResult } from './transport.js';

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
  mayShorten = false,
): Promise<Acquired | null> {
  const { transport } = context;
  const { prefix, mine } = lockKeys(context.namespace, key, owner);
  const id = cacheKey(mine);
  const seconds = leaseSeconds(ttlMs);
  const known = context.mine.get(id);
  if (known?.waiting && lineMs !== undefined) known.triedAt = performance.now();

  if (known?.waiting && known.handed && lineMs !== undefined) {
    // A watch saw our key become the oldest; only its deletion could change that since, and
    // the confirm's renewal or move finds out if it was deleted.
    const own: KeyValue = {
      key: mine,
      value: ownerValue(owner),
      createRevision: known.createRevision,
      modRevision: 0n,
      lease: known.lease,
    };
    known.handed = false;
    return confirm(context, mine, owner, own, seconds);
  }
  if (known?.waiting && lineMs !== undefined) {
    // Already in line here. While the watch has seen no deletion since our last look, or the
    // key before ours is still there, our turn has not come; a place renewed within a third of
    // its lease needs nothing either, and one due for renewal needs only that.
    const deletions = context.deletions(prefix);
    const due = performance.now() - known.renewedAt >= (known.granted * 1000) / 3;
    if (deletions !== undefined && (deletions === known.seen || context.behind(prefix, known))) {
      if (!due) return null;
      const sentAt = performance.now();
      if ((await transport.keepAlive(known.lease)) > 0) {
        known.renewedAt = sentAt;
        return null;
      }
      context.mine.delete(id);
      return join(context, key, owner, seconds, lineMs, mayShorten);
    }
    known.seen = deletions;
    // A read tells whether our turn came, without a write.
    const txn = readTxn(prefix, mine);
    txn.success.push(beforeRange(prefix, known.createRevision));
    const read = await transport.txn(txn);
    const holder = read.results[0]?.[0];
    const own = read.results[1]?.[0];
    learnBefore(known, read.results[2]?.[0], deletions);
    if (own === undefined || own.lease !== known.lease) {
      // Our place lapsed (the process stalled past lineMs): start again.
      context.mine.delete(id);
    } else if (isOwners(holder, prefix, owner)) {
      return confirm(context, mine, owner, own, seconds);
    } else {
      // Renew our place in line; a lease that is gone means the place is gone.
      const sentAt = performance.now();
      if ((await transport.keepAlive(known.lease)) > 0) {
        known.renewedAt = sentAt;
        return null;
      }
      context.mine.delete(id);
    }
  }

  if (lineMs !== undefined) return join(context, key, owner, seconds, lineMs, mayShorten);

  const sentAt = performance.now();
  // A lease that extends itself may go on a spare that still has two thirds of its TTL ahead
  // as it is: no renewal, and the holder is told the lease it has (from that spare's renewal).
  const spare = mayShorten ? context.pool.lasting(seconds, (seconds * 2000) / 3) : undefined;
  const taken = spare === undefined ? await context.pool.take(context, seconds) : undefined;
  const lease: Lease = spare ?? taken!.lease;
  const renewedAt = spare?.renewedAt ?? sentAt;
  const granted = (acquired: Acquired | null): Acquired | null => {
    const claimMs = renewedAt + lease.ttl * 1000 - sentAt;
    return acquired !== null && spare !== undefined && claimMs < ttlMs
      ? { ...acquired, ttlMs: claimMs }
      : acquired;
  };
  // What becomes of the lease unless a key of ours stays on it: a spare when it surely has no
  // key, else revoked (an unanswered put may have put one there).
  let outcome: 'kept' | 'spare' | 'revoke' | 'dropped' = 'revoke';
  try {
    // The transaction and a spare's renewal go together: one round trip, not two.
    const result = await txnOnLease(
      context.transport,
      {
        compare: [
          {
            key: prefix,
            rangeEnd: prefixEnd(prefix),
            target: 'CREATE',
            result: 'EQUAL',
            value: 0n,
          },
        ],
        success: [{ put: { key: mine, value: ownerValue(owner), lease: lease.id } }],
        failure: [
          { range: { key: prefix, rangeEnd: prefixEnd(prefix), limit: 1, oldestFirst: true } },
          { range: { key: mine } },
        ],
      },
      // A spare used as it is was alive unless etcd refuses the put (lease not found).
      taken?.renewed ?? Promise.resolve(true),
    );
    if (result === 'dropped' || result === 'revoke') {
      // The spare had expired or its renewal went unanswered: what went on it goes with it.
      outcome = result;
      if (result === 'revoke') return null;
      return acquire(context, key, owner, ttlMs, lineMs, mayShorten);
    }
    if (result.succeeded) {
      outcome = 'kept';
      remember(context, id, lease, seconds, renewedAt, result.revision, false);
      return granted({ fence: result.revision });
    }
    outcome = 'spare';
    const holder = result.results[0]?.[0];
    const own = result.results[1]?.[0];
    if (own !== undefined && isOwners(own, prefix, owner) && isOwners(holder, prefix, owner)) {
      // Ours already (a retry, a refresh, or a hand-off this instance did not see).
      outcome = 'revoke';
      const confirmed = await moveOnto(context, mine, owner, own, lease, seconds, renewedAt);
      if (confirmed !== null) outcome = 'kept';
      return granted(confirmed);
    }
    // Held by another, or we are in its line (a hand-off not yet ours): refused either way.
    return null;
  } finally {
    if (outcome === 'spare') context.pool.give(context, lease, seconds, renewedAt);
    else if (outcome === 'revoke') revokeLater(context, lease.id);
  }
}

/**
 * A waiter's attempt, in one transaction: put our key in the line if it is not there yet and
 * see who is first. The line lease is the acquisition's own when it is no longer than lineMs
 * (then a confirm is one renewal), else a lease of lineMs, so that a waiter that dies leaves
 * the line after lineMs. First in line means ours: confirm it onto a lease of `seconds`.
 *
 * A spare with two thirds of its TTL still ahead goes in line as it is, without a renewal:
 * the place lasts from that spare's last renewal, and the waiter renews it once a third of it
 * has gone, as any place.
 */
async function join(
  context: Context,
  key: string,
  owner: string,
  seconds: number,
  lineMs: number,
  mayShorten: boolean,
  renew = false,
): Promise<Acquired | null> {
  const { transport } = context;
  const { prefix, mine } = lockKeys(context.namespace, key, owner);
  const id = cacheKey(mine);
  const lineSeconds = leaseSeconds(lineMs);
  const asked = Math.min(seconds, lineSeconds);
  const triedAt = performance.now();
  // The watch's count before this look: the next attempt reads again only if it moved.
  const seen = context.deletions(prefix);
  const { lease, renewedAt } = await context.pool.takeLasting(
    context,
    asked,
    renew ? Number.POSITIVE_INFINITY : (asked * 2000) / 3,
  );
  let outcome: 'kept' | 'spare' | 'revoke' | 'dropped' = 'revoke';
  try {
    const oldest = {
      range: { key: prefix, rangeEnd: prefixEnd(prefix), limit: 1, oldestFirst: true },
    } as const;
    let result: TxnResult;
    try {
      result = await transport.txn({
        compare: [{ key: mine, target: 'CREATE', result: 'EQUAL', value: 0n }],
        // The two newest keys after the put: ours, and the one before it in line.
        success: [
          { put: { key: mine, value: ownerValue(owner), lease: lease.id } },
          oldest,
          { range: { key: prefix, rangeEnd: prefixEnd(prefix), limit: 2, newestFirst: true } },
        ],
        failure: [oldest, { range: { key: mine } }],
      });
    } catch (error) {
      // The spare ran out after all: nothing went on it.
      if (renew || !LEASE_GONE.test(String((error as Error).message))) throw error;
      outcome = 'dropped';
      return await join(context, key, owner, seconds, lineMs, mayShorten, true);
    }
    let own: KeyValue | undefined;
    let first: KeyValue | undefined;
    if (result.succeeded) {
      outcome = 'kept';
      remember(context, id, lease, asked, renewedAt, result.revision, true);
      const known = context.mine.get(id)!;
      known.triedAt = triedAt;
      known.seen = seen;
      learnBefore(known, result.results[2]?.[1], seen);
      first = result.results[1]?.[0];
      own = {
        key: mine,
        value: ownerValue(owner),
        createRevision: result.revision,
        modRevision: result.revision,
        lease: lease.id,
      };
    } else {
      // Our key is there already (put by an earlier attempt whose reply was lost, or by
      // another instance with the same owner): this lease stays unused.
      outcome = 'spare';
      first = result.results[0]?.[0];
      own = result.results[1]?.[0];
      if (own === undefined || !isOwners(own, prefix, owner)) return null;
      if (!isOwners(first, prefix, owner)) {
        const sentAt = performance.now();
        if ((await transport.keepAlive(own.lease)) > 0) {
          context.mine.set(id, {
            lease: own.lease,
            granted: 0,
            asked: 0,
            renewedAt: sentAt,
            createRevision: own.createRevision,
            waiting: true,
            triedAt,
          });
        }
        return null;
      }
    }
    if (!isOwners(first, prefix, owner)) return null;
    const claimMs = renewedAt + lease.ttl * 1000 - triedAt;
    if (mayShorten && result.succeeded && claimMs >= lineMs / 2) {
      // First in line at once: held on the line lease, as a hand-off grants it; the holder's
      // first extension moves the key onto a lease of its ttl.
      context.mine.get(id)!.handed = true;
      return claimMs < seconds * 1000
        ? { fence: result.revision, ttlMs: claimMs }
        : { fence: result.revision };
    }
    return await confirm(context, mine, owner, own, seconds);
  } finally {
    if (outcome === 'spare') context.pool.give(context, lease, asked, renewedAt);
    else if (outcome === 'revoke') revokeLater(context, lease.id);
  }
}

function remember(
  context: Context,
  id: string,
  lease: Lease,
  asked: number,
  renewedAt: number,
  createRevision: bigint,
  waiting: boolean,
): void {
  context.mine.set(id, {
    lease: lease.id,
    granted: lease.ttl,
    asked,
    renewedAt,
    createRevision,
    waiting,
  });
}

/** Our key is the oldest: hold it for `seconds`, by a renewal when its lease fits. */
async function confirm(
  context: Context,
  mine: Buffer,
  owner: string,
  own: KeyValue,
  seconds: number,
): Promise<Acquired | null> {
  const id = cacheKey(mine);
  const known = context.mine.get(id);
  if (
    known !== undefined &&
    known.lease === own.lease &&
    known.granted === effective(context, seconds)
  ) {
    const sentAt = performance.now();
    if ((await context.transport.keepAlive(own.lease)) <= 0) {
      context.mine.delete(id);
      return null;
    }
    known.renewedAt = sentAt;
    known.waiting = false;
    return { fence: own.createRevision };
  }
  const takenAt = performance.now();
  const { lease, renewed } = await context.pool.take(context, seconds);
  let confirmed: Acquired | null = null;
  try {
    // The move and a spare's renewal go together; a move onto a lease that turns out dead
    // lost our key with it.
    const [moved, alive] = await Promise.all([
      moveOnto(context, mine, owner, own, lease, seconds, takenAt),
      renewed,
    ]);
    if (!alive) {
      context.mine.delete(id);
      return null;
    }
    confirmed = moved;
    return confirmed;
  } finally {
    if (confirmed === null) revokeLater(context, lease.id);
  }
}

/**
 * Put our key again with `lease`, only if it is still the same key (same create revision, so
 * the same place and fence); the lease it left becomes a spare. Resolves null if the key is gone.
 */
async function moveOnto(
  context: Context,
  mine: Buffer,
  owner: string,
  own: KeyValue,
  lease: Lease,
  asked: number,
  renewedAt: number,
): Promise<Acquired | null> {
  const id = cacheKey(mine);
  const moved = await context.transport.txn({
    compare: [{ key: mine, target: 'CREATE', result: 'EQUAL', value: own.createRevision }],
    success: [{ put: { key: mine, value: ownerValue(owner), lease: lease.id } }],
    failure: [],
  });
  const known = context.mine.get(id);
  if (!moved.succeeded) {
    context.mine.delete(id);
    return null;
  }
  if (own.lease !== lease.id) retire(context, own.lease, known);
  remember(context, id, lease, asked, renewedAt, own.createRevision, false);
  return { fence: own.createRevision };
}
