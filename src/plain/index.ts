import type { Acquired, LeaseInfo, LockStore } from '../store.js';

/**
 * Any cache with `get`, `set` and `delete` (python-cachelock's custom cache), and optionally
 * `add` (set-if-absent). Values may be returned synchronously or as promises.
 */
export interface PlainCache {
  get(key: string): unknown;
  set(key: string, value: string, ttlMs: number): unknown;
  delete(key: string): unknown;
  add?(key: string, value: string, ttlMs: number): unknown;
}

export interface PlainCacheStoreOptions {
  /** The clock that judges the expiry kept inside each value. Default `Date.now`. */
  now?: () => number;
  /** What `kind` reports, for adapters built on this one (`'keyv'`, ...). Default `'plain'`. */
  kind?: string;
}

interface Stored {
  owner: string;
  expiresAt: number;
}

const warned = new WeakSet<object>();

/** The methods a plain cache lacks, for the error that names them. */
export function missingCacheMethods(cache: object): string[] {
  const record = cache as Record<string, unknown>;
  return ['get', 'set', 'delete'].filter((name) => typeof record[name] !== 'function');
}

/**
 * Locks on a plain cache. The expiry rides inside each value, so a cache that ignores TTLs
 * still frees a dead holder's lock. Operations on one key are serialised within the process,
 * which makes the adapter correct within one process whatever the cache; across processes it
 * is atomic only as far as the cache's `add` is (see `atomic`). Plain caches give no fence.
 */
export class PlainCacheStore implements LockStore {
  readonly kind: string;
  readonly atomic: boolean;
  readonly #cache: PlainCache;
  readonly #now: () => number;
  readonly #queues = new Map<string, Promise<unknown>>();

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
    this.atomic = typeof cache.add === 'function';
    if (!this.atomic && !warned.has(cache)) {
      warned.add(cache);
      process.emitWarning(
        'cachelock: this cache has no add (set-if-absent), so its locks are exclusive only within this process',
        {
          code: 'CACHELOCK_NON_ATOMIC',
          detail:
            'Give the cache an atomic add(key, value, ttlMs), or use a cachelock store for a shared server (redis, postgres, memcached, sqlite).',
        },
      );
    }
  }

  acquire(key: string, owner: string, ttlMs: number): Promise<Acquired | null> {
    return this.#serial(key, async () => {
      const value = JSON.stringify({ owner, expiresAt: this.#now() + ttlMs } satisfies Stored);
      const current = await this.#read(key);
      if (current !== null) {
        if (current.owner !== owner) return null;
        await this.#cache.set(key, value, ttlMs);
        return {};
      }
      if (this.atomic) {
        if (await this.#cache.add!(key, value, ttlMs)) return {};
        // `add` refused: a value is there that `get` did not see as live; if it has expired by
        // the time in it (a cache that ignores TTLs), clear it and try once more.
        const raw = await this.#cache.get(key);
        if (raw !== undefined && raw !== null && this.#parse(raw) === null) {
          await this.#cache.delete(key);
          return (await this.#cache.add!(key, value, ttlMs)) ? {} : null;
        }
        return null;
      }
      await this.#cache.set(key, value, ttlMs);
      return {};
    });
  }

  release(key: string, owner: string, keepMs = 0): Promise<boolean> {
    return this.#serial(key, async () => {
      const current = await this.#read(key);
      if (current === null || current.owner !== owner) return false;
      const now = this.#now();
      if (keepMs > 0) {
        const expiresAt = now + keepMs;
        await this.#cache.set(key, JSON.stringify({ owner, expiresAt }), keepMs);
      } else {
        await this.#cache.delete(key);
      }
      return true;
    });
  }

  extend(key: string, owner: string, ttlMs: number): Promise<boolean> {
    return this.#serial(key, async () => {
      const current = await this.#read(key);
      if (current === null || current.owner !== owner) return false;
      const value = JSON.stringify({ owner, expiresAt: this.#now() + ttlMs } satisfies Stored);
      await this.#cache.set(key, value, ttlMs);
      return true;
    });
  }

  async inspect(key: string): Promise<LeaseInfo | null> {
    const current = await this.#read(key);
    if (current === null) return null;
    return { owner: current.owner, ttlMs: current.expiresAt - this.#now() };
  }

  async #read(key: string): Promise<Stored | null> {
    const raw = await this.#cache.get(key);
    if (raw === undefined || raw === null) return null;
    return this.#parse(raw);
  }

  /** The live lease in a stored value, or null when it has expired or is not ours. */
  #parse(raw: unknown): Stored | null {
    let value: unknown = raw;
    if (typeof raw === 'string') {
      try {
        value = JSON.parse(raw);
      } catch {
        return null;
      }
    }
    const stored = value as Partial<Stored> | null;
    if (typeof stored?.owner !== 'string' || typeof stored.expiresAt !== 'number') return null;
    return stored.expiresAt > this.#now() ? (stored as Stored) : null;
  }

  // Operations on one key run one after another, so that read-then-write cannot interleave
  // within this process.
  #serial<T>(key: string, operation: () => Promise<T>): Promise<T> {
    const previous = this.#queues.get(key) ?? Promise.resolve();
    const next = previous.then(operation, operation);
    const tail = next.catch(() => undefined);
    this.#queues.set(key, tail);
    void tail.then(() => {
      if (this.#queues.get(key) === tail) this.#queues.delete(key);
    });
    return next;
  }
}

/** Wrap a plain cache (see `PlainCacheStore`). */
export function plainCacheStore(
  cache: PlainCache,
  options?: PlainCacheStoreOptions,
): PlainCacheStore {
  return new PlainCacheStore(cache, options);
}
