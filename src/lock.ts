import { type Duration, showValue } from './duration.js';
import {
  type Holder,
  Lease,
  type LeaseBinding,
  openStore,
  type Refusal,
  storeError,
  toHolder,
} from './lease.js';
import { type LockOptions, lockSettings, settle, validateOptions } from './options.js';
import type {
  Acquired,
  AcquiredKeys,
  AcquireOptions,
  Handoff,
  Immediate,
  LeaseInfo,
  LockStore,
  ManyKeys,
} from './store.js';

export type { Holder } from './lease.js';

/** What several keys taken together were granted: a fence per key, in the keys' order. */
interface KeysGranted extends Acquired, AcquiredKeys {}

/**
 * A lock on one key, or on several keys taken all or none, of a shared cache. One instance
 * holds at most one acquisition at a time; locks are not reentrant. See the README for the
 * guarantees a lease gives and the ones it cannot.
 */
export class Lock implements AsyncDisposable {
  /** The key as given, without prefix; several keys joined by `', '`. */
  readonly key: string;
  /** Several keys; one key's list is made when first asked for (most locks have one). */
  #keys: readonly string[] | undefined;
  readonly #lease: Lease<KeysGranted> | Lease;
  /** `fences` as last made, and the grant it was made from. */
  #fences: ReadonlyMap<string, bigint | undefined> | undefined;
  #fencesOf: Acquired | undefined;

  constructor(keys: string | readonly string[], options?: LockOptions) {
    const given = typeof keys === 'string' && keys.length > 0 ? keys : checkKeys(keys);
    const settings = lockSettings(options);
    const prefix = settings.prefix;
    if (typeof given === 'string') {
      this.key = given;
      this.#lease = new Lease(new OneKey(given, storeKeyOf(prefix, given)), settings);
    } else {
      this.key = given.join(', ');
      this.#keys = given;
      const storeKeys = new Array<string>(given.length);
      for (let i = 0; i < given.length; i++) storeKeys[i] = prefix + given[i]!;
      this.#lease = new Lease(new SeveralKeys(this.key, given, storeKeys), settings);
    }
  }

  /** The keys as given (duplicates dropped), without prefix. */
  get keys(): readonly string[] {
    this.#keys ??= Object.freeze([this.key]);
    return this.#keys;
  }

  /** Make a lock and acquire it; rejects as `acquire()` does. */
  static acquire(keys: string | readonly string[], options?: LockOptions): Promise<Lock> {
    return new Lock(keys, options).acquire();
  }

  /** Who holds `key` now and for how much longer, or `null` when it is free. */
  static async inspect(key: string, options?: LockOptions): Promise<Holder | null> {
    if (typeof key !== 'string' || key.length === 0) {
      throw new TypeError(`key must be a non-empty string, got ${showValue(key)}`);
    }
    const lease = new Lock(key, options).#lease;
    const store = await lease.open();
    let info: LeaseInfo | null;
    try {
      info = await store.inspect(lease.settings.prefix + key);
    } catch (error) {
      throw storeError(key, 'inspect', error, store);
    }
    return info === null ? null : toHolder(info);
  }

  /** Whether this instance holds the lease now, as far as it knows. */
  get held(): boolean {
    return this.#lease.held;
  }

  /**
   * The fencing token of the current (or last) acquisition, where the store gives one;
   * `undefined` for several keys (see `fences`).
   */
  get fence(): bigint | undefined {
    return this.#keys === undefined || this.#keys.length === 1
      ? this.#lease.granted?.fence
      : undefined;
  }

