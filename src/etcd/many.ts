import type { AcquiredKeys, ManyKeys } from 'cachelock';
import { lockKeys, ownerValue } from './keys.js';
import {
  type Context,
  cacheKey,
  effective,
  type HeldSet,
  isOwners,
  type Lease,
  leaseSeconds,
  retire,
  revokeLater,
  txnOnLease,
} from './leases.js';
import { type Compare, type KeyValue, type Operation, prefixEnd } from './transport.js';

// A set whose keys keep changing under us between the read and the write: refused, as held.
const MAX_ROUNDS = 4;

interface Slot {
  key: string;
  prefix: Buffer;
  mine: Buffer;
}

function slots(context: Context, keys: readonly string[], owner: string): Slot[] {
  return keys.map((key) => ({ key, ...lockKeys(context.namespace, key, owner) }));
}

const oldest = (prefix: Buffer): Operation => ({
  range: { key: prefix, rangeEnd: prefixEnd(prefix), limit: 1, oldestFirst: true },
});

/**
 * Several keys in one transaction, each laid out as a single lock is (see `keys.ts`): our key
 * goes under every lock's prefix, all on one lease of this acquisition, only if each prefix is
 * empty (or our key is already its oldest: a retry). So a partial set is never granted, and the
 * single-key calls see each key held by the owner. Each key's fence is its create revision,
 * which is the transaction's revision for the keys it put.
 */
export async function acquireMany(
  context: Context,
  keys: readonly string[],
  owner: string,
  ttlMs: number,
): Promise<AcquiredKeys | null> {
  const all = slots(context, keys, owner);
  const seconds = leaseSeconds(ttlMs);
  // What the last look found: per key, our own key where it is the oldest, else undefined.
  let ours: (KeyValue | undefined)[] = all.map(() => undefined);
  for (let round = 0; round < MAX_ROUNDS; round++) {
    const compare: Compare[] = all.flatMap(({ prefix, mine }, i): Compare[] => {
      const own = ours[i];
      const range = { key: prefix, rangeEnd: prefixEnd(prefix) };
      if (own === undefined) return [{ ...range, target: 'CREATE', result: 'EQUAL', value: 0n }];
      // Still ours and still the oldest: no key under the prefix older than ours.
      return [
        { key: mine, target: 'CREATE', result: 'EQUAL', value: own.createRevision },
        { ...range, target: 'CREATE', result: 'GREATER', value: own.createRevision - 1n },
      ];
    });
    const takenAt = performance.now();
    const taken = await context.pool.take(context, seconds);
    const lease = taken.lease;
    let outcome: 'kept' | 'spare' | 'revoke' | 'dropped' = 'revoke';
    try {
      const result = await txnOnLease(
        context.transport,
        {
          compare,
          success: all.map(({ mine }) => ({
            put: { key: mine, value: ownerValue(owner), lease: lease.id },
          })),
          failure: all.flatMap(({ prefix, mine }) => [oldest(prefix), { range: { key: mine } }]),
        },
        taken.renewed,
      );
      if (result === 'dropped' || result === 'revoke') {
        // The spare had expired or its renewal went unanswered: what went on it goes with it.
        outcome = result;
        if (result === 'revoke') return null;
        continue;
      }
      if (result.succeeded) {
        outcome = 'kept';
        const revisions = all.map((_, i) => ours[i]?.createRevision ?? result.revision);
        // Leases our keys were on before this (a retry) carry nothing now.
        const before = new Set(ours.flatMap((own) => (own === undefined ? [] : [own.lease])));
        settle(
          context,
          owner,
          keys,
          lease,
          seconds,
          takenAt,
          revisions,
          before,
          context.sets.get(owner),
        );
        return { fences: revisions };
      }
      outcome = 'spare';
      const next: (KeyValue | undefined)[] = [];
      for (const [i, { prefix }] of all.entries()) {
        const holder = result.results[2 * i]?.[0];
        const own = result.results[2 * i + 1]?.[0];
        if (holder === undefined) next.push(undefined);
        else if (own !== undefined && isOwners(holder, prefix, owner)) next.push(own);
        // Held by another, or another's line: refused.
        else return null;
      }
      ours = next;
    } finally {
      if (outcome === 'spare') context.pool.give(context, lease, seconds, takenAt);
      else if (outcome === 'revoke') revokeLater(context, lease.id);
    }
  }
  return null;
}

