import { performance } from 'node:perf_hooks';
import { type Held, lockContext } from './context.js';
import { channels, debug, debugging, type LockEvent } from './diagnostics.js';
import { type Duration, toLeaseMs } from './duration.js';
import { LockError, LockedError, LockLostError, LockTimeoutError, StoreError } from './errors.js';
import type { Settings } from './options.js';
import { newOwner, parseOwner } from './owner.js';
import { cacheLocation, locationOf, storeFor } from './resolve.js';
import { safeError } from './secrets.js';
import {
  type Acquired,
  type AcquireOptions,
  type Handoff,
  type Immediate,
  immediateOf,
  isLockStore,
  type LeaseInfo,
  type LockStore,
} from './store.js';
import {
  type Granted,
  hasLines,
  hasWaiters,
  LINE_MS,
  released,
  type WaitOutcome,
  type WaitRequest,
  WaitTimeout,
  waitFor,
} from './wait.js';
import { reschedule, unwatch, type Watched, watch } from './watchdog.js';

const JOIN: AcquireOptions = Object.freeze({ lineMs: LINE_MS });
/** The waits before a failed abandon is tried again, one after another, within LINE_MS. */
const ABANDON_RETRY_MS = [50, 200, 750, 1_500];
const SHORTEN: AcquireOptions = Object.freeze({ mayShorten: true });
const JOIN_SHORTEN: AcquireOptions = Object.freeze({ lineMs: LINE_MS, mayShorten: true });

/**
 * A try's options, with `mayShorten` where the lease extends itself (then it may start shorter
 * than the ttl where the store saves so): the usual ones are constants, made once.
 */
function tryOptions(
  options: AcquireOptions | undefined,
  mayShorten: boolean,
): AcquireOptions | undefined {
  if (!mayShorten || options?.mayShorten) return options;
  if (options === undefined) return SHORTEN;
  return options.lineMs === LINE_MS ? JOIN_SHORTEN : { ...options, mayShorten };
}

/** What `Lock.inspect` and `Semaphore.inspect` report about a holder. */
export interface Holder {
  owner: string;
  /** The holder's host and pid, when its owner string carries them (cachelock's do). */
  host: string | undefined;
  pid: number | undefined;
  ttlMs: number;
  fence: bigint | undefined;
}

export function toHolder(info: LeaseInfo): Holder {
  const { host, pid } = parseOwner(info.owner);
  return { owner: info.owner, host, pid, ttlMs: info.ttlMs, fence: info.fence };
}

/** Who holds what a lease was refused, for the refusal's message. */
export interface Refusal {
  holder: LeaseInfo;
  /** The key held, when the lease covers several. */
  key?: string;
}

/**
 * How one kind of lease talks to its store. The lifecycle (waiting, extending, losing,
 * releasing, errors, events) is the same for all; only these calls differ.
 */
export interface LeaseBinding<G extends Acquired = Acquired> {
  /** Names the lease in errors, events and logs. */
  readonly key: string;
  /** The in-process line its waiters share (distinct per namespace). */
  readonly line: string;
  /** Other in-process lines a release of this lease may let in (each key of several). */
  readonly alsoFrees?: readonly string[];
  /** Waiters keep a place in the store's line even without push wake-ups. */
  readonly alwaysInLine?: boolean;
  /** Throw a `TypeError` naming what `store` lacks for this lease. */
  check?(store: LockStore): void;
  acquire(
    store: LockStore,
    owner: string,
    ttlMs: number,
    options?: AcquireOptions,
  ): Promise<G | null>;
  /** Owner-checked; also leaves the store's line. `keepMs` only when above 0. */
  release(store: LockStore, owner: string, keepMs?: number): Promise<boolean>;
  /** `acquire` through a store's immediate answers (see `Immediate`), where this lease can. */
  acquireNow?(immediate: Immediate, owner: string, ttlMs: number, now: number): G | null;
  /** `release` through a store's immediate answers; only with `acquireNow`. */
  releaseNow?(immediate: Immediate, owner: string, keepMs?: number): boolean;
  extend(store: LockStore, owner: string, ttlMs: number): Promise<boolean>;
  /** Who holds it now, or `null`; never rejects for the caller (it is only for a message). */
  holder(store: LockStore): Promise<Refusal | null>;
  subscribe(store: LockStore, listener: (handoff?: Handoff) => void): (() => void) | undefined;
  /** The grant a hand-off of this lease's one key stands for, where it is one key. */
  handedOff?(handoff: Handoff): G;
}

