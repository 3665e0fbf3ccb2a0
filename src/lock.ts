import { lockContext } from './context.js';
import { channels, debug, type LockEvent } from './diagnostics.js';
import { type Duration, showValue, toLeaseMs } from './duration.js';
import { LockError, LockedError, LockLostError, LockTimeoutError, StoreError } from './errors.js';
import { type LockOptions, type Settings, settle, validateOptions } from './options.js';
import { newOwner, parseOwner } from './owner.js';
import { cacheLocation, locationOf, storeFor } from './resolve.js';
import { safeError } from './secrets.js';
import { abandon, type LeaseInfo, type LockStore } from './store.js';
import { hasWaiters, released, WaitTimeout, waitFor } from './wait.js';
import { reschedule, unwatch, type Watched, watch } from './watchdog.js';

/** What `Lock.inspect` reports about the holder of a key. */
export interface Holder {
  owner: string;
  /** The holder's host and pid, when its owner string carries them (cachelock's do). */
  host: string | undefined;
  pid: number | undefined;
  ttlMs: number;
  fence: bigint | undefined;
}

enum State {
  Idle = 0,
  Acquiring = 1,
  Held = 2,
  Released = 3,
  Lost = 4,
}

/**
 * A lock on one key of a shared cache. One instance holds at most one acquisition at a time;
 * locks are not reentrant. See the README for the guarantees a lease gives and the ones it
 * cannot.
 */
export class Lock implements AsyncDisposable {
  /** The key as given, without prefix. */
  readonly key: string;
  readonly #settings: Settings;
  readonly #storeKey: string;
  #store: LockStore | undefined;
  #state = State.Idle;
  #owner = '';
  #fence: bigint | undefined;
  /** When the lock was granted, on the `performance.now()` clock. */
  #grantedAt = 0;
  /** When the lease runs out as far as this process can tell: the request that won or last
   * extended it was sent no earlier than `expiresAt - leaseMs`. */
  #expiresAt = 0;
  #leaseMs: number;
  #nextExtendAt = 0;
  #extending = false;
  #lastError: unknown;
  /** The signal's controller, made when `signal` is first read: the acquisition's under way or
   * held, else the next one's (after a loss, the lost one's until the next acquire). */
  #controller: AbortController | undefined;
  /** `#controller` belongs to an acquisition that was lost; the next acquire starts a new one. */
  #controllerLost = false;
  #lostError: LockLostError | undefined;
  #watched: Watched | undefined;
  /** Set while `tryAcquire` runs: a refusal then needs no holder for its message. */
  #quiet = false;

  constructor(key: string, options?: LockOptions) {
    if (typeof key !== 'string' || key.length === 0) {
      throw new TypeError(`key must be a non-empty string, got ${showValue(key)}`);
    }
    this.key = key;
    this.#settings = settle(validateOptions(options));
    this.#storeKey = this.#settings.prefix + key;
    this.#leaseMs = this.#settings.ttlMs;
  }

  /** Make a lock and acquire it; rejects as `acquire()` does. */
  static acquire(key: string, options?: LockOptions): Promise<Lock> {
    return new Lock(key, options).acquire();
  }

