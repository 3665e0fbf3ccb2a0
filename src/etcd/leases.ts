import { ownerOf } from './keys.js';
import type { Deletion, KeyValue, Operation, Transport, Txn, TxnResult } from './transport.js';
import { prefixEnd } from './transport.js';

/**
 * How a lease in milliseconds becomes an etcd lease. etcd leases count whole seconds, and the
 * server raises any TTL below its minimum (1.5 election timeouts, rounded up: 2 s with etcd's
 * default 1 s election timeout) to that minimum. So a `ttl` of 300 ms is a lease of 1 s or
 * more on etcd: a holder that dies frees the key after the lease etcd granted, not after
 * 300 ms. The lease runs on the leader's clock; a new leader extends every lease by an
 * election timeout, so a lease may outlive its TTL a little but never ends early.
 */
export function leaseSeconds(ms: number): number {
  return Math.max(1, Math.ceil(ms / 1000));
}

/** What a store instance remembers of the keys it put: saves a read before a release. */
export interface Mine {
  lease: string;
  /** The TTL that lease was granted, in seconds (what a keep-alive renews it to). */
  granted: number;
  /** The TTL asked for it, in seconds (its spares' shelf). */
  asked: number;
  /** When it was last granted or renewed (sent), on `performance.now()`. */
  renewedAt: number;
  createRevision: bigint;
  /** In the line (a waiter), not (yet known to be) the holder. */
  waiting: boolean;
  /**
   * A shared lease's waiter: how much weight before it must still go before it can be
   * admitted, as its last look and the deletions seen since say; undefined when unknown.
   */
  needs?: number;
  /**
   * A watch saw this waiting key become the oldest: the next acquire need not read, and a
   * release deletes it as the holder's.
   */
  handed?: boolean;
  /** When this waiter's last attempt was sent, on `performance.now()`. */
  triedAt?: number;
  /**
   * The key just before this waiter's in line (its create revision), as a read found it, and
   * the watch's count of deletions before that read was sent: while that key stays, no other
   * deletion can make this waiter the holder (see `Wakeups`).
   */
  before?: { createRevision: bigint; seen: number };
  /** The watch's count of deletions when this waiter last looked (see `Context.deletions`). */
  seen?: number;
}

/** Several keys taken together by one owner: one lease carries them all. */
export interface HeldSet {
  /** The lock keys, in the order given. */
  keys: readonly string[];
  lease: string;
  granted: number;
  asked: number;
  renewedAt: number;
  /** Per key, its create revision (its fence). */
  revisions: bigint[];
}

/** Everything an operation needs, shared by the store's operations. */
export interface Context {
  transport: Transport;
  namespace: string;
  /** By `<mine key as latin1>`: the keys this instance put and still believes live. */
  mine: Map<string, Mine>;
  /** The smallest TTL the server granted when asked for less, learned from grants. */
  floor: { seconds: number };
  pool: LeasePool;
  /** The sets of keys this instance took together, by owner (see `many.ts`). */
  sets: Map<string, HeldSet>;
  /**
   * How many deletions an active watch on `prefix` has seen, or undefined when no watch is
   * active: while the count stands still, nothing before a waiter's key has gone.
   */
  deletions(prefix: Buffer): number | undefined;
  /**
   * Whether the key before `mine` in its line under `prefix` is still there, as an active watch
   * tells (see `Mine.before`): then no deletion since has made `mine` the holder.
   */
  behind(prefix: Buffer, mine: Mine): boolean;
  /** The deletions an active watch on `prefix` saw (see `Wakeups.recent`). */
  recent(prefix: Buffer): { deletions: readonly Deletion[]; complete: boolean } | undefined;
}

export function cacheKey(mine: Buffer): string {
  return mine.toString('latin1');
}

/** Grant a lease of `seconds` and learn the server's floor from what it granted. */
export async function grant(
  context: Context,
  seconds: number,
): Promise<{ id: string; ttl: number }> {
  const lease = await context.transport.grant(seconds);
  if (lease.ttl > seconds && lease.ttl > context.floor.seconds) context.floor.seconds = lease.ttl;
  return lease;
}