/** The spare-lease bookkeeping of a held set, as `retire` takes it. */
function mineOf(set: HeldSet) {
  return {
    lease: set.lease,
    granted: set.granted,
    asked: set.asked,
    renewedAt: set.renewedAt,
    createRevision: 0n,
    waiting: false,
  };
}

/**
 * `owner`'s keys now rest on `lease`: remember the set, and let the leases they were on before
 * go (back to the pool when this store knows them as the set's, else revoked).
 */
function settle(
  context: Context,
  owner: string,
  keys: readonly string[],
  lease: Lease,
  seconds: number,
  takenAt: number,
  revisions: bigint[],
  before: Iterable<string>,
  known: HeldSet | undefined,
): void {
  for (const old of before) {
    if (old === lease.id) continue;
    if (known !== undefined && known.lease === old) retire(context, old, mineOf(known));
    else revokeLater(context, old);
  }
  context.sets.set(owner, {
    keys: [...keys],
    lease: lease.id,
    granted: lease.ttl,
    asked: seconds,
    renewedAt: takenAt,
    revisions,
  });
}

/** This instance's record of `owner`'s set when it is exactly these keys. */
function knownSet(context: Context, keys: readonly string[], owner: string): HeldSet | undefined {
  const known = context.sets.get(owner);
  if (known === undefined || known.keys.length !== keys.length) return undefined;
  return known.keys.every((key, i) => key === keys[i]) ? known : undefined;
}

/**
 * Delete our key under each prefix, in one transaction (each deletion wakes that key's
 * watchers as a single release does). Our keys are only ever the oldest of their prefix (they
 * were put on empty prefixes), so each one found was held. With `keepMs`, the keys move onto a
 * lease of `keepMs` instead.
 */
export async function releaseMany(
  context: Context,
  keys: readonly string[],
  owner: string,
  keepMs: number | undefined,
): Promise<boolean> {
  const all = slots(context, keys, owner);
  const known = knownSet(context, keys, owner);
  context.sets.delete(owner);
  if (keepMs !== undefined && keepMs > 0) return keepMany(context, all, owner, keepMs, known);
  // What this instance remembers of keys the owner put one at a time (a waiting set's tries, its
  // place in a line) goes with them: left behind, a place still counted as waiting would be the
  // one the watch reads for, in place of the key's real waiters, for as long as the store lives.
  for (const { mine } of all) context.mine.delete(cacheKey(mine));
  const result = await context.transport.txn({
    compare: [],
    success: [
      ...all.map(({ mine }) => ({ range: { key: mine } })),
      ...all.map(({ mine }) => ({ delete: { key: mine } })),
    ],
    failure: [],
  });
  const found = all.map((_, i) => result.results[i]?.[0]);
  const leases = new Set(found.flatMap((kv) => (kv === undefined ? [] : [kv.lease])));
  for (const lease of leases) {
    // Each set's lease carries only that set's keys.
    if (known !== undefined && known.lease === lease) retire(context, lease, mineOf(known));
    else revokeLater(context, lease);
  }
  return found.every((kv) => kv !== undefined);
}

