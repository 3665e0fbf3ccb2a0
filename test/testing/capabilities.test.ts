import { setImmediate as tick } from 'node:timers/promises';
import {
  type Acquired,
  type LockStore,
  type ManyKeys,
  type MemoryStore,
  memoryStore,
  type SharedLeases,
  type SharedRequest,
  type StoreCapabilities,
} from 'cachelock';
import { runConformance } from 'cachelock/testing';
import { describe, expect, it } from 'vitest';

const leaseMs = 150;

/**
 * A maker of store instances over one memory store, as processes over one server, whose
 * capabilities `change` may replace.
 */
function over(change: (memory: MemoryStore) => StoreCapabilities = () => ({})): () => LockStore {
  const memory = memoryStore();
  return () => ({
    kind: 'shared memory',
    atomic: true,
    acquire: (key, owner, ttlMs) => memory.acquire(key, owner, ttlMs),
    release: (key, owner, keepMs) => memory.release(key, owner, keepMs),
    extend: (key, owner, ttlMs) => memory.extend(key, owner, ttlMs),
    inspect: (key) => memory.inspect(key),
    onRelease: (key, listener) => memory.onRelease(key, listener),
    capabilities: { ...memory.capabilities, ...change(memory) },
  });
}

/** The capability cases whose names start with `prefix`, as plain functions. */
function collect(makeStore: () => LockStore, prefix: string): Map<string, () => Promise<void>> {
  const cases = new Map<string, () => Promise<void>>();
  runConformance({
    name: 'collected',
    describe: (_name, body) => body(),
    it: (name, fn) => {
      if (name.startsWith(prefix)) cases.set(name, fn);
    },
    makeStore,
    leaseMs,
  });
  return cases;
}

/**
 * The names of the cases that failed in any of `runs` runs; with `first`, only the first to
 * fail (a broken store can make the later cases wait out their deadlines).
 */
async function failures(
  makeStore: () => LockStore,
  prefix: string,
  runs = 1,
  first = false,
): Promise<string[]> {
  const cases = [...collect(makeStore, prefix)];
  expect(cases.length, `no case named like "${prefix}"`).toBeGreaterThan(0);
  const failed: string[] = [];
  for (const [name, run] of cases) {
    for (let i = 0; i < runs; i++) {
      if (
        await run().then(
          () => false,
          () => true,
        )
      ) {
        failed.push(name);
        break;
      }
    }
    if (first && failed.length > 0) break;
  }
  if (process.env.SHOW_FAILURES) console.log(prefix, failed);
  return failed;
}

// Broken versions of each capability: each breaks one promise, which the cases must catch.

/** Takes keys one at a time and keeps what it took when one is refused. */
const partialKeys = (memory: MemoryStore): StoreCapabilities => ({
  keys: {
    ...memory.capabilities.keys,
    async acquire(keys, owner, ttlMs) {
      const fences: (bigint | undefined)[] = [];
      for (const key of keys) {
        const got = await memory.acquire(key, owner, ttlMs);
        if (got === null) return null;
        fences.push(got.fence);
      }
      return { fences };
    },
  },
});

/** Checks every key, then takes them after a pause in which another caller does the same. */
const checkThenTakeKeys = (memory: MemoryStore): StoreCapabilities => ({
  keys: {
    ...memory.capabilities.keys,
    async acquire(keys, owner, ttlMs) {
      for (const key of keys) {
        const info = await memory.inspect(key);
        if (info !== null && info.owner !== owner) return null;
      }
      await tick();
      const fences: (bigint | undefined)[] = [];
      for (const key of keys) {
        const info = await memory.inspect(key);
        if (info !== null && info.owner !== owner) await memory.release(key, info.owner);
        fences.push((await memory.acquire(key, owner, ttlMs))?.fence);
      }
      return { fences };
    },
  },
});