/** The TTL a grant of `seconds` would get. */
export function effective(context: Context, seconds: number): number {
  return Math.max(seconds, context.floor.seconds);
}

/** Revoke a lease in the background: it holds no key any more, so nothing waits on it. */
export function revokeLater(context: Context, lease: string): void {
  if (lease === '0') return;
  context.transport.revoke(lease).catch(() => {});
}

/**
 * A lease our key just left (moved onto another, or deleted by us): a spare when this store
 * knows what it was asked for, else revoked.
 */
export function retire(context: Context, lease: string, known: Mine | undefined): void {
  if (known !== undefined && known.lease === lease) {
    context.pool.give(context, { id: lease, ttl: known.granted }, known.asked, known.renewedAt);
  } else {
    revokeLater(context, lease);
  }
}

/** A read of the lock's oldest key (its holder) and, optionally, of one more key. */
export function readTxn(prefix: Buffer, also?: Buffer): Txn {
  const success: Txn['success'] = [
    { range: { key: prefix, rangeEnd: prefixEnd(prefix), limit: 1, oldestFirst: true } },
  ];
  if (also !== undefined) success.push({ range: { key: also } });
  return { compare: [], success, failure: [] };
}

/** A range for the key just before the one created at `createRevision` under `prefix`. */
export function beforeRange(prefix: Buffer, createRevision: bigint): Operation {
  return {
    range: {
      key: prefix,
      rangeEnd: prefixEnd(prefix),
      limit: 1,
      newestFirst: true,
      maxCreateRevision: createRevision - 1n,
    },
  };
}

/** Record what a read (sent when the watch had counted `seen` deletions) found before `mine`. */
export function learnBefore(
  mine: Mine,
  found: KeyValue | undefined,
  seen: number | undefined,
): void {
  mine.before =
    found === undefined || seen === undefined
      ? undefined
      : { createRevision: found.createRevision, seen };
}

/** Whether `kv` is the key of `owner` under `prefix`, written by cachelock. */
export function isOwners(kv: KeyValue | undefined, prefix: Buffer, owner: string): boolean {
  return (
    kv !== undefined &&
    ownerOf(kv.value) === owner &&
    kv.key.length === prefix.length + Buffer.byteLength(owner) &&
    kv.key.subarray(prefix.length).toString() === owner
  );
}

/** A lease granted for one acquisition, or taken from the spares. */
export interface Lease {
  id: string;
  /** The TTL it was granted, in seconds. */
  ttl: number;
}

interface Spare extends Lease {
  /** When it was last granted or renewed (sent), on `performance.now()`. */
  renewedAt: number;
}

export const LEASE_GONE = /lease not found/i;

/**
 * Run `txn`, which puts keys on a lease the pool gave (see `LeasePool.take`), beside that
 * lease's renewal, and say what becomes of the lease unless the caller keeps it: `'dropped'`
 * when the lease was gone (etcd refused it, or its renewal failed and nothing went on it): the
 * caller starts afresh; `'revoke'` when the transaction put our keys on a lease whose renewal
 * failed: a put on a lease that was not alive is trusted by no one, so the caller revokes it
 * and reports the keys not taken. Else the transaction's result, on a lease alive all along.
 */
export async function txnOnLease(
  transport: Transport,
  txn: Txn,
  renewed: Promise<boolean>,
): Promise<TxnResult | 'dropped' | 'revoke'> {
  let result: TxnResult;
  let alive: boolean;
  try {
    [result, alive] = await Promise.all([transport.txn(txn), renewed]);
  } catch (error) {
    // etcd refused the put: nothing went on the lease, whatever its renewal says.
    if (LEASE_GONE.test(String((error as Error).message))) {
      await renewed;
      return 'dropped';
    }
    throw error;
  }
  if (alive) return result;
  return result.succeeded ? 'revoke' : 'dropped';
}

