import { performance } from 'node:perf_hooks';
import { MAX_TIMER_MS } from './duration.js';
import type { Acquired, AcquireOptions, Handoff, LockStore } from './store.js';

/**
 * The one waiting strategy. Within a process, waiters for a key form a FIFO line and only the
 * first talks to the store, so they do not stampede it. The first waiter listens for the
 * store's push wake-ups where it has them and otherwise polls with jittered, bounded back-off;
 * it still polls when it listens, so a lease that expires without a release (a dead holder)
 * or a lost message never strands it. The wait ends at the deadline or when the signal aborts.
 *
 * A wait is one object driven by callbacks rather than a chain of async functions: a hand-off
 * within a process costs a promise for the caller and little else.
 */

/** What a successful wait returns. */
export interface Granted<G extends Acquired = Acquired> {
  granted: G;
  /** When the request that won was sent, on `performance.now()`. */
  sentAt: number;
  /** The lease is this long from `sentAt` (a hand-off's claim), not the requested ttl. */
  leaseMs?: number;
  /** When the store's answer came, where the waiter knows it without reading the clock again. */
  answeredAt?: number;
}

/**
 * What to wait for, said through functions so that every kind of lease (one key, several keys,
 * a permit, a reader or a writer) waits the same way.
 */
export interface WaitRequest<G extends Acquired = Acquired> {
  store: LockStore;
  /** Names the in-process line: waiters with the same `line` on one store queue together. */
  line: string;
  owner: string;
  /** On the `performance.now()` clock; `Infinity` waits on. */
  deadline: number;
  signal: AbortSignal | undefined;
  /** One try; `options.lineMs` asks the store to keep this owner's place in its line. */
  attempt(options: AcquireOptions | undefined): Promise<G | null>;
  /**
   * One try answered at once (the store's immediate answers), used instead of `attempt`. No
   * release can slip in between a refusal and the subscription that follows it, so a waiter
   * whose turn comes tries before it subscribes and subscribes only when refused. `now`: the
   * `performance.now()` it is sent at.
   */
  attemptNow?(now: number): G | null;
  /** Listen for push wake-ups; `undefined` when the store has none (then only polling). */
  subscribe(listener: (handoff?: Handoff) => void): (() => void) | undefined;
  /** Leave the store's line and undo an attempt whose outcome is unknown (owner-checked). */
  abandon(): void;
  /**
   * Leave the store's line the caller's own try joined, and go on as a new owner: the old
   * owner's leaving may reach the store after the new one's tries.
   */
  leaveLine(): void;
  /**
   * Keep a place in the store's line even without push wake-ups: shared leases are served first
   * come, first served, so a waiter that is not in line could be passed forever.
   */
  alwaysInLine?: boolean;
  /** The caller's own try, made before waiting, already joined the store's line. */
  joined?: boolean;
  /** When the caller sent that try, on `performance.now()`. */
  joinedAt?: number;
  /**
   * Where a hand-off grants the key (the store's `handoffGrants`): the grant it stands for.
   * Absent: a waiter handed the key confirms with an `acquire`.
   */
  handedOff?(handoff: Handoff): G;
}

/**
 * What the wait's promise settles to, decided by the caller when the wait ends: the caller's
 * own value resolves its caller's promise directly, without one more promise in between.
 */
export interface WaitOutcome<G extends Acquired, T> {
  won(granted: Granted<G>): T;
  /** What to resolve with when the wait failed with `error` (mostly a rejected promise). */
  failed(error: unknown): T | Promise<T>;
}

/** The wait ran out. */
export class WaitTimeout extends Error {}

const FIRST_DELAY_MS = 5;
const MAX_POLL_MS = 200;
// With push wake-ups a waiter in line is told when the key is handed to it or freed, so it
// polls only to renew its place and to find leases that expired without a release: at this
// pace from the start, not after a ramp, since every early poll is a script run for nothing.
const POLL_WITH_PUSH_MS = 1_000;
// How long a waiter stays in a store's line without renewing its place (it renews on every
// attempt, at least once per POLL_WITH_PUSH_MS), so a waiter that dies leaves it soon.
export const LINE_MS = 3_000;
const IN_LINE: AcquireOptions = Object.freeze({ lineMs: LINE_MS });