  /** Each key's fence of the current (or last) acquisition; empty before the first. */
  get fences(): ReadonlyMap<string, bigint | undefined> {
    const granted = this.#lease.granted;
    if (granted === undefined) return new Map();
    if (this.#fencesOf !== granted || this.#fences === undefined) {
      // Made when asked for: most callers never read it.
      const keys = this.keys;
      const fences = (granted as Partial<KeysGranted>).fences;
      this.#fences = new Map(
        keys.map((key, index) => [key, fences === undefined ? granted.fence : fences[index]]),
      );
      this.#fencesOf = granted;
    }
    return this.#fences;
  }

  /**
   * Aborts, with the `LockLostError` as reason, when the lease is lost. It belongs to the
   * current acquisition, or, read while not held, to the next one; read after a loss and before
   * the next `acquire()`, it is the lost acquisition's (aborted). Never replaced under a reader.
   */
  get signal(): AbortSignal {
    return this.#lease.signal;
  }

  /**
   * Take the lock (every key, or none), waiting up to `wait`. Rejects with `LockedError`
   * (wait 0), `LockTimeoutError` (waited), the signal's reason (aborted), or `StoreError`.
   */
  acquire(): Promise<this> {
    return this.#lease.acquire(this);
  }

  /** Like `acquire()`, but resolves `false` where it would reject with `LockedError` or `LockTimeoutError`. */
  tryAcquire(): Promise<boolean> {
    return this.#lease.tryAcquire();
  }

  /**
   * Give the lock up. Resolves `true` if this instance held the lease (every key of it) until
   * now, `false` if it had been lost or was never held. Idempotent; never deletes another
   * owner's lock.
   */
  release(): Promise<boolean> {
    return this.#lease.release();
  }

  /**
   * Renew the lease now, to `ttl` if given (later automatic extensions then use it too).
   * Rejects with `LockLostError` if the lock is no longer held.
   */
  extend(ttl?: Duration): Promise<void> {
    return this.#lease.extend(ttl);
  }

  /**
   * Acquire, call `fn(signal)`, release. If the lease was lost while `fn` ran, rejects with
   * `LockLostError` once `fn` settles; an error thrown by `fn` wins.
   */
  run<T>(fn: (signal: AbortSignal) => T | Promise<T>): Promise<T> {
    if (typeof fn !== 'function') {
      return Promise.reject(new TypeError(`run: fn must be a function, got ${showValue(fn)}`));
    }
    // Not an async function: it would wrap the lease's promise in one more.
    return this.#lease.run(this, fn);
  }

  /** `release()`, so that `await using lock = await Lock.acquire(...)` releases at block end. */
  async [Symbol.asyncDispose](): Promise<void> {
    await this.#lease.release();
  }
}

/**
 * The keys of a lock as given, duplicates dropped (one key alone as a string); a `TypeError`
 * naming what is wrong.
 */
function checkKeys(keys: unknown): string | readonly string[] {
  if (typeof keys === 'string') {
    if (keys.length === 0)
      throw new TypeError(`key must be a non-empty string, got ${showValue(keys)}`);
    return keys;
  }
  if (!Array.isArray(keys)) {
    throw new TypeError(
      `key must be a non-empty string, got ${showValue(keys)} (several keys go in an array)`,
    );
  }
  if (keys.length === 0) throw new TypeError('keys must name at least one key, got []');
  for (let index = 0; index < keys.length; index++) {
    const key: unknown = keys[index];
    if (typeof key !== 'string' || key.length === 0) {
      throw new TypeError(`keys[${index}] must be a non-empty string, got ${showValue(key)}`);
    }
  }
  // A lock has a few keys: scanning them costs less than a Set.
  const unique: string[] =
    keys.length > 16 ? [...new Set(keys as string[])] : (keys as string[]).filter(firstOf);
  return unique.length === 1 ? unique[0]! : Object.freeze(unique);
}

function firstOf(key: string, index: number, keys: readonly string[]): boolean {
  return keys.indexOf(key) === index;
}

// The last key's name in the store. A lock made again and again on one key (in a loop, by
// `once`) reuses it, a string the store's map has hashed already, rather than joining and
// hashing a new one each time.
let lastKey = '';
let lastPrefix = '';
let lastStoreKey = '';

function storeKeyOf(prefix: string, key: string): string {
  if (key !== lastKey || prefix !== lastPrefix) {
    lastKey = key;
    lastPrefix = prefix;
    lastStoreKey = prefix + key;
  }
  return lastStoreKey;
}

/** One exclusive key: the store's required members. A class, so that a lock costs no closures. */
class OneKey implements LeaseBinding {
  readonly key: string;
  readonly line: string;
  readonly #storeKey: string;

  constructor(key: string, storeKey: string) {
    this.key = key;
    this.line = storeKey;
    this.#storeKey = storeKey;
  }