// Spares kept per TTL; a released key's lease beyond these is revoked.
const MAX_SPARES = 8;

/**
 * Leases without keys, kept for the next acquisition of this store: granting and revoking a
 * lease are writes to etcd's log (each as dear as the lock's own transaction), while renewing
 * one is answered by the leader alone. A released key's lease goes back here; an acquisition
 * takes one, renews it (so it counts its whole TTL from then) and puts its key on it. Spares
 * hold no key, are never renewed while spare, so they expire on their own within their TTL,
 * and `close()` revokes them: nothing is kept per key.
 */
export class LeasePool {
  readonly #spares = new Map<number, Spare[]>();

  /**
   * A lease of `seconds`: a spare if one is at hand, with its renewal under way (`renewed`
   * resolves whether it is still alive, and from then on it counts its whole TTL), else a new
   * one. The caller may use the lease before the renewal answers, as long as it trusts a put
   * on it only once `renewed` is true: a lease that is alive when renewed was alive all along.
   */
  async take(
    context: Context,
    seconds: number,
  ): Promise<{ lease: Lease; renewed: Promise<boolean> }> {
    const spares = this.#spares.get(seconds);
    while (spares !== undefined && spares.length > 0) {
      const spare = spares.pop()!;
      // Past half its TTL it may be gone by the time the renewal arrives: let it expire.
      if (performance.now() - spare.renewedAt > (spare.ttl * 1000) / 2) continue;
      const renewed = context.transport.keepAlive(spare.id).then(
        (ttl) => ttl > 0,
        () => false,
      );
      return { lease: { id: spare.id, ttl: spare.ttl }, renewed };
    }
    return { lease: await grant(context, seconds), renewed: Promise.resolve(true) };
  }

  /**
   * A lease of `seconds` with at least `leftMs` of it still ahead, counted from when it was last
   * renewed (`renewedAt`): a spare that has that much left is used as it is, with no renewal,
   * else one is renewed or granted now. A put on a spare that ran out all the same is refused
   * by etcd (lease not found).
   */
  async takeLasting(
    context: Context,
    seconds: number,
    leftMs: number,
  ): Promise<{ lease: Lease; renewedAt: number }> {
    const lasting = this.lasting(seconds, leftMs);
    if (lasting !== undefined) return { lease: lasting, renewedAt: lasting.renewedAt };
    const renewedAt = performance.now();
    return { lease: await this.takeRenewed(context, seconds), renewedAt };
  }

  /** The spare of `seconds` last given back, if it has `leftMs` ahead as last renewed. */
  lasting(seconds: number, leftMs: number): Spare | undefined {
    const spares = this.#spares.get(seconds);
    const last = spares?.at(-1);
    if (last === undefined || last.renewedAt + last.ttl * 1000 - performance.now() < leftMs) {
      return undefined;
    }
    return spares!.pop();
  }

  /** A lease of `seconds`, alive and renewed (or granted) just now. */
  async takeRenewed(context: Context, seconds: number): Promise<Lease> {
    for (;;) {
      const { lease, renewed } = await this.take(context, seconds);
      if (await renewed) return lease;
    }
  }

  /**
   * Keep `lease` for the next acquisition: no key of ours is on it any more. `renewedAt` is
   * when it was last renewed or granted, as far as this store knows (a lower bound is safe).
   */
  give(context: Context, lease: Lease, asked: number, renewedAt: number): void {
    let spares = this.#spares.get(asked);
    if (spares === undefined) this.#spares.set(asked, (spares = []));
    if (spares.length >= MAX_SPARES) {
      revokeLater(context, lease.id);
      return;
    }
    spares.push({ ...lease, renewedAt });
  }

  /** Revoke every spare. */
  async close(context: Context): Promise<void> {
    const all = [...this.#spares.values()].flat();
    this.#spares.clear();
    await Promise.all(all.map((spare) => context.transport.revoke(spare.id).catch(() => false)));
  }
}