async function keepMany(
  context: Context,
  all: Slot[],
  owner: string,
  keepMs: number,
  known: HeldSet | undefined,
): Promise<boolean> {
  const read = await context.transport.txn({
    compare: [],
    success: all.map(({ mine }) => ({ range: { key: mine } })),
    failure: [],
  });
  const found = all.map((_, i) => read.results[i]?.[0]);
  const present = all.flatMap((slot, i) =>
    found[i] === undefined ? [] : [{ slot, kv: found[i]! }],
  );
  if (present.length === 0) return false;
  const lease = await context.pool.takeRenewed(context, leaseSeconds(keepMs));
  const moved = await context.transport.txn({
    compare: present.map(({ slot, kv }) => ({
      key: slot.mine,
      target: 'CREATE',
      result: 'EQUAL',
      value: kv.createRevision,
    })),
    success: present.map(({ slot }) => ({
      put: { key: slot.mine, value: ownerValue(owner), lease: lease.id },
    })),
    failure: [],
  });
  if (!moved.succeeded) {
    revokeLater(context, lease.id);
    return false;
  }
  for (const old of new Set(present.map(({ kv }) => kv.lease))) {
    if (known !== undefined && known.lease === old) retire(context, old, mineOf(known));
    else revokeLater(context, old);
  }
  return present.length === all.length;
}

/**
 * Extend every key or none: with all of them on one lease of the TTL asked for, one
 * keep-alive; otherwise they move together onto a new lease, checked by their create
 * revisions and leases.
 */
export async function extendMany(
  context: Context,
  keys: readonly string[],
  owner: string,
  ttlMs: number,
): Promise<boolean> {
  const all = slots(context, keys, owner);
  const read = await context.transport.txn({
    compare: [],
    success: all.map(({ mine }) => ({ range: { key: mine } })),
    failure: [],
  });
  const found = all.map((_, i) => read.results[i]?.[0]);
  if (found.some((kv) => kv === undefined)) {
    // Lost: the core releases nothing after a failed extension, so forget the set now.
    context.sets.delete(owner);
    return false;
  }
  const own = found as KeyValue[];
  const seconds = leaseSeconds(ttlMs);
  const known = knownSet(context, keys, owner);
  const leases = new Set(own.map((kv) => kv.lease));
  if (leases.size === 1) {
    const [lease] = leases as Set<string> & { size: 1 };
    const granted =
      known !== undefined && known.lease === lease
        ? known.granted
        : (await context.transport.timeToLive(lease!)).granted;
    if (granted === effective(context, seconds)) {
      const sentAt = performance.now();
      const renewed = await context.transport.keepAlive(lease!);
      if (renewed <= 0) context.sets.delete(owner);
      else if (known !== undefined && known.lease === lease) known.renewedAt = sentAt;
      return renewed > 0;
    }
  }
  const takenAt = performance.now();
  const lease: Lease = await context.pool.takeRenewed(context, seconds);
  const moved = await context.transport.txn({
    compare: all.flatMap(({ mine }, i): Compare[] => [
      { key: mine, target: 'CREATE', result: 'EQUAL', value: own[i]!.createRevision },
      { key: mine, target: 'LEASE', result: 'EQUAL', value: own[i]!.lease },
    ]),
    success: all.map(({ mine }) => ({
      put: { key: mine, value: ownerValue(owner), lease: lease.id },
    })),
    failure: [],
  });
  if (!moved.succeeded) {
    revokeLater(context, lease.id);
    context.sets.delete(owner);
    return false;
  }
  const revisions = own.map((kv) => kv.createRevision);
  settle(context, owner, keys, lease, seconds, takenAt, revisions, leases, known);
  return true;
}

/**
 * The most keys one transaction takes: etcd refuses a transaction of more than 128 operations
 * in any of its lists by default (`--max-txn-ops`), and a release reads and deletes each key.
 * A lock on more keys takes them one at a time.
 */
export const MOST_KEYS = 64;

/** The `keys` capability. */
export function manyKeys(open: () => Context): ManyKeys {
  return {
    most: MOST_KEYS,
    // Async, so that a closed store rejects rather than throws.
    acquire: async (keys, owner, ttlMs) => acquireMany(open(), keys, owner, ttlMs),
    release: async (keys, owner, keepMs) => releaseMany(open(), keys, owner, keepMs),
    extend: async (keys, owner, ttlMs) => extendMany(open(), keys, owner, ttlMs),
  };
}