interface Line {
  /** Oldest first; the first talks to the store, the others wait for their turn. */
  places: Waiter<Acquired, unknown>[];
}

const lines = new WeakMap<LockStore, Map<string, Line>>();

function lineFor(store: LockStore, key: string): Line | undefined {
  return lines.get(store)?.get(key);
}

/** Whether other waiters in this process are in a line. */
export function hasWaiters(store: LockStore, key: string): boolean {
  const line = lineFor(store, key);
  return line !== undefined && line.places.length > 0;
}

/** Whether any line of `store` has waiters in this process (then `released` is worth calling). */
export function hasLines(store: LockStore): boolean {
  const keys = lines.get(store);
  return keys !== undefined && keys.size > 0;
}

/** A holder in this process released what a line waits for: wake its first waiter now. */
export function released(store: LockStore, key: string): void {
  lineFor(store, key)?.places[0]?.wake();
}

const identity: WaitOutcome<Acquired, Granted> = {
  won: (granted) => granted,
  failed: (error) => Promise.reject(error),
};

/**
 * Wait in `request.line` for the turn, then try until the store grants, the deadline passes
 * (`WaitTimeout`) or the signal aborts (its reason). With `outcome`, the promise settles to what
 * it makes of the result.
 */
export function waitFor<G extends Acquired>(request: WaitRequest<G>): Promise<Granted<G>>;
export function waitFor<G extends Acquired, T>(
  request: WaitRequest<G>,
  outcome: WaitOutcome<G, T>,
): Promise<T>;
export function waitFor<G extends Acquired, T>(
  request: WaitRequest<G>,
  outcome: WaitOutcome<G, T> = identity as unknown as WaitOutcome<G, T>,
): Promise<T> {
  const signal = request.signal;
  if (signal?.aborted) {
    // Aborted before the first try here: leave the line the caller's own try joined.
    if (request.joined) request.abandon();
    return Promise.resolve(outcome.failed(signal.reason));
  }
  const { store, line: key } = request;
  let keys = lines.get(store);
  if (keys === undefined) lines.set(store, (keys = new Map()));
  let line = keys.get(key);
  if (line === undefined) keys.set(key, (line = { places: [] }));
  const waiter = new Waiter(request, outcome, line);
  line.places.push(waiter as Waiter<Acquired, unknown>);
  if (signal !== undefined) waiter.listenForAbort(signal);
  // First here: the caller's try was just made, so this waiter goes on at once.
  if (line.places.length === 1) waiter.reach(true);
  else {
    // Another waiter of this process got here first, and only it talks to the store. A place
    // the caller's try took in the store's line could be ahead of it there: the key would be
    // handed to this one, which does not listen until its turn, and sit unused until the
    // claim ran out (seconds per hand-off while the others wait). Leave it until the turn.
    if (request.joined === true) {
      request.leaveLine();
      request.joined = false;
    }
    waiter.queue();
  }
  return waiter.promise;
}

enum Step {
  /** Behind others in the line. */
  Queued = 0,
  /** Its turn came; it goes on in a moment (see `later`). */
  TurnDue = 1,
  /** Trying, or deciding what to do next. */
  Busy = 2,
  /** A try is out to the store. */
  Trying = 3,
  /** Refused; sleeping until woken, the next poll or the deadline. */
  Sleeping = 4,
  /** Woken while sleeping; it tries again in a moment. */
  WakeDue = 5,
  Done = 6,
}

