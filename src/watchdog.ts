import { performance } from 'node:perf_hooks';
import { MAX_TIMER_MS } from './duration.js';

/**
 * One timer for every held lease in the process, rather than one per lock: it wakes at the
 * earliest moment any lease needs attention (an extension due, or a lease running out) and
 * lets each lease act. The timer is unref'd, so a held lock never keeps the process alive.
 */
export interface Watched {
  /** When this lease next needs attention, on the `performance.now()` clock. */
  dueAt: number;
  /** Called at or after `dueAt`; sets a new `dueAt` or leaves the watchdog. */
  tick(now: number): void;
  /** Its index in `leases` while watched, else -1 (the watchdog's own bookkeeping). */
  slot?: number;
}

// An array with each lease's index on the lease, rather than a Set: a lock taken and released
// in a loop would otherwise rehash the Set every few calls.
const leases: Watched[] = [];
let timer: NodeJS.Timeout | undefined;
let timerAt = Number.POSITIVE_INFINITY;

export function watch(lease: Watched): void {
  if (!isWatched(lease)) lease.slot = leases.push(lease) - 1;
  schedule(lease.dueAt);
}

export function unwatch(lease: Watched): void {
  if (!isWatched(lease)) return;
  const slot = lease.slot!;
  const last = leases.pop()!;
  if (last !== lease) {
    leases[slot] = last;
    last.slot = slot;
  }
  lease.slot = -1;
}

function isWatched(lease: Watched): boolean {
  return lease.slot !== undefined && lease.slot >= 0;
}

/** Tell the watchdog that a lease's `dueAt` moved. */
export function reschedule(lease: Watched): void {
  if (isWatched(lease)) schedule(lease.dueAt);
}

function schedule(at: number): void {
  // A timer already set to fire no later than needed serves; it may fire early and find
  // nothing due, which is cheap.
  if (timer !== undefined && timerAt <= at) return;
  if (timer !== undefined) clearTimeout(timer);
  timerAt = at;
  // Node fires a longer delay after 1 ms; waking early instead finds nothing due and re-arms.
  timer = setTimeout(fire, Math.min(Math.max(0, at - performance.now()), MAX_TIMER_MS));
  timer.unref();
}

function fire(): void {
  timer = undefined;
  timerAt = Number.POSITIVE_INFINITY;
  const now = performance.now();
  // A tick may watch or unwatch leases (`onLost` runs user code): go over the ones due now.
  for (const lease of leases.filter((one) => one.dueAt <= now)) {
    if (isWatched(lease)) lease.tick(now);
  }
  let next = Number.POSITIVE_INFINITY;
  for (const lease of leases) if (lease.dueAt < next) next = lease.dueAt;
  if (next !== Number.POSITIVE_INFINITY) schedule(next);
}

/** Leases being watched now (tests check that nothing outlives a release). */
export function watchedCount(): number {
  return leases.length;
}