/** `#acquireNow`'s answer when others in this process wait in line: join them at once. */
const BEHIND = 2;

/** One lease's wait, made once and reused: a lease waits for at most one acquisition at once. */
interface Waiting<G extends Acquired> extends WaitRequest<G>, WaitOutcome<G, unknown> {
  /** What the caller's promise resolves to. */
  value: unknown;
  quiet: boolean;
  started: number;
  /** `attemptNow` and `handedOff` where a wait can use them. */
  tryNow: (now: number) => G | null;
  handOff: ((handoff: Handoff) => G) | undefined;
}

enum State {
  Idle = 0,
  Acquiring = 1,
  Held = 2,
  Released = 3,
  Lost = 4,
}

/**
 * One lease's lifecycle: acquire (waiting through `wait.ts`), automatic extension driven by the
 * watchdog, the loss signal and `onLost`, `holdAtLeast`, release and diagnostics. `Lock`,
 * `Permit` and the read/write leases are thin layers over it that supply a `LeaseBinding`.
 * One instance holds at most one acquisition at a time.
 */
export class Lease<G extends Acquired = Acquired> {
  readonly binding: LeaseBinding<G>;
  readonly #settings: Settings;
  #store: LockStore | undefined;
  /** `#store`'s immediate answers, when it gives them and the binding can use them. */
  #immediate: Immediate | undefined;
  #state = State.Idle;
  #owner = '';
  #granted: G | undefined;
  /** When the lease was granted, on the `performance.now()` clock. */
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
  #waiting: Waiting<G> | undefined;

  constructor(binding: LeaseBinding<G>, settings: Settings) {
    this.binding = binding;
    this.#settings = settings;
    this.#leaseMs = settings.ttlMs;
    // A store given as such is known now, so what it lacks is an error where the lease is made.
    if (binding.check !== undefined && isLockStore(settings.cache)) binding.check(settings.cache);
  }

  get key(): string {
    return this.binding.key;
  }

  get settings(): Settings {
    return this.#settings;
  }

  /** Whether this instance holds the lease now, as far as it knows. */
  get held(): boolean {
    return this.#state === State.Held && performance.now() < this.#expiresAt;
  }

  /** What the store granted for the current (or last) acquisition. */
  get granted(): G | undefined {
    return this.#granted;
  }

  get lostError(): LockLostError | undefined {
    return this.#lostError;
  }

  /** See `Lock.signal`. */
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
   * Take the lease, waiting up to `wait`. Rejects with `LockedError` (wait 0),
   * `LockTimeoutError` (waited), the signal's reason (aborted), or `StoreError`. Resolves
   * `value` (the caller's own object, saving it a step). `quiet`: the refusal's message is not
   * read, so the store is not asked who holds the key.
   */
  acquire<T>(value: T, quiet = false): Promise<T> {
    const now = this.#acquireNow();
    if (now === true) return Promise.resolve(value);
    if (now === BEHIND) return this.#waitBehind(value, quiet);
    return this.#acquire(value, quiet, now === false ? undefined : now);
  }

  /**
   * The common cases, taken without an async layer: `true` when taken at once (a store with
   * immediate answers, uncontended), `BEHIND` when others in this process already wait in line
   * (then the lease joins them without trying), else `#acquire` does it all, from the store
   * being opened if it is.
   */
  #acquireNow(): boolean | typeof BEHIND | Promise<LockStore> {
    const settings = this.#settings;
    if (
      this.#state === State.Held ||
      this.#state === State.Acquiring ||
      settings.signal !== undefined
    ) {
      return false;
    }
    let store = this.#store;
    if (store === undefined) {
      let opened: LockStore | Promise<LockStore>;
      try {
        opened = this.#open();
      } catch {
        return false; // `#acquire` reports it
      }
      if (opened instanceof Promise) return opened;
      store = opened;
    }
    if (settings.waitMs !== 0 && hasWaiters(store, this.binding.line)) {
      return this.binding.check === undefined ? BEHIND : false;
    }
    const immediate = this.#immediate;
    if (immediate === undefined) return false;
    const owner = newOwner();
    const started = performance.now();
    let result: G | null;
    try {
      result = this.binding.acquireNow!(immediate, owner, settings.ttlMs, started);
    } catch {
      // Asked again the ordinary way, which reports the failure as every store's is.
      return false;
    }
    if (result === null) return false;
    if (this.#controllerLost) {
      this.#controller = undefined;
      this.#controllerLost = false;
    }
    this.#grant(immediate.of, owner, result, started, started, undefined, started);
    return true;
  }

