import type { Acquired, LeaseInfo, LockStore } from '../store.js';

/**
 * Any cache with `get`, `set` and `delete` (python-cachelock's custom cache), and optionally the
 * three atomic methods that make it safe across processes. Values may be returned synchronously
 * or as promises; the optional methods resolve truthy when they changed the cache.
 */
export interface PlainCache {
  get(key: string): unknown;
  set(key: string, value: string, ttlMs: number): unknown;
  delete(key: string): unknown;
  /** Store `value` only if `key` holds nothing (set-if-absent). */
  add?(key: string, value: string, ttlMs: number): unknown;
  /** Replace the value only if it still is `expected`, exactly as `get` returned it. */
  compareAndSet?(key: string, expected: unknown, value: string, ttlMs: number): unknown;
  /** Delete the value only if it still is `expected`, exactly as `get` returned it. */
  compareAndDelete?(key: string, expected: unknown): unknown;
}

export interface PlainCacheStoreOptions {
  /** The clock that judges the expiry kept inside each value. Default `Date.now`. */
  now?: () => number;
  /** What `kind` reports, for adapters built on this one (`'keyv'`, ...). Default `'plain'`. */
  kind?: string;
}

/** What the adapter finds under a key. */
type Found =
  | { kind: 'free' }
  /** A lease cachelock wrote, live or expired by the time inside it. */
  | { kind: 'lease'; raw: unknown; owner: string; expiresAt: number }
  /** A value cachelock did not write (python-cachelock's `1`, another app's data). */
  | { kind: 'foreign'; raw: unknown };

const ATOMIC_METHODS = ['add', 'compareAndSet', 'compareAndDelete'] as const;

// A value changed under an operation between its read and its write (another process took an
// expired lease, say); the operation reads again this many times before it gives up.
const ATTEMPTS = 3;

/**
 * The owner `inspect` reports for a value cachelock did not write: held by an unknown owner. A
 * release as this owner (only `cachelock release --force` does that) clears such a value.
 */
export const UNKNOWN_OWNER = '';

/** The longest a timer counts, in ms. */
const MAX_TIMER_MS = 2 ** 31 - 1;

/**
 * How long the cache is asked to keep a lease's value when the expiry inside the value decides:
 * its ttl rounded up to whole seconds, plus three, so that the cache's own expiry only clears
 * what is left behind. A cache that counts whole seconds (a Keyv or cache-manager on memcached,
 * whose clock skips a second now and then) would otherwise drop a live lease early, and another
 * holder take the key.
 */
function paddedTtlMs(ttlMs: number): number {
  // Not past what a timer can count (caches that expire values with setTimeout), unless the ttl is.
  return Math.min(Math.ceil(ttlMs / 1_000) * 1_000 + 3_000, Math.max(ttlMs, MAX_TIMER_MS));
}

const warned = new WeakSet<object>();
// Per cache object, so that every adapter over one cache in this process waits its turn.
const queuesByCache = new WeakMap<object, Map<string, Promise<unknown>>>();

/** The methods a plain cache lacks, for the error that names them. */
export function missingCacheMethods(cache: object): string[] {
  const record = cache as Record<string, unknown>;
  return ['get', 'set', 'delete'].filter((name) => typeof record[name] !== 'function');
}

/**
 * Locks on a plain cache. The expiry rides inside each value, so a cache that ignores TTLs
 * still frees a dead holder's lock. Atomic across processes only with `add`, `compareAndSet`
 * and `compareAndDelete`: acquire, extend and release are then each one atomic step on the
 * cache, and an expired lease is replaced or cleared only against the exact value read. With
 * `add` alone, acquiring is atomic, but an extend or release that straddles its own lease's
 * expiry can overwrite or delete the next owner's lease. Without `add`, it is exclusive only
 * within this process, where operations on one key of one cache run one at a time. A value
 * cachelock did not write is held by an unknown owner: never taken, overwritten or deleted,
 * except by a release as `UNKNOWN_OWNER`. Plain caches give no fence.
 */
export class PlainCacheStore implements LockStore {
  readonly kind: string;
  readonly atomic: boolean;
  readonly #cache: PlainCache;
  readonly #now: () => number;
  readonly #queues: Map<string, Promise<unknown>>;
  readonly #canAdd: boolean;
  readonly #canCompareAndSet: boolean;
  readonly #canCompareAndDelete: boolean;
  /** The ttl the cache is given for a lease of `ttlMs`. */
  readonly #cacheTtl: (ttlMs: number) => number;

