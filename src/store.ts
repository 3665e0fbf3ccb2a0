/**
 * The contract between the core and a backend. The core knows nothing else about a store.
 *
 * Keys given to a store already carry the lock's prefix. Owners are unique per acquisition
 * across all processes (see `owner.ts`), so a store never has to tell two acquisitions of one
 * process apart by anything but the owner string.
 */
export interface LockStore {
  /** `'memory'`, `'redis'`, `'postgres'`, ... */
  readonly kind: string;
  /** Acquire and release are atomic for every process sharing the store. */
  readonly atomic: boolean;
  /**
   * Take `key` for `owner` with a lease of `ttlMs` if it is free or its lease has expired, in
   * one atomic step. Resolves `null` when another owner holds it. When `owner` already holds it
   * (a hand-off granted it, or a retry after a lost reply), refresh the lease and resolve as a
   * success with the same fence.
   */
  acquire(
    key: string,
    owner: string,
    ttlMs: number,
    options?: AcquireOptions,
  ): Promise<Acquired | null>;
  /**
   * Give `key` up if `owner` holds it: delete it, or with `keepMs > 0` shorten the lease to
   * `keepMs` (for `holdAtLeast`). Resolves whether `owner` held it until now. A store that
   * queues waiters also removes `owner` from the key's line here.
   */
  release(key: string, owner: string, keepMs?: number): Promise<boolean>;
  /** Set the lease of `key` to `ttlMs` from now if `owner` still holds it. */
  extend(key: string, owner: string, ttlMs: number): Promise<boolean>;
  /** Who holds `key` now and for how much longer, or `null` when it is free. */
  inspect(key: string): Promise<LeaseInfo | null>;
  /**
   * Push wake-ups: call `listener` when `key` is released (or may have become free). A store
   * may announce only the releases that a waiter asked for (an `acquire` with `lineMs` that
   * found the key held), as the core's waiters always do. A store that hands a released key
   * straight to the next waiter in line passes the new holder: that waiter then confirms with
   * `acquire` at once (or holds on the hand-off itself, see `handoffGrants`), and the others
   * keep waiting. Returns the unsubscribe function. Absent:
   * the core polls.
   *
   * The core tries again once it has subscribed (unless `replaysWakeups`), so a release between
   * a failed attempt and the subscription cannot be missed. A store whose subscription becomes active only later (a pub/sub
   * SUBSCRIBE, a LISTEN) calls `listener` once when it does, so that the waiter tries again
   * and catches a release that happened in between. Spurious calls are harmless.
   */
  onRelease?(key: string, listener: (handoff?: Handoff) => void): () => void;
  /**
   * `onRelease` also tells a new listener the wake-ups that came shortly before it listened
   * (after `onRelease` has returned, never from inside it, as its subscription's first call
   * does where it was not active yet). A waiter whose first
   * `acquire` joined the line then sleeps until woken instead of trying again at once.
   */
  readonly replaysWakeups?: boolean;
  /**
   * A `Handoff` that `onRelease` tells the waiter it names is the grant itself: that waiter
   * holds the key from the hand-off on, for the claim `ttlMs` on the store's clock, and the
   * store never tells it one made before its last refused `acquire` (void by then). The core
   * then holds without a confirming `acquire`, counting the claim from when it sent that
   * refused `acquire`, and extends to its own ttl as usual.
   */
  readonly handoffGrants?: boolean;
  /** Free what the store opened itself (connections, subscribers, timers). */
  close?(): Promise<void>;
  /**
   * The optional abilities this store has beyond the exclusive lock above, each by name. The
   * core uses one when present and otherwise builds on the required members where it can
   * (several keys one by one in a fixed order) or refuses with a `TypeError` naming what the
   * store lacks (permits, readers and writers).
   */
  readonly capabilities?: StoreCapabilities;
}

/** What a store can do beyond one exclusive key. Each has its own cases in `cachelock/testing`. */
export interface StoreCapabilities {
  /** Several exclusive keys taken all or none in one atomic step (one script, one transaction). */
  readonly keys?: ManyKeys;
  /** Counted leases on a key: `Semaphore`. */
  readonly permits?: SharedLeases;
  /** A key's readers and its writer: `ReadWriteLock`. */
  readonly readersWriters?: SharedLeases;
}

/**
 * Several keys of the exclusive namespace (the same keys `acquire` takes one at a time), held by
 * one owner. Each call is atomic: all keys or none.
 */