  async #acquire<T>(value: T, quiet: boolean, opening?: Promise<LockStore>): Promise<T> {
    const binding = this.binding;
    if (this.#state === State.Held || this.#state === State.Acquiring) {
      throw new LockError(
        binding.key,
        `lock "${binding.key}" is already held or being acquired by this instance`,
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
      const store = this.#store ?? (await (opening ?? this.#open()));
      binding.check?.(store);
      const owner = newOwner();
      const started = performance.now();
      const mayShorten = this.#settings.autoExtend;
      // A try that may wait joins the store's line at once where waiters keep a place there,
      // so that a release hands the key to it and nobody passes it meanwhile.
      let joined = false;
      if (waitMs === 0 || !hasWaiters(store, binding.line)) {
        joined = waitMs > 0 && (binding.alwaysInLine === true || store.onRelease !== undefined);
        let result: G | null;
        try {
          result = await binding.acquire(
            store,
            owner,
            ttlMs,
            tryOptions(joined ? JOIN : undefined, mayShorten),
          );
        } catch (error) {
          this.#abandon(store, owner);
          throw storeError(binding.key, 'acquire', error, store);
        }
        if (result !== null) {
          this.#grant(store, owner, result, started, started, result.ttlMs);
          return value;
        }
        if (waitMs === 0)
          throw lockedError(binding.key, quiet ? null : await holder(binding, store));
      }
      // Settled by the wait itself, whose failures `#waitFailed` reports.
      return this.#wait(value, quiet, store, owner, started, joined);
    } catch (error) {
      this.#state = State.Idle;
      throw toLockError(binding.key, 'acquire', error, this.#store, signal);
    }
  }

  /** Join the waiters of this process already in line, without trying first (`BEHIND`). */
  #waitBehind<T>(value: T, quiet: boolean): Promise<T> {
    if (this.#controllerLost) {
      this.#controller = undefined;
      this.#controllerLost = false;
    }
    this.#state = State.Acquiring;
    return this.#wait(value, quiet, this.#store!, newOwner(), performance.now(), false);
  }

