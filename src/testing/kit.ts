import { AssertionError } from 'node:assert';
import { randomBytes } from 'node:crypto';
import { performance } from 'node:perf_hooks';
import { setTimeout as sleep } from 'node:timers/promises';
import type { LockStore, StoreCapabilities } from 'cachelock';
import { newOwner } from 'cachelock';

/** What every conformance case gets: a fresh store, key and owner makers, and the lease lengths. */
export interface CaseContext {
  store: LockStore;
  /** The short lease the store honours; expiry cases wait for it to run out. */
  leaseMs: number;
  /** A lease no case outlives, for "held" assertions that must not race an expiry. */
  longMs: number;
  /** How long "eventually" may take: expiry, hold-at-least, wake-ups. Generous for noisy CI. */
  patienceMs: number;
  /** A key no other case or concurrent run uses. */
  key(label?: string): string;
  /** A fresh owner, formatted as the core formats them. */
  owner(): string;
  /**
   * Another instance over the same backend, as another process would have (a second
   * `makeStore()`, closed with the case). The same instance when the options say the store's
   * instances share nothing.
   */
  peer(): Promise<LockStore>;
  /** Whether `peer()` makes a separate instance. */
  sharedBackend: boolean;
}

/** One promise of the `LockStore` contract, checked through the interface alone. */
export interface ConformanceCase {
  name: string;
  /** Rejects (with an `AssertionError` for a broken promise) when the store falls short. */
  run(context: CaseContext): Promise<void>;
  /** How many short leases the case waits out, so that its time budget grows with `leaseMs`. */
  leases?: number;
  /** The capability the case checks; it runs only on stores that declare it. */
  needs?: keyof StoreCapabilities;
}

/** The capability a case needs, from a store that declares it (the runner checked). */
export function capability<K extends keyof StoreCapabilities>(
  store: LockStore,
  name: K,
): NonNullable<StoreCapabilities[K]> {
  const found = store.capabilities?.[name];
  if (found === undefined) {
    throw new AssertionError({ message: `the store declared capabilities.${name}, then lost it` });
  }
  return found as NonNullable<StoreCapabilities[K]>;
}

const runId = randomBytes(6).toString('base64url');
let keyCounter = 0;

/** Keys look like the core's (`cachelock:` prefix) and are unique per run, case and call. */
export function uniqueKey(label = 'key'): string {
  return `cachelock:conformance:${runId}:${label}:${(++keyCounter).toString(36)}`;
}

/** Owners as the core makes them (`host:pid:random:counter`), unique across processes. */
export function makeOwner(): string {
  return newOwner();
}

/**
 * Poll `probe` until it returns something other than `undefined`/`false`, or fail after
 * `withinMs` with a message saying what never happened.
 */
export async function eventually<T>(
  what: string,
  withinMs: number,
  probe: () => Promise<T | undefined | false>,
  everyMs = 10,
): Promise<T> {
  const started = performance.now();
  for (;;) {
    const value = await probe();
    if (value !== undefined && value !== false) return value;
    const waited = performance.now() - started;
    if (waited > withinMs) {
      throw new AssertionError({ message: `${what}: still not so after ${Math.round(waited)} ms` });
    }
    await sleep(everyMs);
  }
}

/**
 * Thrown when the machine stalled so long that a timing assumption of the case (say, "this
 * runs well within one lease") did not hold. The attempt proves nothing either way, so it is
 * repeated on fresh keys instead of failing; safety assertions never throw this.
 */
export class Inconclusive extends Error {
  override name = 'Inconclusive';
}

export interface Stopwatch {
  elapsed(): number;
  /** Give up this attempt (not fail it) if more than `ms` passed since the stopwatch started. */
  within(ms: number, step: string): void;
}

export function stopwatch(): Stopwatch {
  const started = performance.now();
  const elapsed = () => performance.now() - started;
  return {
    elapsed,
    within(ms, step) {
      const took = elapsed();
      if (took > ms) {
        throw new Inconclusive(
          `${step} took ${Math.round(took)} ms, more than the ${ms} ms assumed`,
        );
      }
    },
  };
}

/** Run a timing-sensitive attempt up to `attempts` times while it is only inconclusive. */
export async function promptly(attempt: () => Promise<void>, attempts = 3): Promise<void> {
  const reasons: string[] = [];
  for (let i = 0; i < attempts; i++) {
    try {
      await attempt();
      return;
    } catch (error) {
      if (!(error instanceof Inconclusive)) throw error;
      reasons.push(error.message);
    }
  }
  throw new AssertionError({
    message: `every attempt was too slow to judge (the machine or the store stalled): ${reasons.join('; ')}`,
  });
}

/**
 * `target` with a random pause of up to `maxMs` before and after each of its method calls
 * resolves, so that calls from several callers interleave as they would across processes and a
 * slow network. Wrap a store to delay between its operations, or the client or cache under a
 * store to delay between the steps of one operation. Methods keep `target` as `this`.
 * A store's `onRelease` stays synchronous (it returns the unsubscribe function); the wake-ups
 * it delivers are delayed instead, as a slow network would deliver them.
 */
export function delayCalls<T extends object>(target: T, maxMs: number): T {
  const pause = () => sleep(Math.random() * maxMs);
  return new Proxy(target, {
    get(object, name) {
      const value = Reflect.get(object, name, object) as unknown;
      if (typeof value !== 'function') return value;
      if (name === 'onRelease') {
        return (key: string, listener: (...a: unknown[]) => void) => {
          let listening = true;
          const stop = (value as (...a: unknown[]) => () => void).call(
            object,
            key,
            (...told: unknown[]) => {
              void pause().then(() => {
                if (listening) listener(...told);
              });
            },
          );
          return () => {
            listening = false;
            stop();
          };
        };
      }
      return async (...args: unknown[]) => {
        await pause();
        const result = await (value as (...a: unknown[]) => unknown).apply(object, args);
        await pause();
        return result;
      };
    },
  });
}

/** Reject with a clear message if `promise` does not settle within `ms`. */
export async function within<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const deadline = new Promise<never>((_, reject) => {
    timer = setTimeout(
      () => reject(new AssertionError({ message: `${what} did not finish within ${ms} ms` })),
      ms,
    );
  });
  try {
    return await Promise.race([promise, deadline]);
  } finally {
    clearTimeout(timer);
  }
}

/** A key for messages: hostile keys are quoted and long ones cut. */
export function showKey(key: string): string {
  const shown = JSON.stringify(key);
  return shown.length > 80 ? `${shown.slice(0, 60)}...(${key.length} chars)` : shown;
}