class Waiter<G extends Acquired, T> {
  readonly promise: Promise<T>;
  readonly #request: WaitRequest<G>;
  readonly #outcome: WaitOutcome<G, T>;
  readonly #line: Line;
  #resolve!: (value: T | Promise<T>) => void;
  #step = Step.Queued;
  /** Its turn came and it has talked (or is about to talk) to the store. */
  #reached = false;
  /** When the clock rings for it (see `sleepers`), on `performance.now()`. */
  ringAt = 0;
  /** Its index in `sleepers` while the clock is set for it, else -1. */
  slot = -1;
  #onAbort: (() => void) | undefined;
  #unsubscribe: (() => void) | undefined;
  #options: AcquireOptions | undefined;
  #delay = FIRST_DELAY_MS;
  #maxDelay = MAX_POLL_MS;
  #woken = false;
  /** A try is out, or failed without an answer: its outcome is unknown. */
  #unknown = false;
  /** When the last try that the store refused was sent (the caller's own, if it joined). */
  #refusedAt: number | undefined;
  #handed: Granted<G> | undefined;
  /** The next waiter in `later`'s queue. */
  nextDue: Waiter<Acquired, unknown> | undefined;

  constructor(request: WaitRequest<G>, outcome: WaitOutcome<G, T>, line: Line) {
    this.#request = request;
    this.#outcome = outcome;
    this.#line = line;
    this.promise = new Promise<T>((resolve) => {
      this.#resolve = resolve;
    });
  }

  listenForAbort(signal: AbortSignal): void {
    this.#onAbort = () => {
      // A try that is out ends as the store answers it.
      if (this.#step !== Step.Trying) this.#fail(signal.reason);
    };
    signal.addEventListener('abort', this.#onAbort, { once: true });
  }

  /** Behind others: wait for the turn, the deadline or the signal. */
  queue(): void {
    const deadline = this.#request.deadline;
    if (deadline !== Number.POSITIVE_INFINITY)
      setClock(this as Waiter<Acquired, unknown>, deadline);
  }

  /** Called from `later`'s queue. */
  resume(): void {
    if (this.#step === Step.TurnDue) this.reach(false);
    else if (this.#step === Step.WakeDue) this.#loop(false);
  }

  /** The turn came: talk to the store until it grants. `first`: no one was in line before. */
  reach(first: boolean): void {
    stopClock(this as Waiter<Acquired, unknown>);
    this.#reached = true;
    this.#step = Step.Busy;
    const request = this.#request;
    const justJoined = first && request.joined === true;
    if (request.attemptNow !== undefined && !first) {
      const sentAt = performance.now();
      const result = this.#tryNow(request.attemptNow, sentAt);
      if (result === undefined) return;
      if (result !== null) {
        this.#win({ granted: result, sentAt, answeredAt: sentAt });
        return;
      }
      this.#refusedAt = sentAt;
      this.#subscribe();
      this.#loop(true);
      return;
    }
    if (justJoined) this.#refusedAt = request.joinedAt;
    this.#subscribe();
    // The caller's try just joined the line and the store tells a late listener what it missed:
    // trying again now would only cost a trip, so sleep until woken.
    this.#loop(
      justJoined && this.#unsubscribe !== undefined && request.store.replaysWakeups === true,
    );
  }

  /** Woken: the key was released in this process, or the store said so. */
  wake(): void {
    if (this.#step < Step.Busy || this.#step === Step.Done) return;
    this.#woken = true;
    if (this.#step === Step.Sleeping) {
      stopClock(this as Waiter<Acquired, unknown>);
      this.#step = Step.WakeDue;
      later(this as Waiter<Acquired, unknown>);
    }
  }

  #subscribe(): void {
    const request = this.#request;
    this.#unsubscribe = request.subscribe((given?: Handoff) => {
      if (this.#step === Step.Done) return;
      // Handed to another waiter: the key is held again, so trying now would only cost a trip.
      if (given !== undefined && given.owner !== request.owner) return;
      // Handed to us where that grants the key: ours from the hand-off, which came after our
      // last refusal was sent, for its claim. Counted from then, the claim must still be well
      // ahead.
      const refusedAt = this.#refusedAt;
      if (
        given?.ttlMs !== undefined &&
        request.handedOff !== undefined &&
        this.#step !== Step.Trying &&
        refusedAt !== undefined &&
        refusedAt + given.ttlMs - performance.now() > given.ttlMs / 2
      ) {
        this.#handed ??= {
          granted: request.handedOff(given),
          sentAt: refusedAt,
          leaseMs: given.ttlMs,
        };
      }
      // Otherwise confirm with an acquire (it refreshes our lease) and count from sending it.
      // The message may have waited in a paused process past its claim, the key since taken.
      this.wake();
    });
    const pushed = this.#unsubscribe !== undefined;
    this.#options = pushed || request.alwaysInLine ? IN_LINE : undefined;
    this.#maxDelay = pushed ? POLL_WITH_PUSH_MS : MAX_POLL_MS;
    this.#delay = pushed ? POLL_WITH_PUSH_MS : FIRST_DELAY_MS;
  }