export interface ManyKeys {
  /**
   * The most keys one call takes (a server's limit on one transaction); a lock on more keys
   * takes them one at a time, in the core's fixed order, as on a store without this
   * capability. Absent: any number.
   */
  readonly most?: number;
  /**
   * Throw a `TypeError`, naming the keys and why, when this store can never take `keys`
   * together (a Redis Cluster's keys in different slots). The core asks before a lock's first
   * attempt, so such a set is refused as bad input: never tried, retried or waited on. Absent:
   * every set can be taken. `shown[i]` is `keys[i]` as the user wrote it (without the lock's
   * prefix), for the message.
   */
  check?(keys: readonly string[], shown?: readonly string[]): void;
  /**
   * Take every key for `owner` if each is free, expired or already `owner`'s; otherwise take
   * none and resolve `null`. `fences[i]` is the fence of `keys[i]`. A set that `check` refuses
   * rejects with the same `TypeError`.
   */
  acquire(keys: readonly string[], owner: string, ttlMs: number): Promise<AcquiredKeys | null>;
  /**
   * Release every key `owner` holds; resolves `true` only if `owner` held all of them. Each key
   * freed is announced through `LockStore.onRelease` as a single release is: waiters for several
   * keys listen on each of them.
   */
  release(keys: readonly string[], owner: string, keepMs?: number): Promise<boolean>;
  /** Extend every key; resolves `true` only if `owner` held all of them (then all are extended). */
  extend(keys: readonly string[], owner: string, ttlMs: number): Promise<boolean>;
}

export interface AcquiredKeys {
  /** Per key, in the order given; `undefined` where the store has no fence. */
  fences: (bigint | undefined)[];
}

/**
 * Leases that share a key up to a limit, in a namespace of their own (a semaphore's `'a'` is
 * not the lock `'a'`, nor the read/write lock `'a'`). One weighted rule serves both primitives:
 * an acquisition of `weight` is admitted while the weights of the live leases plus its own stay
 * within its `limit`. A semaphore asks weight 1 of `permits`; a reader weight 1 and a writer
 * the whole of `RW_LIMIT`.
 *
 * Waiters are served first come, first served: an acquisition with `lineMs` joins (or renews
 * its place in) the key's line for `lineMs`, and no acquisition is admitted while an earlier
 * place in the line is live, including one without `lineMs` (`tryAcquire` does not jump the
 * line). Releases are owner-checked, as for the exclusive lock.
 */
export interface SharedLeases {
  acquire(
    key: string,
    owner: string,
    ttlMs: number,
    request: SharedRequest,
  ): Promise<Acquired | null>;
  /** Leave the line too. Resolves whether `owner` held a lease on `key` until now. */
  release(key: string, owner: string, keepMs?: number): Promise<boolean>;
  extend(key: string, owner: string, ttlMs: number): Promise<boolean>;
  /** The live leases on `key`, oldest first; empty when none. */
  inspect(key: string): Promise<LeaseInfo[]>;
  /**
   * As `LockStore.onRelease`: a lease of `key` ended or a place in its line opened. A store
   * with `handoffGrants` may hand a freed permit (weight 1, no shared fence) to the first in
   * line in the release itself and tell it as a `Handoff`, with the same promise.
   */
  onRelease?(key: string, listener: (handoff?: Handoff) => void): () => void;
}

export interface SharedRequest {
  /** The most weight, counting this acquisition's, that may hold the key at once. */
  limit: number;
  /** What this acquisition counts for, 1 to `limit`. */
  weight: number;
  /**
   * Resolve the fence of the last acquisition that did not share (readers share the last
   * writer's) instead of a new one; `undefined` when there was none.
   */
  shareFence?: boolean;
  /**
   * The caller waits: join or renew its place in the key's line for `lineMs`. The core's waiters
   * always pass it, with or without `onRelease`, and renew it at least once a second.
   */
  lineMs?: number;
  /** As `AcquireOptions.mayShorten`. */
  mayShorten?: boolean;
}

/** The limit of a read/write lock: a writer weighs all of it, a reader 1. */
export const RW_LIMIT = 2 ** 30;

/** What a successful acquisition returns. */
export interface Acquired {
  /** Fencing token: strictly increasing per key across acquisitions, where the store has one. */
  fence?: bigint;
  /**
   * The lease runs this long from when the acquire was sent, shorter than asked: only where the
   * caller allowed it (`AcquireOptions.mayShorten`). Absent: the `ttlMs` asked.
   */
  ttlMs?: number;
}

export interface AcquireOptions {
  /**
   * The caller is waiting for the key. A store that keeps a line of waiters may put `owner` in
   * it (or refresh its place) for `lineMs`, and later hand the key to it on release, reporting
   * that through `onRelease`. Stores without a line ignore this.
   */
  lineMs?: number;
  /**
   * The caller extends its lease as it goes, so a lease shorter than `ttlMs` will do, said in
   * `Acquired.ttlMs`, where that saves the store a trip (etcd: an idle lease's renewal).
   */
  mayShorten?: boolean;
}

