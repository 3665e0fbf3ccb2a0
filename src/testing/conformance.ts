import type { LockStore } from 'cachelock';
import { contentionCases } from './cases/contention.js';
import { fenceCases } from './cases/fences.js';
import { instanceCases } from './cases/instances.js';
import { keyCases } from './cases/keys.js';
import { leaseCases } from './cases/leases.js';
import { ownershipCases } from './cases/ownership.js';
import { permitCases } from './cases/permits.js';
import { readersWritersCases } from './cases/readers-writers.js';
import { severalKeysCases } from './cases/several-keys.js';
import { wakeupCases } from './cases/wakeups.js';
import type { CaseContext, ConformanceCase } from './kit.js';
import { makeOwner, uniqueKey, within } from './kit.js';

export interface ConformanceOptions {
  /** The `describe()` title. */
  name: string;
  /** `describe` from vitest, jest or node:test. */
  describe: (name: string, fn: () => void) => void;
  /** `it` from vitest, jest or node:test. */
  it: (name: string, fn: () => Promise<void>, timeoutMs?: number) => void;
  /** Called once per test case; the stores may share one server or client. */
  makeStore: () => LockStore | Promise<LockStore>;
  /** Default: `store.close?.()`. */
  closeStore?: (store: LockStore) => Promise<void>;
  /**
   * A short lease the store honours; expiry cases wait for it to run out. Default 300.
   * Stores with whole-second TTLs (Memcached) pass 1000 or 2000.
   */
  leaseMs?: number;
  /**
   * Whether two `makeStore()` calls reach one backend (a server, a file, a shared cache), as
   * two processes would. Default true: the cases that race two instances need it. Pass false
   * only for a store whose instances share nothing (an in-memory store); those cases then race
   * callers of one instance.
   */
  sharedBackend?: boolean;
}

/** Every case, in the order they are registered: one set per promise or capability. */
export const conformanceCases: readonly ConformanceCase[] = [
  ...ownershipCases,
  ...leaseCases,
  ...fenceCases,
  ...contentionCases,
  ...instanceCases,
  ...keyCases,
  ...wakeupCases,
  // Each capability's cases run only on a store that declares it.
  ...severalKeysCases,
  ...permitCases,
  ...readersWritersCases,
];

// Room for the round trips of a case on a slow server, on top of the leases it waits out.
const baseBudgetMs = 20_000;

/** How long a case may take with this lease, so that runners and the suite agree. */
export function caseBudgetMs(testCase: ConformanceCase, leaseMs: number): number {
  return baseBudgetMs + (testCase.leases ?? 0) * leaseMs * 3;
}

/**
 * Register the conformance suite: the behaviour every `LockStore` in cachelock has and the core
 * relies on. Only the given `describe` and `it` are used, so vitest, jest and node:test all work.
 *
 * Each case makes its own store with `makeStore` and closes it afterwards, and uses random keys,
 * so several stores may share one server, and several runs may share it at once.
 *
 * ```ts
 * import { describe, it } from 'vitest'; // or 'node:test', or jest's globals
 * import { runConformance } from 'cachelock/testing';
 *
 * runConformance({ name: 'my store', describe, it, makeStore: () => myStore(client) });
 * ```
 */
export function runConformance(options: ConformanceOptions): void {
  const leaseMs = options.leaseMs ?? 300;
  if (!Number.isFinite(leaseMs) || leaseMs < 1) {
    throw new RangeError(`runConformance: leaseMs must be a positive number of ms, got ${leaseMs}`);
  }
  options.describe(options.name, () => {
    for (const testCase of conformanceCases) {
      const budget = caseBudgetMs(testCase, leaseMs);
      // The suite keeps its own deadline (node:test ignores a timeout given this way); the
      // runner's is a little longer so that the suite's clearer message wins.
      options.it(testCase.name, () => runCase(options, testCase, leaseMs, budget), budget + 5_000);
    }
  });
}

/** Run one case against a fresh store (and its peers) and close them whatever happens. */
export async function runCase(
  options: Pick<ConformanceOptions, 'makeStore' | 'closeStore' | 'sharedBackend'>,
  testCase: ConformanceCase,
  leaseMs: number,
  budgetMs = caseBudgetMs(testCase, leaseMs),
): Promise<void> {
  const store = await within(Promise.resolve(options.makeStore()), budgetMs, 'makeStore()');
  if (testCase.needs !== undefined && store.capabilities?.[testCase.needs] === undefined) {
    // Nothing to check: the store does not offer what this case is about.
    await within(
      options.closeStore ? options.closeStore(store) : Promise.resolve(store.close?.()),
      budgetMs,
      'closing the store',
    );
    return;
  }
  const sharedBackend = options.sharedBackend ?? true;
  const stores = [store];
  const context: CaseContext = {
    store,
    leaseMs,
    longMs: Math.max(30_000, leaseMs * 30),
    patienceMs: leaseMs * 3 + 5_000,
    key: uniqueKey,
    owner: makeOwner,
    sharedBackend,
    async peer() {
      if (!sharedBackend) return store;
      const another = await within(Promise.resolve(options.makeStore()), budgetMs, 'makeStore()');
      stores.push(another);
      return another;
    },
  };
  let failure: unknown;
  try {
    await within(testCase.run(context), budgetMs, `"${testCase.name}"`);
  } catch (error) {
    failure = error;
  }
  for (const opened of stores) {
    try {
      await within(
        options.closeStore ? options.closeStore(opened) : Promise.resolve(opened.close?.()),
        budgetMs,
        'closing the store',
      );
    } catch (error) {
      // The case's own failure says more than a close that failed after it.
      failure ??= error;
    }
  }
  if (failure !== undefined) throw failure;
}
