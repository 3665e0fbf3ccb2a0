import { MAX_TIMER_MS } from './duration.js';
import type { Acquired, AcquireOptions, Handoff, LockStore } from './store.js';

/**
 * The one waiting strategy. Within a process, waiters for a key form a FIFO line and only the
 * first talks to the store, so they do not stampede it. The first waiter listens for the
 * store's push wake-ups where it has them and otherwise polls with jittered, bounded back-off;
 * it still polls when it listens, so a lease that expires without a release (a dead holder)
 * or a lost message never strands it. The wait ends at the deadline or when the signal aborts.
 */

/** What a successful wait returns. */
export interface Granted<G extends Acquired = Acquired> {
  granted: G;
  /** When the request that won was sent, on `performance.now()`. */
  sentAt: number;
  /** The lease is this long from `sentAt` (a hand-off's claim), not the requested ttl. */
  leaseMs?: number;
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
  /** Listen for push wake-ups; `undefined` when the store has none (then only polling). */
  subscribe(listener: (handoff?: Handoff) => void): (() => void) | undefined;
  /** Leave the store's line and undo an attempt whose outcome is unknown (owner-checked). */
  abandon(): void;
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

interface Place {
  turn: () => void;
}

interface Line {
  places: Place[];
  /** Wakes the first waiter at once (a holder in this process released). */
  poke: (() => void) | undefined;
}

const lines = new WeakMap<LockStore, Map<string, Line>>();

function lineFor(store: LockStore, key: string, create: true): Line;
function lineFor(store: LockStore, key: string, create: false): Line | undefined;
function lineFor(store: LockStore, key: string, create: boolean): Line | undefined {
  let keys = lines.get(store);
  if (keys === undefined) {
    if (!create) return undefined;
    lines.set(store, (keys = new Map()));
  }
  let line = keys.get(key);
  if (line === undefined && create) keys.set(key, (line = { places: [], poke: undefined }));
  return line;
}

/** Whether other waiters in this process are in a line. */
export function hasWaiters(store: LockStore, key: string): boolean {
  const line = lineFor(store, key, false);
  return line !== undefined && line.places.length > 0;
}

/** Whether any line of `store` has waiters in this process (then `released` is worth calling). */
export function hasLines(store: LockStore): boolean {
  const keys = lines.get(store);
  return keys !== undefined && keys.size > 0;
}

/** A holder in this process released what a line waits for: wake its first waiter now. */
export function released(store: LockStore, key: string): void {
  lineFor(store, key, false)?.poke?.();
}

export async function waitFor<G extends Acquired>(request: WaitRequest<G>): Promise<Granted<G>> {
  const { store, line: key } = request;
  const line = lineFor(store, key, true);
  let turn: () => void = noop;
  const myTurn = new Promise<void>((resolve) => (turn = resolve));
  const place: Place = { turn };
  line.places.push(place);
  // First here at once: the caller's try that joined the store's line was just made. A waiter
  // that had to wait for its turn tries again, which also renews a place that may have lapsed.
  const first = line.places.length === 1;
  if (first) turn();
  let reached = false;
  try {
    await pause(myTurn, request.deadline, request.signal);
    reached = true;
    return await attempt(request, line, request.joined === true && first);
  } finally {
    // Out of time before the first try here: leave the line the caller's own try joined.
    if (!reached && request.joined) request.abandon();
    const index = line.places.indexOf(place);
    if (index >= 0) line.places.splice(index, 1);
    if (index === 0 && line.places.length > 0) line.places[0]!.turn();
    if (line.places.length === 0) lines.get(store)?.delete(key);
  }
}

async function attempt<G extends Acquired>(
  request: WaitRequest<G>,
  line: Line,
  justJoined: boolean,
): Promise<Granted<G>> {
  const { store, owner, deadline, signal } = request;
  let woken = false;
  let wake: () => void = noop;
  const onWake = () => {
    woken = true;
    wake();
  };
  // When the last try that the store refused was sent (the caller's own, if it joined), and
  // whether a try is out now.
  let refusedAt = request.joined ? request.joinedAt : undefined;
  let trying = false;
  let handed: Granted<G> | undefined;
  const unsubscribe = request.subscribe((given?: Handoff) => {
    // Handed to another waiter: the key is held again, so trying now would only cost a trip.
    if (given !== undefined && given.owner !== owner) return;
    // Handed to us where that grants the key: ours from the hand-off, which came after our last
    // refusal was sent, for its claim. Counted from then, the claim must still be well ahead.
    if (
      given?.ttlMs !== undefined &&
      request.handedOff !== undefined &&
      !trying &&
      refusedAt !== undefined &&
      refusedAt + given.ttlMs - performance.now() > given.ttlMs / 2
    ) {
      handed ??= { granted: request.handedOff(given), sentAt: refusedAt, leaseMs: given.ttlMs };
    }
    // Otherwise confirm with an acquire (it refreshes our lease) and count from sending it.
    // The message may have waited in a paused process past its claim, the key since taken.
    onWake();
  });
  line.poke = onWake;
  const options = unsubscribe || request.alwaysInLine ? { lineMs: LINE_MS } : undefined;
  const maxDelay = unsubscribe ? POLL_WITH_PUSH_MS : MAX_POLL_MS;
  let delay = unsubscribe ? POLL_WITH_PUSH_MS : FIRST_DELAY_MS;
  let won = false;
  let unknown = false;
  // The caller's try just joined the line and the store tells a late listener what it missed:
  // trying again now would only cost a trip, so sleep until woken.
  let tried = justJoined && unsubscribe !== undefined && store.replaysWakeups === true;
  try {
    for (;;) {
      if (handed !== undefined) {
        won = true;
        return handed;
      }
      if (!tried) {
        signal?.throwIfAborted();
        woken = false;
        const sentAt = performance.now();
        unknown = true;
        trying = true;
        const result = await request.attempt(options);
        trying = false;
        unknown = false;
        if (result !== null) {
          won = true;
          return { granted: result, sentAt };
        }
        refusedAt = sentAt;
      }
      tried = false;
      const remaining = deadline - performance.now();
      if (remaining <= 0) throw new WaitTimeout();
      if (!woken) {
        const sleepMs = Math.min(delay * (0.5 + Math.random() * 0.5), remaining);
        await sleep(sleepMs, signal, (resolve) => (wake = resolve));
        wake = noop;
      }
      delay = Math.min(delay * 1.5, maxDelay);
    }
  } finally {
    unsubscribe?.();
    line.poke = undefined;
    // Leave the store's line (this also frees a hand-off that raced with giving up), and undo
    // an attempt that failed without an answer.
    if (!won && (options !== undefined || unknown)) request.abandon();
  }
}

function noop(): void {}

/** Wait for `turn`, the deadline (then `WaitTimeout`) or the signal, whichever comes first. */
async function pause(
  turn: Promise<void>,
  deadline: number,
  signal: AbortSignal | undefined,
): Promise<void> {
  signal?.throwIfAborted();
  let reached = false;
  await sleep(deadline - performance.now(), signal, (wake) =>
    turn.then(() => {
      reached = true;
      wake();
    }),
  );
  if (!reached) throw new WaitTimeout();
}

/**
 * Sleep `ms` (`Infinity`: until woken), ended early by `setWake`'s function or rejected when
 * the signal aborts.
 */
function sleep(
  ms: number,
  signal: AbortSignal | undefined,
  setWake: (wake: () => void) => void,
): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    const finish = (settle: () => void) => {
      clearTimeout(timer);
      signal?.removeEventListener('abort', onAbort);
      settle();
    };
    let timer: NodeJS.Timeout | undefined;
    // Node fires a delay above MAX_TIMER_MS after 1 ms, so a long wait sleeps in steps.
    const arm = (left: number) => {
      timer =
        left > MAX_TIMER_MS
          ? setTimeout(() => arm(left - MAX_TIMER_MS), MAX_TIMER_MS)
          : setTimeout(() => finish(resolve), Math.max(0, left));
    };
    if (ms !== Number.POSITIVE_INFINITY) arm(ms);
    const onAbort = () => finish(() => reject(signal!.reason));
    signal?.addEventListener('abort', onAbort, { once: true });
    setWake(() => finish(resolve));
  });
}
