import { type Duration, showValue } from './duration.js';
import { type Holder, Lease, type LeaseBinding, openStore, storeError, toHolder } from './lease.js';
import { type LockOptions, type Settings, settle, validateOptions } from './options.js';
import { locationOf } from './resolve.js';
import {
  isLockStore,
  type LockStore,
  RW_LIMIT,
  type SharedLeases,
  type SharedRequest,
} from './store.js';

/**
 * One acquisition of a `Semaphore` or of a `ReadWriteLock`'s read or write side, held until
 * released or lost. It has the members of an acquired `Lock`.
 */
export class Permit implements AsyncDisposable {
  /** The semaphore's or read/write lock's key, without prefix. */
  readonly key: string;
  readonly #lease: Lease;

  /** Permits come from `Semaphore` and `ReadWriteLock`; this is not for users to call. */
  constructor(lease: Lease) {
    this.#lease = lease;
    this.key = lease.key;
  }

  /** Whether this permit is held now, as far as this process knows. */
  get held(): boolean {
    return this.#lease.held;
  }

  /**
   * This permit's fencing token, where the store gives one: its own for a semaphore's permit
   * and a write, the last write's for a read.
   */
  get fence(): bigint | undefined {
    return this.#lease.granted?.fence;
  }

  /** Aborts, with the `LockLostError` as reason, when the lease is lost. */
  get signal(): AbortSignal {
    return this.#lease.signal;
  }

  /** Give the permit up; `true` if it was held until now. Idempotent. */
  release(): Promise<boolean> {
    return this.#lease.release();
  }

  /** Renew the lease now, to `ttl` if given; rejects with `LockLostError` once it is gone. */
  extend(ttl?: Duration): Promise<void> {
    return this.#lease.extend(ttl);
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.#lease.release();
  }
}

export interface SemaphoreOptions extends LockOptions {
  /** How many permits may be held at once, across every process: an integer >= 1. */
  permits: number;
}

type Capability = 'permits' | 'readersWriters';

/** How a semaphore's permits or a read/write lock's sides talk to the store. */
class Shared {
  readonly #settings: Settings;
  readonly #key: string;
  readonly #storeKey: string;
  readonly #capability: Capability;
  readonly #primitive: string;

  constructor(primitive: string, capability: Capability, key: string, settings: Settings) {
    if (typeof key !== 'string' || key.length === 0) {
      throw new TypeError(`key must be a non-empty string, got ${showValue(key)}`);
    }
    this.#primitive = primitive;
    this.#capability = capability;
    this.#key = key;
    this.#settings = settings;
    this.#storeKey = settings.prefix + key;
    // A store given as such is known now: what it lacks is an error where the lock is made.
    if (isLockStore(settings.cache)) this.leases(settings.cache);
  }

