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
   * `acquire` at once, and the others keep waiting. Returns the unsubscribe function. Absent:
   * the core polls.
   *
   * The core subscribes before it tries to acquire, so a release between a failed attempt and
   * the wake-up cannot be missed. A store whose subscription becomes active only later (a pub/sub
   * SUBSCRIBE, a LISTEN) calls `listener` once when it does, so that the waiter tries again
   * and catches a release that happened in between. Spurious calls are harmless.
   */
  onRelease?(key: string, listener: (handoff?: Handoff) => void): () => void;
  /** Free what the store opened itself (connections, subscribers, timers). */
  close?(): Promise<void>;
}

/** What a successful acquisition returns. */
export interface Acquired {
  /** Fencing token: strictly increasing per key across acquisitions, where the store has one. */
  fence?: bigint;
}

export interface AcquireOptions {
  /**
   * The caller is waiting for the key. A store that keeps a line of waiters may put `owner` in
   * it (or refresh its place) for `lineMs`, and later hand the key to it on release, reporting
   * that through `onRelease`. Stores without a line ignore this.
   */
  lineMs?: number;
}

/**
 * A store handed a released key to a waiter. It is news, not a grant: the message can reach a
 * paused waiter after its claim ran out and another owner took the key, so the waiter confirms
 * with `acquire` (which refreshes a lease it still holds) and counts its lease from sending that.
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
 * Undo an acquire whose outcome is unknown (it failed or timed out here, but the store may
 * still grant it, as a stalled server does once it runs again), so that the key is not held
 * for a whole lease by an owner nobody answers to. Releasing is owner-checked, so this never
 * touches another owner's lease.
 */
export function abandon(store: LockStore, key: string, owner: string): void {
  store.release(key, owner).catch(() => {});
}