  /** Try, and go on from the answer; `tried`: the last try was refused just now. */
  #loop(tried: boolean): void {
    this.#step = Step.Busy;
    const request = this.#request;
    for (;;) {
      if (this.#handed !== undefined) {
        this.#win(this.#handed);
        return;
      }
      if (!tried) {
        const signal = request.signal;
        if (signal?.aborted) {
          this.#fail(signal.reason);
          return;
        }
        this.#woken = false;
        const sentAt = performance.now();
        if (request.attemptNow !== undefined) {
          const result = this.#tryNow(request.attemptNow, sentAt);
          if (result === undefined) return;
          if (result !== null) {
            this.#win({ granted: result, sentAt, answeredAt: sentAt });
            return;
          }
        } else {
          this.#unknown = true;
          this.#step = Step.Trying;
          request.attempt(this.#options).then(
            (result) => this.#answered(result, sentAt),
            (error) => this.#fail(error),
          );
          return;
        }
        this.#refusedAt = sentAt;
      }
      tried = false;
      const deadline = request.deadline;
      const now = performance.now();
      const remaining = deadline - now;
      if (remaining <= 0) {
        this.#fail(new WaitTimeout());
        return;
      }
      const delay = this.#delay;
      this.#delay = Math.min(delay * 1.5, this.#maxDelay);
      if (!this.#woken) {
        this.#step = Step.Sleeping;
        setClock(
          this as Waiter<Acquired, unknown>,
          Math.min(now + delay * (0.5 + Math.random() * 0.5), deadline),
        );
        return;
      }
    }
  }

  /** A try answered at once: the grant or `null`, or `undefined` when it threw (then failed). */
  #tryNow(attemptNow: (now: number) => G | null, now: number): G | null | undefined {
    try {
      return attemptNow(now);
    } catch (error) {
      this.#unknown = true;
      this.#fail(error);
      return undefined;
    }
  }

  #answered(result: G | null, sentAt: number): void {
    this.#unknown = false;
    this.#step = Step.Busy;
    if (result !== null) {
      this.#win({ granted: result, sentAt });
      return;
    }
    this.#refusedAt = sentAt;
    const signal = this.#request.signal;
    if (signal?.aborted) {
      this.#fail(signal.reason);
      return;
    }
    this.#loop(true);
  }

  /** The clock rang for it: its deadline in the line, or the next poll. */
  ring(): void {
    if (this.#step === Step.Queued) this.#fail(new WaitTimeout());
    else if (this.#step === Step.Sleeping) this.#loop(false);
  }

  #win(granted: Granted<G>): void {
    this.#end();
    let value: T;
    try {
      value = this.#outcome.won(granted);
    } catch (error) {
      this.#resolve(Promise.reject(error));
      this.#leave();
      return;
    }
    // The caller hears first, then the next in line takes its turn: a caller that releases at
    // once has done so by then, and the next one's first try finds the key free.
    this.#resolve(value);
    this.#leave();
  }

  #fail(error: unknown): void {
    if (this.#step === Step.Done) return;
    this.#end();
    // Out of time before the first try here: leave the line the caller's own try joined.
    // Otherwise leave the store's line (this also frees a hand-off that raced with giving up),
    // and undo an attempt that failed without an answer.
    const request = this.#request;
    if (this.#reached ? this.#options !== undefined || this.#unknown : request.joined === true) {
      request.abandon();
    }
    this.#leave();
    this.#resolve(this.#outcome.failed(error));
  }

  #end(): void {
    this.#step = Step.Done;
    stopClock(this as Waiter<Acquired, unknown>);
    if (this.#onAbort !== undefined)
      this.#request.signal?.removeEventListener('abort', this.#onAbort);
    this.#unsubscribe?.();
  }

  /** Out of the line; the next in line takes its turn. */
  #leave(): void {
    const places = this.#line.places;
    const index = places.indexOf(this as Waiter<Acquired, unknown>);
    if (index < 0) return;
    if (index === 0) places.shift();
    else places.splice(index, 1);
    if (index === 0 && places.length > 0) {
      const next = places[0]!;
      if (next.#step === Step.Queued) {
        next.#step = Step.TurnDue;
        later(next);
      }
    }
    if (places.length === 0) {
      const keys = lines.get(this.#request.store);
      if (keys?.get(this.#request.line) === this.#line) keys.delete(this.#request.line);
    }
  }
}

// Waiters to go on in a microtask, after what is already queued (the previous holder's caller),
// linked through the waiters: one promise reaction for all of them, and nothing else made.
let firstDue: Waiter<Acquired, unknown> | undefined;
let lastDue: Waiter<Acquired, unknown> | undefined;
const settled = Promise.resolve();

function later(waiter: Waiter<Acquired, unknown>): void {
  if (lastDue === undefined) {
    firstDue = waiter;
    // Cheaper than queueMicrotask, which makes an async resource per call.
    settled.then(goOn);
  } else {
    lastDue.nextDue = waiter;
  }
  lastDue = waiter;
}

function goOn(): void {
  let waiter = firstDue;
  firstDue = lastDue = undefined;
  while (waiter !== undefined) {
    const next = waiter.nextDue;
    waiter.nextDue = undefined;
    waiter.resume();
    waiter = next;
  }
}

// One timer for every waiter of the process that sleeps until a poll or its deadline, as the
// watchdog has one for every held lease: a waiter is mostly woken long before its poll is due,
// and a timer set and cleared per sleep would cost more than the rest of a hand-off. The timer
// keeps the process alive only while someone sleeps on it.
const sleepers: Waiter<Acquired, unknown>[] = [];
let clock: NodeJS.Timeout | undefined;
let clockAt = Number.POSITIVE_INFINITY;

function setClock(waiter: Waiter<Acquired, unknown>, at: number): void {
  waiter.ringAt = at;
  if (waiter.slot < 0) {
    waiter.slot = sleepers.push(waiter) - 1;
    if (sleepers.length === 1) clock?.ref();
  }
  arm(at);
}

function arm(at: number): void {
  if (clock !== undefined && clockAt <= at) return;
  if (clock !== undefined) clearTimeout(clock);
  clockAt = at;
  // Node fires a longer delay after 1 ms; ringing early finds nothing due and sets it again.
  clock = setTimeout(ring, Math.min(Math.max(0, at - performance.now()), MAX_TIMER_MS));
}

function stopClock(waiter: Waiter<Acquired, unknown>): void {
  const slot = waiter.slot;
  if (slot < 0) return;
  const last = sleepers.pop()!;
  if (last !== waiter) {
    sleepers[slot] = last;
    last.slot = slot;
  }
  waiter.slot = -1;
  if (sleepers.length === 0) clock?.unref();
}

function ring(): void {
  clock = undefined;
  clockAt = Number.POSITIVE_INFINITY;
  const now = performance.now();
  // A waiter that goes on may sleep again, or wake others: go over the ones due now.
  for (const waiter of sleepers.filter((one) => one.ringAt <= now)) {
    if (waiter.slot >= 0) {
      stopClock(waiter);
      waiter.ring();
    }
  }
  let next = Number.POSITIVE_INFINITY;
  for (const waiter of sleepers) if (waiter.ringAt < next) next = waiter.ringAt;
  if (next !== Number.POSITIVE_INFINITY) arm(next);
}