  /** The store's leases for this primitive, or the `TypeError` that names what it lacks. */
  leases(store: LockStore): SharedLeases {
    const leases = store.capabilities?.[this.#capability];
    if (leases === undefined) {
      const where = locationOf(store);
      throw new TypeError(
        `${this.#primitive} needs a store with the "${this.#capability}" capability; the ${store.kind} store${where ? ` at ${where}` : ''} has no capabilities.${this.#capability}`,
      );
    }
    return leases;
  }

  binding(request: SharedRequest): LeaseBinding {
    const storeKey = this.#storeKey;
    const leases = (store: LockStore) => this.leases(store);
    return {
      key: this.#key,
      line: `\0${this.#capability}\0${storeKey}`,
      // First come, first served across processes needs every waiter in the store's line.
      alwaysInLine: true,
      check: (store) => void this.leases(store),
      acquire: (store, owner, ttlMs, options) =>
        leases(store).acquire(
          storeKey,
          owner,
          ttlMs,
          options === undefined ? request : { ...request, ...options },
        ),
      release: (store, owner, keepMs) =>
        keepMs === undefined
          ? leases(store).release(storeKey, owner)
          : leases(store).release(storeKey, owner, keepMs),
      extend: (store, owner, ttlMs) => leases(store).extend(storeKey, owner, ttlMs),
      async holder(store) {
        const [first] = await leases(store).inspect(storeKey);
        return first === undefined ? null : { holder: first };
      },
      subscribe: (store, listener) => leases(store).onRelease?.(storeKey, listener),
      // A permit handed over in a release: the grant itself where the store says so.
      handedOff:
        this.#capability === 'permits'
          ? (handoff) => (handoff.fence === undefined ? {} : { fence: handoff.fence })
          : undefined,
    };
  }

  async acquire(binding: LeaseBinding): Promise<Permit> {
    const lease = new Lease(binding, this.#settings);
    return lease.acquire(new Permit(lease));
  }

  async tryAcquire(binding: LeaseBinding): Promise<Permit | null> {
    const lease = new Lease(binding, this.#settings);
    return (await lease.tryAcquire()) ? new Permit(lease) : null;
  }

  async run<T>(binding: LeaseBinding, fn: (signal: AbortSignal) => T | Promise<T>): Promise<T> {
    if (typeof fn !== 'function')
      throw new TypeError(`run: fn must be a function, got ${showValue(fn)}`);
    const lease = new Lease(binding, this.#settings);
    return lease.run(new Permit(lease), fn);
  }

  async inspect(): Promise<{ holders: Holder[] }> {
    const store = await openStore(this.#key, this.#settings.cache);
    const leases = this.leases(store);
    try {
      const live = await leases.inspect(this.#storeKey);
      return { holders: live.map(toHolder) };
    } catch (error) {
      throw storeError(this.#key, 'inspect', error, store);
    }
  }
}

const PERMITS_OPTION = new Set(['permits']);

/**
 * At most `permits` holders of a key at once, across every process sharing the store. Each
 * acquisition is a `Permit` with its own lease and fence; waiters are served first come, first
 * served. Its keys are a namespace of their own: `Semaphore('a')` is not `Lock('a')`.
 */
export class Semaphore {
  /** The key as given, without prefix. */
  readonly key: string;
  readonly permits: number;
  readonly #shared: Shared;
  readonly #binding: LeaseBinding;

  constructor(key: string, options: SemaphoreOptions) {
    const checked = validateOptions(
      options,
      undefined,
      PERMITS_OPTION,
    ) as Partial<SemaphoreOptions>;
    const permits = checked.permits;
    if (typeof permits !== 'number' || !Number.isInteger(permits) || permits < 1) {
      throw new RangeError(`permits must be an integer >= 1, got ${showValue(permits)}`);
    }
    this.#shared = new Shared('Semaphore', 'permits', key, settle(withoutPermits(checked)));
    this.key = key;
    this.permits = permits;
    this.#binding = this.#shared.binding({ limit: permits, weight: 1 });
  }

  /** Who holds permits of `key` now, oldest first; empty when none. */
  static inspect(key: string, options?: LockOptions): Promise<{ holders: Holder[] }> {
    return new Shared('Semaphore', 'permits', key, settle(validateOptions(options))).inspect();
  }

  /**
   * Take a permit, waiting up to `wait`. Rejects with `LockedError` (wait 0),
   * `LockTimeoutError` (waited), the signal's reason (aborted), or `StoreError`.
   */
  acquire(): Promise<Permit> {
    return this.#shared.acquire(this.#binding);
  }

  /** Like `acquire()`, but resolves `null` where it would reject with `LockedError` or `LockTimeoutError`. */
  tryAcquire(): Promise<Permit | null> {
    return this.#shared.tryAcquire(this.#binding);
  }

  /** Take a permit, call `fn(signal)`, release it; as `Lock.run`. */
  run<T>(fn: (signal: AbortSignal) => T | Promise<T>): Promise<T> {
    return this.#shared.run(this.#binding, fn);
  }
}

/**
 * Any number of readers or one writer on a key, across every process sharing the store. Once a
 * writer waits, new readers wait behind it. Not re-entrant, and a reader cannot upgrade: a read
 * holder that asks to write waits like anyone else. Its keys are a namespace of their own.
 */
export class ReadWriteLock {
  /** The key as given, without prefix. */
  readonly key: string;
  readonly #shared: Shared;
  readonly #read: LeaseBinding;
  readonly #write: LeaseBinding;

  constructor(key: string, options?: LockOptions) {
    this.#shared = new Shared(
      'ReadWriteLock',
      'readersWriters',
      key,
      settle(validateOptions(options)),
    );
    this.key = key;
    this.#read = this.#shared.binding({ limit: RW_LIMIT, weight: 1, shareFence: true });
    this.#write = this.#shared.binding({ limit: RW_LIMIT, weight: RW_LIMIT });
  }

  /** Take a read lease, waiting up to `wait`; rejects as `Lock.acquire()` does. */
  read(): Promise<Permit> {
    return this.#shared.acquire(this.#read);
  }

  /** Take the write lease, waiting up to `wait`; rejects as `Lock.acquire()` does. */
  write(): Promise<Permit> {
    return this.#shared.acquire(this.#write);
  }

  /** Like `read()`, but resolves `null` where it would reject with `LockedError` or `LockTimeoutError`. */
  tryRead(): Promise<Permit | null> {
    return this.#shared.tryAcquire(this.#read);
  }

  /** Like `write()`, but resolves `null` where it would reject with `LockedError` or `LockTimeoutError`. */
  tryWrite(): Promise<Permit | null> {
    return this.#shared.tryAcquire(this.#write);
  }

  /** Read, call `fn(signal)`, release; as `Lock.run`. */
  runRead<T>(fn: (signal: AbortSignal) => T | Promise<T>): Promise<T> {
    return this.#shared.run(this.#read, fn);
  }

  /** Write, call `fn(signal)`, release; as `Lock.run`. */
  runWrite<T>(fn: (signal: AbortSignal) => T | Promise<T>): Promise<T> {
    return this.#shared.run(this.#write, fn);
  }
}

function withoutPermits(options: Partial<SemaphoreOptions>): LockOptions {
  const { permits: _permits, ...rest } = options;
  return rest;
}