  /**
   * Wait for the lease (see `wait.ts`); the promise resolves `value` once granted, or rejects
   * as `acquire()` does. `joined`: the caller's own try, sent at `started`, joined the store's
   * line.
   */
  #wait<T>(
    value: T,
    quiet: boolean,
    store: LockStore,
    owner: string,
    started: number,
    joined: boolean,
  ): Promise<T> {
    if (channels.contended.hasSubscribers)
      channels.contended.publish({ key: this.binding.key, owner } satisfies LockEvent);
    const settings = this.#settings;
    const waiting = (this.#waiting ??= this.#newWaiting());
    waiting.store = store;
    waiting.owner = owner;
    waiting.deadline = started + settings.waitMs;
    waiting.signal = settings.signal;
    waiting.joined = joined;
    waiting.joinedAt = started;
    waiting.value = value;
    waiting.quiet = quiet;
    waiting.started = started;
    // A hand-off's claim lasts at most the place's lineMs: held on it, the lease is extended to
    // the ttl as usual, so only where it will be or the claim is the ttl.
    waiting.handedOff =
      store.handoffGrants === true && (settings.autoExtend || settings.ttlMs <= LINE_MS)
        ? waiting.handOff
        : undefined;
    waiting.attemptNow = this.#immediate?.of === store ? waiting.tryNow : undefined;
    return waitFor(waiting, waiting) as Promise<T>;
  }

  #newWaiting(): Waiting<G> {
    const binding = this.binding;
    const { ttlMs, autoExtend: mayShorten } = this.#settings;
    const waiting: Waiting<G> = {
      store: undefined as unknown as LockStore,
      line: binding.line,
      owner: '',
      deadline: 0,
      signal: undefined,
      alwaysInLine: binding.alwaysInLine,
      value: undefined,
      quiet: false,
      started: 0,
      tryNow: (now) => binding.acquireNow!(this.#immediate!, waiting.owner, ttlMs, now),
      handOff:
        binding.handedOff === undefined ? undefined : (handoff) => binding.handedOff!(handoff),
      attempt: (options) =>
        binding.acquire(waiting.store, waiting.owner, ttlMs, tryOptions(options, mayShorten)),
      subscribe: (listener) => binding.subscribe(waiting.store, listener),
      abandon: () => this.#abandon(waiting.store, waiting.owner),
      leaveLine: () => {
        waiting.abandon();
        waiting.owner = newOwner();
      },
      won: (won: Granted<G>) => {
        this.#grant(
          waiting.store,
          waiting.owner,
          won.granted,
          won.sentAt,
          waiting.started,
          won.leaseMs ?? won.granted.ttlMs,
          won.answeredAt,
        );
        return waiting.value;
      },
      failed: (error) => this.#waitFailed(error, waiting),
    };
    return waiting;
  }

  /** How a wait that failed with `error` rejects. */
  async #waitFailed(error: unknown, waiting: Waiting<G>): Promise<never> {
    const key = this.binding.key;
    const { store, quiet, started } = waiting;
    const signal = this.#settings.signal;
    let thrown: unknown;
    if (error instanceof WaitTimeout) {
      const refusal = quiet ? null : await holder(this.binding, store);
      thrown = new LockTimeoutError(
        key,
        Math.round(performance.now() - started),
        refusal?.holder,
        refusal?.key,
      );
    } else if (signal?.aborted && error === signal.reason) {
      thrown = error;
    } else {
      thrown = storeError(key, 'acquire', error, store);
    }
    this.#state = State.Idle;
    throw toLockError(key, 'acquire', thrown, this.#store, signal);
  }

  /** Like `acquire()`, but resolves `false` where it would reject with `LockedError` or `LockTimeoutError`. */
  async tryAcquire(): Promise<boolean> {
    try {
      await this.acquire(undefined, true);
      return true;
    } catch (error) {
      if (error instanceof LockedError || error instanceof LockTimeoutError) return false;
      throw error;
    }
  }

  /** See `Lock.release`. */
  release(): Promise<boolean> {
    try {
      const answer = this.#release();
      return typeof answer === 'boolean' ? Promise.resolve(answer) : answer;
    } catch (error) {
      return Promise.reject(error);
    }
  }

  /** `release()`, answered at once where the store answers at once. */
  #release(): boolean | Promise<boolean> {
    if (this.#state !== State.Held) return false;
    this.#state = State.Released;
    if (this.#watched !== undefined) unwatch(this.#watched);
    // The acquisition ends here: a signal read from now on belongs to the next one.
    const controller = this.#controller;
    this.#controller = undefined;
    const store = this.#store!;
    const owner = this.#owner;
    const binding = this.binding;
    const holdAtLeastMs = this.#settings.holdAtLeastMs;
    // The clock is read only where it tells something: `holdAtLeast`, or `heldMs` for a listener.
    const now =
      holdAtLeastMs > 0 || channels.release.hasSubscribers ? performance.now() : this.#grantedAt;
    const keepMs = Math.ceil(this.#grantedAt + holdAtLeastMs - now);
    let answer: boolean | Promise<boolean>;
    try {
      const immediate = this.#immediate;
      answer =
        immediate !== undefined
          ? keepMs > 0
            ? binding.releaseNow!(immediate, owner, keepMs)
            : binding.releaseNow!(immediate, owner)
          : keepMs > 0
            ? binding.release(store, owner, keepMs)
            : binding.release(store, owner);
    } catch (error) {
      throw storeError(binding.key, 'release', error, store);
    }
    if (typeof answer === 'boolean') {
      return this.#released(answer, store, owner, keepMs, now, controller);
    }
    return answer.then(
      (ok) => this.#released(ok, store, owner, keepMs, now, controller),
      (error) => {
        throw storeError(binding.key, 'release', error, store);
      },
    );
  }

  /** The rest of `release()` once the store answered `ok`. */
  #released(
    ok: boolean,
    store: LockStore,
    owner: string,
    keepMs: number,
    now: number,
    controller: AbortController | undefined,
  ): boolean {
    const binding = this.binding;
    if (!ok) {
      this.#lose(
        'it had expired or been taken by the time it was released',
        undefined,
        false,
        controller,
      );
      return false;
    }
    if (keepMs <= 0 && hasLines(store)) {
      released(store, binding.line);
      if (binding.alsoFrees !== undefined)
        for (const line of binding.alsoFrees) released(store, line);
    }
    if (channels.release.hasSubscribers) {
      channels.release.publish({
        key: binding.key,
        owner,
        fence: this.#granted?.fence,
        heldMs: now - this.#grantedAt,
      } satisfies LockEvent);
    }
    if (debugging) debug('released %j', binding.key);
    return true;
  }

  /** See `Lock.extend`. */
  async extend(ttl?: Duration): Promise<void> {
    const leaseMs = ttl === undefined ? this.#leaseMs : toLeaseMs('ttl', ttl);
    const key = this.binding.key;
    if (this.#state !== State.Held) {
      throw this.#lostError ?? new LockLostError(key, 'it is not held by this instance');
    }
    const owner = this.#owner;
    const sentAt = performance.now();
    let ok: boolean;
    try {
      ok = await this.binding.extend(this.#store!, owner, leaseMs);
    } catch (error) {
      throw storeError(key, 'extend', error, this.#store);
    }
    if (this.#state !== State.Held || this.#owner !== owner) {
      throw this.#lostError ?? new LockLostError(key, 'it was released while being extended');
    }
    if (!ok) {
      this.#lose('it had expired or been taken when it was extended');
      throw this.#lostError!;
    }
    this.#leaseMs = leaseMs;
    this.#extended(sentAt);
  }

  /**
   * Acquire, call `fn(signal)` while held, as `current` for `currentLock()`, then release. If the
   * lease was lost while `fn` ran, rejects with `LockLostError` once `fn` settles; an error thrown
   * by `fn` wins.
   */
  async run<T>(current: Held, fn: (signal: AbortSignal) => T | Promise<T>): Promise<T> {
    const now = this.#acquireNow();
    if (now === BEHIND) await this.#waitBehind(undefined, false);
    else if (now !== true) await this.#acquire(undefined, false, now === false ? undefined : now);
    let result: T;
    try {
      result = await lockContext.run(current, fn, this.signal);
    } catch (error) {
      await this.release().catch(() => undefined);
      throw error;
    }
    const released = this.#release();
    if (!(typeof released === 'boolean' ? released : await released)) {
      throw this.#lostError ?? new LockLostError(this.binding.key, 'it was lost while held');
    }
    return result;
  }

  /** The lease's store: synchronously when it is already open (the common case). */
  open(): LockStore | Promise<LockStore> {
    return this.#store ?? this.#open();
  }

  #open(): LockStore | Promise<LockStore> {
    const store = openStore(this.binding.key, this.#settings.cache);
    if (store instanceof Promise) return store.then((opened) => this.#setStore(opened));
    return this.#setStore(store);
  }

  #setStore(store: LockStore): LockStore {
    if (this.#store !== store) {
      this.#store = store;
      const binding = this.binding;
      this.#immediate =
        binding.acquireNow !== undefined && binding.releaseNow !== undefined
          ? immediateOf(store)
          : undefined;
    }
    return store;
  }

  /**
   * Let go of whatever `owner` may hold or claim, its lease or its place in the store's line.
   * A place left behind holds up everyone behind it until its claim runs out, so a release that
   * fails at once (the connection it went out on had just dropped) is tried again a few times
   * within the claim, on timers that keep no process up. Past the claim there is no place left
   * to free, and a store that takes that long to fail is not retried into: each try under way
   * would keep a script up.
   */
  #abandon(store: LockStore, owner: string, attempt = 0, since = performance.now()): void {
    tried(() => this.binding.release(store, owner)).catch(() => {
      const delay = ABANDON_RETRY_MS[attempt];
      if (delay === undefined || performance.now() - since + delay > LINE_MS) return;
      setTimeout(() => this.#abandon(store, owner, attempt + 1, since), delay).unref();
    });
  }

  #grant(
    store: LockStore,
    owner: string,
    granted: G,
    sentAt: number,
    started: number,
    claimMs?: number,
    answeredAt?: number,
  ): void {
    this.#setStore(store);
    this.#owner = owner;
    this.#granted = granted;
    this.#state = State.Held;
    this.#lostError = undefined;
    this.#lastError = undefined;
    this.#extending = false;
    this.#grantedAt = answeredAt ?? performance.now();
    this.#leaseMs = this.#settings.ttlMs;
    // A hand-off's claim may be shorter than the ttl: the first extension comes sooner.
    const grantedMs = Math.min(claimMs ?? this.#leaseMs, this.#leaseMs);
    this.#expiresAt = sentAt + grantedMs;
    this.#nextExtendAt = sentAt + grantedMs / 3;
    const watched = (this.#watched ??= { dueAt: 0, tick: (now) => this.#tick(now), slot: -1 });
    watched.dueAt = this.#dueAt();
    watch(watched);
    if (channels.acquire.hasSubscribers) {
      channels.acquire.publish({
        key: this.binding.key,
        owner,
        fence: granted.fence,
        waitedMs: this.#grantedAt - started,
      } satisfies LockEvent);
    }
    if (debugging) debug('acquired %j fence=%s', this.binding.key, granted.fence);
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
        key: this.binding.key,
        owner: this.#owner,
        fence: this.#granted?.fence,
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
    tried(() => this.binding.extend(this.#store!, owner, leaseMs)).then(
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
        if (debugging) debug('extending %j failed: %s', this.binding.key, this.#lastError);
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
   * released). `free`: the lease may still be ours in the store (it could not be reached), so
   * try to free it for the next owner. `controller`: the signal's controller of this acquisition
   * (the current one unless a release already moved on).
   */
  #lose(reason: string, cause?: unknown, free = false, controller = this.#controller): void {
    if (this.#state === State.Lost) return;
    this.#state = State.Lost;
    if (this.#watched !== undefined) unwatch(this.#watched);
    const key = this.binding.key;
    const error = new LockLostError(key, reason, cause);
    this.#lostError = error;
    controller?.abort(error);
    if (controller !== undefined && controller === this.#controller) this.#controllerLost = true;
    if (free) this.#abandon(this.#store!, this.#owner);
    if (channels.lost.hasSubscribers) {
      channels.lost.publish({
        key,
        owner: this.#owner,
        fence: this.#granted?.fence,
        error,
      } satisfies LockEvent);
    }
    if (debugging) debug('lost %j: %s', key, reason);
    const onLost = this.#settings.onLost;
    if (onLost !== undefined) {
      try {
        onLost(error);
      } catch (thrown) {
        process.emitWarning(`cachelock: onLost for "${key}" threw: ${String(thrown)}`, {
          code: 'CACHELOCK_ONLOST_THREW',
        });
      }
    }
  }
}

async function holder(binding: LeaseBinding, store: LockStore): Promise<Refusal | null> {
  try {
    return await binding.holder(store);
  } catch {
    return null;
  }
}

function lockedError(key: string, refusal: Refusal | null): LockedError {
  return new LockedError(key, refusal?.holder, refusal?.key);
}

/**
 * The store for a cache option, synchronously when it is already open. A failure to open it is
 * a `StoreError` (a bad cache option stays the `TypeError` that names it).
 */
export function openStore(key: string, cache: unknown): LockStore | Promise<LockStore> {
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

/** A store's failure as a `StoreError` that names the store. */
export function storeError(
  key: string,
  operation: string,
  error: unknown,
  store: LockStore | undefined,
): StoreError {
  return new StoreError(key, operation, error, store && locationOf(store));
}

/**
 * The one way an error reaches the caller: cachelock's own errors, a `TypeError` about the
 * input or the store, and the signal's reason pass as they are; anything else is the store's
 * failure.
 */
export function toLockError(
  key: string,
  operation: string,
  error: unknown,
  store: LockStore | undefined,
  signal?: AbortSignal,
): unknown {
  return error instanceof LockError ||
    error instanceof TypeError ||
    (signal?.aborted && error === signal.reason)
    ? error
    : storeError(key, operation, error, store);
}

/**
 * A store call from a timer or a clean-up, where a store that throws rather than rejects (one
 * closed meanwhile) would throw into nobody's hands: as a rejection.
 */
function tried<T>(call: () => Promise<T>): Promise<T> {
  try {
    return call();
  } catch (error) {
    return Promise.reject(error);
  }
}