  acquire(store: LockStore, owner: string, ttlMs: number, options?: AcquireOptions) {
    return options === undefined
      ? store.acquire(this.#storeKey, owner, ttlMs)
      : store.acquire(this.#storeKey, owner, ttlMs, options);
  }

  release(store: LockStore, owner: string, keepMs?: number) {
    return keepMs === undefined
      ? store.release(this.#storeKey, owner)
      : store.release(this.#storeKey, owner, keepMs);
  }

  acquireNow(immediate: Immediate, owner: string, ttlMs: number, now: number) {
    return immediate.acquire(this.#storeKey, owner, ttlMs, now);
  }

  releaseNow(immediate: Immediate, owner: string, keepMs?: number) {
    return keepMs === undefined
      ? immediate.release(this.#storeKey, owner)
      : immediate.release(this.#storeKey, owner, keepMs);
  }

  extend(store: LockStore, owner: string, ttlMs: number) {
    return store.extend(this.#storeKey, owner, ttlMs);
  }

  async holder(store: LockStore): Promise<Refusal | null> {
    const info = await store.inspect(this.#storeKey);
    return info === null ? null : { holder: info };
  }

  subscribe(store: LockStore, listener: (handoff?: Handoff) => void) {
    return store.onRelease?.(this.#storeKey, listener);
  }

  handedOff(handoff: Handoff) {
    return handoff.fence === undefined ? {} : { fence: handoff.fence };
  }
}

/**
 * Several exclusive keys, all or none: in one step through the store's `keys` capability, else
 * one at a time in a fixed (sorted) order, giving back what was taken when one is refused, so
 * that no partial set is ever granted and two locks over the same keys never deadlock. A class
 * whose one-at-a-time order and line are made when first needed, so that a lock on a store
 * with the capability costs no more to make than the arrays it is given.
 */
class SeveralKeys implements LeaseBinding<KeysGranted> {
  readonly key: string;
  readonly #keys: readonly string[];
  readonly alsoFrees: readonly string[];
  #order: number[] | undefined;
  #line: string | undefined;
  /**
   * The key the last attempt one at a time was refused: only its release is worth a wake-up
   * (the attempt's own give-backs of the others would wake it for nothing).
   */
  #refused: string | undefined;
  /**
   * The keys this lock is giving back while it does: their releases would wake it for nothing,
   * and on a store that tells every release at once (memory) in a loop of promises that never
   * lets the event loop run.
   */
  #givingBack: readonly string[] | undefined;

  constructor(key: string, keys: readonly string[], storeKeys: readonly string[]) {
    this.key = key;
    this.#keys = keys;
    this.alsoFrees = storeKeys;
  }

  /** The store keys' indexes in code-unit order, the same in every process. */
  get #sorted(): number[] {
    const storeKeys = this.alsoFrees;
    this.#order ??= storeKeys
      .map((_, index) => index)
      .sort((a, b) => compare(storeKeys[a]!, storeKeys[b]!));
    return this.#order;
  }

  get line(): string {
    this.#line ??= `\0keys\0${this.#sorted.map((index) => this.alsoFrees[index]).join('\0')}`;
    return this.#line;
  }

  /** A set the store can never take together is bad input, refused before any attempt. */
  check(store: LockStore): void {
    this.#many(store)?.check?.(this.alsoFrees, this.#keys);
  }

  /** The store's `keys` capability, when it takes this many keys in one call. */
  #many(store: LockStore): ManyKeys | undefined {
    const many = store.capabilities?.keys;
    return many !== undefined && (many.most === undefined || this.alsoFrees.length <= many.most)
      ? many
      : undefined;
  }

  acquire(
    store: LockStore,
    owner: string,
    ttlMs: number,
    options?: AcquireOptions,
  ): Promise<KeysGranted | null> {
    const many = this.#many(store);
    if (many === undefined) return this.#acquireEach(store, owner, ttlMs, options);
    if (options?.lineMs === undefined) return many.acquire(this.alsoFrees, owner, ttlMs);
    return this.#acquireInLine(store, many, owner, ttlMs, options.lineMs);
  }

  /**
   * A waiter's try on a store that takes the set in one step. Refused, it would only ever get
   * the set at a moment when every key happens to be free, and a key with a line of its own
   * never is: each release hands it to the next in that line. So it then goes through the keys
   * one at a time, as a store without the step does: it joins the line of the first key held by
   * another, holding none of the others meanwhile (a waiter that held part of a set could wait
   * on a holder that waits for that part). When that key comes its way, the set is tried whole
   * again; a set is only ever granted whole, by the one step, with the lock's ttl.
   */
  async #acquireInLine(
    store: LockStore,
    many: ManyKeys,
    owner: string,
    ttlMs: number,
    lineMs: number,
  ): Promise<KeysGranted | null> {
    const storeKeys = this.alsoFrees;
    const whole = await many.acquire(storeKeys, owner, ttlMs);
    if (whole !== null) return whole;
    // Taken one at a time for no longer than a place in line, since the step then takes them.
    if ((await this.#acquireEach(store, owner, Math.min(ttlMs, lineMs), { lineMs })) === null)
      return null;
    const got = await many.acquire(storeKeys, owner, ttlMs);
    if (got === null) await this.#giveBack(store, storeKeys, owner);
    return got;
  }

  /**
   * Give back keys this attempt took, in one call where the store takes sets: a release per key
   * at once would take a pooled connection each (MySQL), as many as the set has keys, in every
   * waiting process. The releases' own wake-ups are not for this lock.
   */
  async #giveBack(store: LockStore, keys: readonly string[], owner: string): Promise<void> {
    if (keys.length === 0) return;
    const many = this.#many(store);
    this.#givingBack = keys;
    try {
      if (many !== undefined) await many.release(keys, owner);
      else await Promise.all(keys.map((one) => store.release(one, owner)));
    } finally {
      this.#givingBack = undefined;
    }
  }

  async #acquireEach(
    store: LockStore,
    owner: string,
    ttlMs: number,
    options?: AcquireOptions,
  ): Promise<KeysGranted | null> {
    const storeKeys = this.alsoFrees;
    const order = this.#sorted;
    const fences: (bigint | undefined)[] = [];
    const taken: string[] = [];
    try {
      for (const index of order) {
        const one = storeKeys[index]!;
        const got =
          options === undefined
            ? await store.acquire(one, owner, ttlMs)
            : await store.acquire(one, owner, ttlMs, options);
        if (got === null) {
          this.#refused = one;
          // Never hold part of the set while waiting for the rest: that is how deadlocks start.
          // A waiter may also have been handed a later key from that key's line meanwhile.
          const later = options === undefined ? [] : order.slice(order.indexOf(index) + 1);
          const give = [...taken, ...later.map((i) => storeKeys[i]!)];
          await this.#giveBack(store, give, owner);
          return null;
        }
        taken.push(one);
        fences[index] = got.fence;
      }
    } catch (error) {
      // Owner-checked, so this frees only what this attempt may have taken.
      for (const one of storeKeys) store.release(one, owner).catch(() => {});
      throw error;
    }
    return { fences };
  }

  release(store: LockStore, owner: string, keepMs?: number): Promise<boolean> {
    const many = this.#many(store);
    if (many !== undefined) {
      return keepMs === undefined
        ? many.release(this.alsoFrees, owner)
        : many.release(this.alsoFrees, owner, keepMs);
    }
    return releaseEach(store, this.alsoFrees, owner, keepMs);
  }

  async extend(store: LockStore, owner: string, ttlMs: number): Promise<boolean> {
    const storeKeys = this.alsoFrees;
    const many = this.#many(store);
    if (many !== undefined) return many.extend(storeKeys, owner, ttlMs);
    const results = await Promise.all(storeKeys.map((one) => store.extend(one, owner, ttlMs)));
    if (results.every(Boolean)) return true;
    // The lock is lost as a whole: free its other keys now rather than at their lease's end.
    releaseEach(store, storeKeys, owner).catch(() => {});
    return false;
  }

  async holder(store: LockStore): Promise<Refusal | null> {
    for (const [index, one] of this.alsoFrees.entries()) {
      const info = await store.inspect(one);
      if (info !== null) return { holder: info, key: this.#keys[index]! };
    }
    return null;
  }

  subscribe(store: LockStore, listener: (handoff?: Handoff) => void) {
    if (store.onRelease === undefined) return undefined;
    const atomic = this.#many(store) !== undefined;
    const stops = this.alsoFrees.map((one) =>
      store.onRelease!(one, (handoff) => {
        if (this.#givingBack?.includes(one)) return;
        const refused = this.#refused;
        if (atomic || refused === undefined || refused === one) listener(handoff);
      }),
    );
    return () => {
      for (const stop of stops) stop();
    };
  }
}

async function releaseEach(
  store: LockStore,
  storeKeys: readonly string[],
  owner: string,
  keepMs?: number,
): Promise<boolean> {
  const results = await Promise.all(
    storeKeys.map((one) =>
      keepMs === undefined ? store.release(one, owner) : store.release(one, owner, keepMs),
    ),
  );
  return results.every(Boolean);
}

/** Code-unit order, the same in every process whatever its locale. */
function compare(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

/**
 * The store a lock with these options would use (the `cache` option, then `configure()`, then
 * `CACHELOCK_URL`, then memory), for tools that talk to a store directly.
 */
export async function resolveStore(options?: LockOptions): Promise<LockStore> {
  return openStore('', settle(validateOptions(options)).cache);
}