  constructor(cache: PlainCache, options: PlainCacheStoreOptions = {}) {
    const missing = missingCacheMethods(cache);
    if (missing.length > 0) {
      throw new TypeError(
        `cache must have get, set and delete methods; it lacks ${missing.join(', ')}`,
      );
    }
    this.#cache = cache;
    this.#now = options.now ?? Date.now;
    this.kind = options.kind ?? 'plain';
    this.#canAdd = typeof cache.add === 'function';
    this.#canCompareAndSet = typeof cache.compareAndSet === 'function';
    this.#canCompareAndDelete = typeof cache.compareAndDelete === 'function';
    this.atomic = this.#canAdd && this.#canCompareAndSet && this.#canCompareAndDelete;
    // With `add` alone the cache's expiry is the only one that frees a key, so it is the ttl as is.
    this.#cacheTtl =
      this.#canAdd && !this.#canCompareAndSet && !this.#canCompareAndDelete
        ? (ttlMs) => ttlMs
        : paddedTtlMs;
    let queues = queuesByCache.get(cache);
    if (queues === undefined) queuesByCache.set(cache, (queues = new Map()));
    this.#queues = queues;
    if (!this.atomic) warnNonAtomic(cache);
  }

  acquire(key: string, owner: string, ttlMs: number): Promise<Acquired | null> {
    return this.#serial(key, async () => {
      const value = encode(owner, this.#now() + ttlMs);
      // The common case, a free key, in one round trip.
      if (this.#canAdd && (await this.#cache.add!(key, value, this.#cacheTtl(ttlMs)))) return {};
      for (let attempt = 0; attempt < ATTEMPTS; attempt++) {
        const found = await this.#read(key);
        if (found.kind === 'free') {
          if (!this.#canAdd) {
            await this.#cache.set(key, value, this.#cacheTtl(ttlMs));
            return {};
          }
          if (await this.#cache.add!(key, value, this.#cacheTtl(ttlMs))) return {};
          continue;
        }
        if (found.kind === 'foreign') return null;
        if (found.owner !== owner && found.expiresAt > this.#now()) return null;
        // Our own lease to refresh, or an expired one to take over: only against the value read,
        // so that two processes taking over one expired lease cannot both succeed.
        if (this.#canCompareAndSet) {
          if (await this.#cache.compareAndSet!(key, found.raw, value, this.#cacheTtl(ttlMs)))
            return {};
          continue;
        }
        if (found.owner === owner || !this.#canAdd) {
          await this.#cache.set(key, value, this.#cacheTtl(ttlMs));
          return {};
        }
        if (this.#canCompareAndDelete) {
          await this.#cache.compareAndDelete!(key, found.raw);
          continue;
        }
        // With `add` alone an expired lease cannot be cleared safely; the cache's own TTL on it
        // frees the key (a cache that ignores TTLs needs compareAndDelete).
        return null;
      }
      return null;
    });
  }

  release(key: string, owner: string, keepMs = 0): Promise<boolean> {
    return this.#serial(key, async () => {
      for (let attempt = 0; attempt < ATTEMPTS; attempt++) {
        const found = await this.#read(key);
        if (found.kind === 'foreign') {
          if (owner !== UNKNOWN_OWNER) return false;
          if (await this.#deleteIfStill(key, found.raw)) return true;
          continue;
        }
        if (found.kind !== 'lease' || found.owner !== owner) return false;
        if (found.expiresAt <= this.#now()) {
          // Our own lease, over: nothing to release, but leave nothing behind either.
          if (this.#canCompareAndDelete) await this.#cache.compareAndDelete!(key, found.raw);
          return false;
        }
        const done =
          keepMs > 0
            ? await this.#setIfStill(key, found.raw, encode(owner, this.#now() + keepMs), keepMs)
            : await this.#deleteIfStill(key, found.raw);
        if (done) return true;
      }
      return false;
    });
  }

  extend(key: string, owner: string, ttlMs: number): Promise<boolean> {
    return this.#serial(key, async () => {
      for (let attempt = 0; attempt < ATTEMPTS; attempt++) {
        const found = await this.#read(key);
        if (found.kind !== 'lease' || found.owner !== owner) return false;
        if (found.expiresAt <= this.#now()) return false;
        const value = encode(owner, this.#now() + ttlMs);
        if (await this.#setIfStill(key, found.raw, value, ttlMs)) return true;
      }
      return false;
    });
  }

  async inspect(key: string): Promise<LeaseInfo | null> {
    const found = await this.#read(key);
    if (found.kind === 'free') return null;
    // A plain cache cannot say when it drops a value it did not get from us.
    if (found.kind === 'foreign') return { owner: UNKNOWN_OWNER, ttlMs: Number.POSITIVE_INFINITY };
    const ttlMs = found.expiresAt - this.#now();
    return ttlMs > 0 ? { owner: found.owner, ttlMs } : null;
  }

  /** Replace `raw` with `value`: atomically with compareAndSet, else after the caller's read. */
  async #setIfStill(key: string, raw: unknown, value: string, ttlMs: number): Promise<boolean> {
    if (this.#canCompareAndSet) {
      return Boolean(await this.#cache.compareAndSet!(key, raw, value, this.#cacheTtl(ttlMs)));
    }
    await this.#cache.set(key, value, this.#cacheTtl(ttlMs));
    return true;
  }

  /** Delete `raw`: atomically with compareAndDelete, else after the caller's read. */
  async #deleteIfStill(key: string, raw: unknown): Promise<boolean> {
    if (this.#canCompareAndDelete) return Boolean(await this.#cache.compareAndDelete!(key, raw));
    await this.#cache.delete(key);
    return true;
  }

  async #read(key: string): Promise<Found> {
    const raw = await this.#cache.get(key);
    if (raw === undefined || raw === null) return { kind: 'free' };
    const lease = decode(raw);
    return lease === null ? { kind: 'foreign', raw } : { kind: 'lease', raw, ...lease };
  }

  // Operations on one key of one cache run one after another in this process, so that a read
  // and the write after it cannot interleave with another here.
  #serial<T>(key: string, operation: () => Promise<T>): Promise<T> {
    const queues = this.#queues;
    const previous = queues.get(key) ?? Promise.resolve();
    const next = previous.then(operation, operation);
    const tail = next.catch(() => undefined);
    queues.set(key, tail);
    void tail.then(() => {
      if (queues.get(key) === tail) queues.delete(key);
    });
    return next;
  }
}

function encode(owner: string, expiresAt: number): string {
  return JSON.stringify({ owner, expiresAt });
}

/** The lease in a stored value, or null when cachelock did not write it. */
function decode(raw: unknown): { owner: string; expiresAt: number } | null {
  let value: unknown = raw;
  if (typeof raw === 'string') {
    try {
      value = JSON.parse(raw);
    } catch {
      return null;
    }
  }
  const lease = value as { owner?: unknown; expiresAt?: unknown } | null;
  if (typeof lease !== 'object' || lease === null) return null;
  const { owner, expiresAt } = lease;
  if (typeof owner !== 'string' || owner === UNKNOWN_OWNER) return null;
  if (typeof expiresAt !== 'number' || !Number.isFinite(expiresAt)) return null;
  return { owner, expiresAt };
}

/** Say once per cache what it lacks and what that costs. */
function warnNonAtomic(cache: PlainCache): void {
  if (warned.has(cache)) return;
  warned.add(cache);
  const record = cache as unknown as Record<string, unknown>;
  const missing = ATOMIC_METHODS.filter((name) => typeof record[name] !== 'function');
  const consequence =
    typeof cache.add === 'function'
      ? 'acquiring is atomic, but an extend or release that straddles its own lease’s expiry can overwrite or delete the next holder’s lease'
      : 'its locks are exclusive only within this process';
  process.emitWarning(`cachelock: this cache has no ${missing.join(', ')}, so ${consequence}`, {
    code: 'CACHELOCK_NON_ATOMIC',
    detail:
      'Give the cache atomic add(key, value, ttlMs), compareAndSet(key, expected, value, ttlMs) and compareAndDelete(key, expected), or use a cachelock store for a shared server (redis, postgres, memcached, sqlite).',
  });
}

/** Wrap a plain cache (see `PlainCacheStore`). */
export function plainCacheStore(
  cache: PlainCache,
  options?: PlainCacheStoreOptions,
): PlainCacheStore {
  return new PlainCacheStore(cache, options);
}