  /** Who holds `key` now and for how much longer, or `null` when it is free. */
  static async inspect(key: string, options?: LockOptions): Promise<Holder | null> {
    const lock = new Lock(key, options);
    const store = await lock.#open();
    let info: LeaseInfo | null;
    try {
      info = await store.inspect(lock.#storeKey);
    } catch (error) {
      throw storeError(key, 'inspect', error, store);
    }
    if (info === null) return null;
    const { host, pid } = parseOwner(info.owner);
    return { owner: info.owner, host, pid, ttlMs: info.ttlMs, fence: info.fence };
  }

  /** Whether this instance holds the lease now, as far as it knows. */
  get held(): boolean {
    return this.#state === State.Held && performance.now() < this.#expiresAt;
  }

  /** The fencing token of the current (or last) acquisition, where the store gives one. */
  get fence(): bigint | undefined {
    return this.#fence;
  }

  /**
   * Aborts, with the `LockLostError` as reason, when the lease is lost. It belongs to the
   * current acquisition, or, read while not held, to the next one; read after a loss and before
   * the next `acquire()`, it is the lost acquisition's (aborted). Never replaced under a reader.
   */
  get signal(): AbortSignal {
    if (this.#controller === undefined) {
      this.#controller = new AbortController();
      if (this.#state === State.Lost) {
        this.#controller.abort(this.#lostError);
        this.#controllerLost = true;
      }
    }
    return this.#controller.signal;
  }

  /**
   * Take the lock, waiting up to `wait`. Rejects with `LockedError` (wait 0),
   * `LockTimeoutError` (waited), the signal's reason (aborted), or `StoreError`.
   */
  async acquire(): Promise<this> {
    if (this.#state === State.Held || this.#state === State.Acquiring) {
      throw new LockError(
        this.key,
        `lock "${this.key}" is already held or being acquired by this instance`,
      );
    }
    const { signal, waitMs, ttlMs } = this.#settings;
    signal?.throwIfAborted();
    if (this.#controllerLost) {
      // Its readers keep the lost acquisition's aborted signal; this acquisition gets its own.
      this.#controller = undefined;
      this.#controllerLost = false;
    }
    this.#state = State.Acquiring;
    try {
      const store = this.#store ?? (await this.#open());
      const owner = newOwner();
      const key = this.#storeKey;
      const started = performance.now();
      if (waitMs === 0 || !hasWaiters(store, key)) {
        let result: Awaited<ReturnType<LockStore['acquire']>>;
        try {
          result = await store.acquire(key, owner, ttlMs);
        } catch (error) {
          abandon(store, key, owner);
          throw storeError(this.key, 'acquire', error, store);
        }
        if (result !== null) {
          this.#granted(store, owner, result.fence, started, started);
          return this;
        }
        if (waitMs === 0) throw new LockedError(this.key, await this.#holder(store));
      }
      if (channels.contended.hasSubscribers)
        channels.contended.publish({ key: this.key, owner } satisfies LockEvent);
      try {
        const granted = await waitFor({
          store,
          key,
          owner,
          ttlMs,
          deadline: started + waitMs,
          signal,
        });
        this.#granted(store, owner, granted.fence, granted.sentAt, started);
        return this;
      } catch (error) {
        if (error instanceof WaitTimeout) {
          throw new LockTimeoutError(
            this.key,
            Math.round(performance.now() - started),
            await this.#holder(store),
          );
        }
        if (signal?.aborted && error === signal.reason) throw error;
        throw storeError(this.key, 'acquire', error, store);
      }
    } catch (error) {
      this.#state = State.Idle;
      throw error instanceof LockError ||
        error instanceof TypeError ||
        (signal?.aborted && error === signal.reason)
        ? error
        : storeError(this.key, 'acquire', error, this.#store);
    }
  }

  /** Like `acquire()`, but resolves `false` where it would reject with `LockedError` or `LockTimeoutError`. */
  async tryAcquire(): Promise<boolean> {
    // Nobody reads the refusal's message here, so skip asking the store who holds the key.
    this.#quiet = true;
    try {
      await this.acquire();
      return true;
    } catch (error) {
      if (error instanceof LockedError || error instanceof LockTimeoutError) return false;
      throw error;
    } finally {
      this.#quiet = false;
    }
  }

  /**
   * Give the lock up. Resolves `true` if this instance held the lease until now, `false` if it
   * had been lost or was never held. Idempotent; never deletes another owner's lock.
   */
  async release(): Promise<boolean> {
    if (this.#state !== State.Held) return false;
    this.#state = State.Released;
    if (this.#watched !== undefined) unwatch(this.#watched);
    // The acquisition ends here: a signal read from now on belongs to the next one.
    const controller = this.#controller;
    this.#controller = undefined;
    const store = this.#store!;
    const owner = this.#owner;
    const now = performance.now();
    const keepMs = Math.ceil(this.#grantedAt + this.#settings.holdAtLeastMs - now);
    let ok: boolean;
    try {
      ok =
        keepMs > 0
          ? await store.release(this.#storeKey, owner, keepMs)
          : await store.release(this.#storeKey, owner);
    } catch (error) {
      throw storeError(this.key, 'release', error, store);
    }
    if (!ok) {
      this.#lose(
        'it had expired or been taken by the time it was released',
        undefined,
        false,
        controller,
      );
      return false;
    }
    if (keepMs <= 0) released(store, this.#storeKey);
    if (channels.release.hasSubscribers) {
      channels.release.publish({
        key: this.key,
        owner,
        fence: this.#fence,
        heldMs: now - this.#grantedAt,
      } satisfies LockEvent);
    }
    if (debug.enabled) debug('released %j', this.key);
    return true;
  }

  /**
   * Renew the lease now, to `ttl` if given (later automatic extensions then use it too).
   * Rejects with `LockLostError` if the lock is no longer held.
   */
  async extend(ttl?: Duration): Promise<void> {
    const leaseMs = ttl === undefined ? this.#leaseMs : toLeaseMs('ttl', ttl);
    if (this.#state !== State.Held) {
      throw this.#lostError ?? new LockLostError(this.key, 'it is not held by this instance');
    }
    const owner = this.#owner;
    const sentAt = performance.now();
    let ok: boolean;
    try {
      ok = await this.#store!.extend(this.#storeKey, owner, leaseMs);
    } catch (error) {
      throw storeError(this.key, 'extend', error, this.#store);
    }
    if (this.#state !== State.Held || this.#owner !== owner) {
      throw this.#lostError ?? new LockLostError(this.key, 'it was released while being extended');
    }
    if (!ok) {
      this.#lose('it had expired or been taken when it was extended');
      throw this.#lostError!;
    }
    this.#leaseMs = leaseMs;
    this.#extended(sentAt);
  }

  /**
   * Acquire, call `fn(signal)`, release. If the lease was lost while `fn` ran, rejects with
   * `LockLostError` once `fn` settles; an error thrown by `fn` wins.
   */
  async run<T>(fn: (signal: AbortSignal) => T | Promise<T>): Promise<T> {
    if (typeof fn !== 'function')
      throw new TypeError(`run: fn must be a function, got ${showValue(fn)}`);
    await this.acquire();
    let result: T;
    try {
      result = await lockContext.run(this, fn, this.signal);
    } catch (error) {
      await this.release().catch(() => undefined);
      throw error;
    }
    if (!(await this.release())) {
      throw this.#lostError ?? new LockLostError(this.key, 'it was lost while held');
    }
    return result;
  }

  /** `release()`, so that `await using lock = await Lock.acquire(...)` releases at block end. */
  async [Symbol.asyncDispose](): Promise<void> {
    await this.release();
  }

  /** The lock's store: synchronously when it is already open (the common case). */
  #open(): LockStore | Promise<LockStore> {
    const store = openStore(this.key, this.#settings.cache);
    if (store instanceof Promise) return store.then((opened) => (this.#store = opened));
    this.#store = store;
    return store;
  }

  async #holder(store: LockStore): Promise<LeaseInfo | null> {
    if (this.#quiet) return null;
    try {
      return await store.inspect(this.#storeKey);
    } catch {
      return null;
    }
  }

  #granted(
    store: LockStore,
    owner: string,
    fence: bigint | undefined,
    sentAt: number,
    started: number,
  ): void {
    this.#store = store;
    this.#owner = owner;
    this.#fence = fence;
    this.#state = State.Held;
    this.#lostError = undefined;
    this.#lastError = undefined;
    this.#extending = false;
    this.#grantedAt = performance.now();
    this.#leaseMs = this.#settings.ttlMs;
    this.#expiresAt = sentAt + this.#leaseMs;
    this.#nextExtendAt = sentAt + this.#leaseMs / 3;
    const watched = (this.#watched ??= { dueAt: 0, tick: (now) => this.#tick(now) });
    watched.dueAt = this.#dueAt();
    watch(watched);
    if (channels.acquire.hasSubscribers) {
      channels.acquire.publish({
        key: this.key,
        owner,
        fence,
        waitedMs: this.#grantedAt - started,
      } satisfies LockEvent);
    }
    if (debug.enabled) debug('acquired %j fence=%s', this.key, fence);
  }

  #extended(sentAt: number): void {
    this.#expiresAt = sentAt + this.#leaseMs;
    this.#nextExtendAt = sentAt + this.#leaseMs / 3;
    this.#lastError = undefined;
    const watched = this.#watched!;
    watched.dueAt = this.#dueAt();
    reschedule(watched);
    if (channels.extend.hasSubscribers) {
      channels.extend.publish({
        key: this.key,
        owner: this.#owner,
        fence: this.#fence,
      } satisfies LockEvent);
    }
  }

  /** When the watchdog must look at this lease next: the next extension, else its end. */
  #dueAt(): number {
    return this.#settings.autoExtend && !this.#extending
      ? Math.min(this.#nextExtendAt, this.#expiresAt)
      : this.#expiresAt;
  }

  /** The watchdog's call: extend when due, or declare the lease lost when it ran out. */
  #tick(now: number): void {
    const watched = this.#watched!;
    if (this.#state !== State.Held) {
      unwatch(watched);
      return;
    }
    if (now >= this.#expiresAt) {
      this.#lose(
        this.#lastError === undefined
          ? 'its lease ran out before it was extended'
          : 'its lease ran out while the store could not be reached to extend it',
        this.#lastError,
        true,
      );
      return;
    }
    if (!this.#settings.autoExtend || this.#extending || now < this.#nextExtendAt) {
      watched.dueAt = this.#dueAt();
      return;
    }
    this.#extending = true;
    watched.dueAt = this.#expiresAt; // while the extension is in flight
    const owner = this.#owner;
    const leaseMs = this.#leaseMs;
    this.#store!.extend(this.#storeKey, owner, leaseMs).then(
      (ok) => {
        if (this.#owner !== owner || this.#state !== State.Held) return;
        this.#extending = false;
        if (ok) this.#extended(now);
        else this.#lose('another owner took it or it expired before it could be extended');
      },
      (error) => {
        if (this.#owner !== owner || this.#state !== State.Held) return;
        this.#extending = false;
        this.#lastError = safeError(error);
        if (debug.enabled) debug('extending %j failed: %s', this.key, this.#lastError);
        // Try again soon, well before the lease runs out.
        const left = this.#expiresAt - performance.now();
        this.#nextExtendAt = performance.now() + Math.max(10, Math.min(leaseMs / 10, left / 3));
        watched.dueAt = this.#dueAt();
        reschedule(watched);
      },
    );
  }

  /**
   * The lease is gone. Callers have checked that this acquisition was held (or was being
   * released). `free`: the key may still be ours in the store (it could not be reached), so
   * try to free it for the next owner. `controller`: the signal's controller of this acquisition
   * (the current one unless a release already moved on).
   */
  #lose(reason: string, cause?: unknown, free = false, controller = this.#controller): void {
    if (this.#state === State.Lost) return;
    this.#state = State.Lost;
    if (this.#watched !== undefined) unwatch(this.#watched);
    const error = new LockLostError(this.key, reason, cause);
    this.#lostError = error;
    controller?.abort(error);
    if (controller !== undefined && controller === this.#controller) this.#controllerLost = true;
    if (free) this.#store!.release(this.#storeKey, this.#owner).catch(() => undefined);
    if (channels.lost.hasSubscribers) {
      channels.lost.publish({
        key: this.key,
        owner: this.#owner,
        fence: this.#fence,
        error,
      } satisfies LockEvent);
    }
    if (debug.enabled) debug('lost %j: %s', this.key, reason);
    const onLost = this.#settings.onLost;
    if (onLost !== undefined) {
      try {
        onLost(error);
      } catch (thrown) {
        process.emitWarning(`cachelock: onLost for "${this.key}" threw: ${String(thrown)}`, {
          code: 'CACHELOCK_ONLOST_THREW',
        });
      }
    }
  }
}

/**
 * The store for a cache option, synchronously when it is already open. A failure to open it is
 * a `StoreError` (a bad cache option stays the `TypeError` that names it).
 */
function openStore(key: string, cache: unknown): LockStore | Promise<LockStore> {
  const failed = (error: unknown): never => {
    // A backend's TypeError about its URL may quote it whole.
    if (error instanceof TypeError) throw safeError(error);
    throw new StoreError(key, 'open the store for', error, cacheLocation(cache));
  };
  try {
    const store = storeFor(cache);
    return store instanceof Promise ? store.catch(failed) : store;
  } catch (error) {
    return failed(error);
  }
}

/** The one way a store's failure becomes an error: a `StoreError` that names the store. */
function storeError(
  key: string,
  operation: string,
  error: unknown,
  store: LockStore | undefined,
): StoreError {
  return new StoreError(key, operation, error, store && locationOf(store));
}

/**
 * The store a lock with these options would use (the `cache` option, then `configure()`, then
 * `CACHELOCK_URL`, then memory), for tools that talk to a store directly.
 */
export async function resolveStore(options?: LockOptions): Promise<LockStore> {
  return openStore('', settle(validateOptions(options)).cache);
}