/** Releases and extends whatever the keys hold, whoever owns them. */
const anyOwnerKeys = (memory: MemoryStore): StoreCapabilities => {
  const keys: ManyKeys = memory.capabilities.keys;
  const ownerOf = async (list: readonly string[]) => (await memory.inspect(list[0]!))?.owner ?? '';
  return {
    keys: {
      acquire: keys.acquire,
      release: async (list, _owner, keepMs) => keys.release(list, await ownerOf(list), keepMs),
      extend: async (list, _owner, ttlMs) => keys.extend(list, await ownerOf(list), ttlMs),
    },
  };
};

/** Shared leases with one request field or result changed. */
function shared(
  leases: SharedLeases,
  change: (request: SharedRequest) => SharedRequest,
  result: (got: Acquired | null) => Acquired | null = (got) => got,
): SharedLeases {
  return {
    acquire: async (key, owner, ttlMs, request) =>
      result(await leases.acquire(key, owner, ttlMs, change(request))),
    release: (key, owner, keepMs) => leases.release(key, owner, keepMs),
    extend: (key, owner, ttlMs) => leases.extend(key, owner, ttlMs),
    inspect: (key) => leases.inspect(key),
    onRelease: (key, listener) => leases.onRelease!(key, listener),
  };
}

/** Without `lineMs`: nobody keeps a place, so the first to ask after a release wins. */
const noLine = ({ lineMs: _lineMs, ...request }: SharedRequest): SharedRequest => request;

/** Counts live permits, then takes one after a pause in which another caller counts too. */
function countThenTake(leases: SharedLeases): SharedLeases {
  return {
    ...shared(leases, (request) => request),
    async acquire(key, owner, ttlMs, request) {
      const live = (await leases.inspect(key)).length;
      if (live + request.weight > request.limit) return null;
      await tick();
      return leases.acquire(key, owner, ttlMs, { ...request, limit: Number.MAX_SAFE_INTEGER });
    },
  };
}

const broken: [string, string, () => LockStore, number][] = [
  [
    'several keys taken one at a time, keeping a partial set',
    'several keys:',
    over(partialKeys),
    1,
  ],
  ['several keys checked, then taken', 'several keys:', over(checkThenTakeKeys), 3],
  ['several keys released and extended for any owner', 'several keys:', over(anyOwnerKeys), 1],
  [
    'permits admitting one more than the limit',
    'permits:',
    over((m) => ({
      permits: shared(m.capabilities.permits, (r) => ({ ...r, limit: r.limit + 1 })),
    })),
    1,
  ],
  [
    'permits without a line',
    'permits:',
    over((m) => ({ permits: shared(m.capabilities.permits, noLine) })),
    1,
  ],
  [
    'permits sharing one fence',
    'permits:',
    over((m) => ({
      permits: shared(
        m.capabilities.permits,
        (r) => r,
        (got) => got && { fence: 1n },
      ),
    })),
    1,
  ],
  [
    'permits counted, then taken',
    'permits:',
    over((m) => ({ permits: countThenTake(m.capabilities.permits) })),
    3,
  ],
  [
    'writers weighing as readers',
    'readers and writers:',
    over((m) => ({
      readersWriters: shared(m.capabilities.readersWriters, (r) => ({ ...r, weight: 1 })),
    })),
    1,
  ],
  [
    'readers and writers without a line',
    'readers and writers:',
    over((m) => ({ readersWriters: shared(m.capabilities.readersWriters, noLine) })),
    1,
  ],
  [
    "readers with a fence of their own, not the writer's",
    'readers and writers:',
    over((m) => ({
      readersWriters: shared(m.capabilities.readersWriters, (r) => ({ ...r, shareFence: false })),
    })),
    1,
  ],
];

describe('conformance: the capability cases', () => {
  it.each(['several keys:', 'permits:', 'readers and writers:'])(
    'pass the memory store’s capabilities shared by instances (%s)',
    async (prefix) => {
      expect(await failures(over(), prefix)).toEqual([]);
    },
  );

  it.each(broken)('catch %s', async (_flaw, prefix, makeStore, runs) => {
    expect(await failures(makeStore, prefix, runs, true)).not.toEqual([]);
  });

  it('skip a store that does not declare the capability', async () => {
    const bare = over();
    const makeStore = () => ({ ...bare(), capabilities: {} });
    expect(await failures(makeStore, 'permits:')).toEqual([]);
  });
});