/**
 * A store handed a released key to a waiter. Unless the store has `handoffGrants` it is news,
 * not a grant: the message can reach a paused waiter after its claim ran out and another owner
 * took the key, so the waiter confirms with `acquire` (which refreshes a lease it still holds)
 * and counts its lease from sending that.
 */
export interface Handoff {
  owner: string;
  fence?: bigint;
  /** The claim lease the store gave the new holder, counted from the hand-off on its clock. */
  ttlMs?: number;
}

/**
 * What `LockStore.inspect` reports. A value under the key that cachelock did not write (another
 * program's, python-cachelock's `1`) is held by an unknown owner: `owner` is `''`, `ttlMs` is
 * what the store knows is left of that value, or `Infinity` when it cannot tell or the value
 * never expires, and there is no fence. Such a key is refused to every acquirer and is never
 * overwritten or deleted, except by a release as owner `''` (only a forced release does that).
 */
export interface LeaseInfo {
  /** `''` when the key holds a value cachelock did not write: held by an unknown owner. */
  owner: string;
  /** Milliseconds left on the lease, by the store's clock; `Infinity` when it never expires. */
  ttlMs: number;
  fence?: bigint;
}

/** Tells a `LockStore` from the other things `cache` accepts. */
export function isLockStore(value: unknown): value is LockStore {
  if (typeof value !== 'object' || value === null) return false;
  const store = value as Partial<LockStore>;
  return (
    typeof store.kind === 'string' &&
    typeof store.atomic === 'boolean' &&
    typeof store.acquire === 'function' &&
    typeof store.release === 'function' &&
    typeof store.extend === 'function' &&
    typeof store.inspect === 'function'
  );
}

/**
 * For a store with `handoffGrants`: each waiter's last refusal, as a point in the store's own
 * order (the server's time, a fence counter) that its hand-offs' fences share, so that a
 * hand-off made before that refusal (a message that came late) is never told as a grant.
 * Owners that left without a word go, the oldest first, once there are `limit`.
 */
export class Refusals {
  readonly #at = new Map<string, bigint>();
  readonly #limit: number;

  constructor(limit = 10_000) {
    this.#limit = limit;
  }

  /** `owner` was refused at `at`. */
  refused(owner: string, at: bigint): void {
    // A known owner moves to the end; only a new one, past the limit, makes the oldest go.
    if (!this.#at.delete(owner) && this.#at.size >= this.#limit) {
      this.#at.delete(this.#at.keys().next().value as string);
    }
    this.#at.set(owner, at);
  }

  /** Whether a refusal of `owner` is on record (the oldest are forgotten past the limit). */
  has(owner: string): boolean {
    return this.#at.has(owner);
  }

  /** `owner` was granted or let go: nothing is void for it any more. */
  forget(owner: string): void {
    this.#at.delete(owner);
  }

  /**
   * A hand-off made before its waiter's last refusal is void: `undefined`. One whose waiter's
   * refusal is not on record is only news (no claim `ttlMs`), so that the waiter confirms it
   * with an acquire rather than holding on it.
   */
  checked(handoff: Handoff): Handoff | undefined {
    const refused = this.#at.get(handoff.owner);
    if (refused === undefined || handoff.fence === undefined) {
      return { owner: handoff.owner, fence: handoff.fence };
    }
    return handoff.fence > refused ? handoff : undefined;
  }
}

/**
 * Undo an acquire whose outcome is unknown (it failed or timed out here, but the store may
 * still grant it, as a stalled server does once it runs again), so that the key is not held
 * for a whole lease by an owner nobody answers to. Releasing is owner-checked, so this never
 * touches another owner's lease.
 */
export function abandon(store: LockStore, key: string, owner: string): void {
  store.release(key, owner).catch(() => {});
}

/**
 * The in-memory store's answers given at once rather than as promises, so that an uncontended
 * lock costs no promise round trip. Keyed by a registered symbol, as the ESM and CommonJS builds
 * share the default memory store. A store's own methods stay the contract: the core uses these
 * only when `of` is the very store (an object made from it inherits the property, not them).
 */
export const IMMEDIATE = Symbol.for('cachelock.immediate.v1');

export interface Immediate {
  readonly of: LockStore;
  /**
   * `now`: the caller's `performance.now()`, read just before; a store that judges leases by
   * that clock may take it rather than read the clock again. Optional: a core of an earlier
   * version, loaded beside this one, asks without it.
   */
  acquire(key: string, owner: string, ttlMs: number, now?: number): Acquired | null;
  release(key: string, owner: string, keepMs?: number): boolean;
}

/** `store`'s immediate answers, when it gives them. */
export function immediateOf(store: LockStore): Immediate | undefined {
  const immediate = (store as { [IMMEDIATE]?: Immediate })[IMMEDIATE];
  return immediate !== undefined && immediate.of === store ? immediate : undefined;
}
