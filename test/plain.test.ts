import { randomBytes } from 'node:crypto';
import { Lock, LockedError, type PlainCache, plainCacheStore } from 'cachelock';
import { delayCalls, runConformance } from 'cachelock/testing';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { forceRelease } from '../src/cli/release.js';

interface MapCacheOptions {
  /** Keep every value until it is deleted, as some custom caches do. */
  ignoresTtl?: boolean;
  /**
   * Count the ttl in whole seconds, rounded down: what a cache on memcached does at worst, whose
   * once-a-second clock can skip a second.
   */
  wholeSeconds?: boolean;
  now?: () => number;
}

/**
 * The seed's kind of custom cache: a Map of expiring entries with get, set and delete, and
 * add, compareAndSet and compareAndDelete, each checking and writing in one synchronous step
 * (atomic for everyone sharing this Map).
 */
function mapCache({
  ignoresTtl = false,
  wholeSeconds = false,
  now = Date.now,
}: MapCacheOptions = {}): Required<PlainCache> {
  const entries = new Map<string, { value: unknown; expiresAt: number }>();
  const live = (key: string) => {
    const entry = entries.get(key);
    if (entry && !ignoresTtl && entry.expiresAt <= now()) entries.delete(key);
    return entries.get(key);
  };
  const put = (key: string, value: unknown, ttlMs: number) => {
    const keptMs = wholeSeconds ? Math.floor(ttlMs / 1_000) * 1_000 : ttlMs;
    entries.set(key, { value, expiresAt: now() + keptMs });
  };
  return {
    get: async (key) => live(key)?.value,
    set: async (key, value, ttlMs) => put(key, value, ttlMs),
    delete: async (key) => entries.delete(key),
    add: async (key, value, ttlMs) => {
      if (live(key)) return false;
      put(key, value, ttlMs);
      return true;
    },
    compareAndSet: async (key, expected, value, ttlMs) => {
      if (live(key)?.value !== expected) return false;
      put(key, value, ttlMs);
      return true;
    },
    compareAndDelete: async (key, expected) => {
      if (live(key)?.value !== expected) return false;
      return entries.delete(key);
    },
  };
}

/** `cache` without the named methods. */
function without<T extends object>(cache: T, ...names: (keyof T)[]): T {
  const copy = { ...cache };
  for (const name of names) delete copy[name];
  return copy;
}

// Each store sees the shared cache through its own client with random pauses around every call,
// as two processes on a network do: the steps of one operation interleave with the other's. Some
// clients are slower than others, which widens the windows a store must not leave open.
const pauseMs = () => (Math.random() < 0.5 ? 1 : 8);

for (const ignoresTtl of [false, true]) {
  const shared = mapCache({ ignoresTtl });
  runConformance({
    name: `plain-cache adapter with add, compareAndSet and compareAndDelete${ignoresTtl ? ', over a cache that ignores TTLs' : ''}: conformance`,
    describe,
    it,
    makeStore: () => plainCacheStore(delayCalls(shared, pauseMs())),
  });
}

// Not atomic across processes: the adapter warns once per cache (CACHELOCK_NON_ATOMIC) and must
// still be correct within one process, which is all the suite holds it to.
const addOnly = without(mapCache(), 'compareAndSet', 'compareAndDelete');
runConformance({
  name: 'plain-cache adapter with add alone: conformance',
  describe,
  it,
  makeStore: () => plainCacheStore(addOnly),
});
const getSetDelete = without(mapCache(), 'add', 'compareAndSet', 'compareAndDelete');
runConformance({
  name: 'plain-cache adapter with get, set and delete alone: conformance',
  describe,
  it,
  makeStore: () => plainCacheStore(getSetDelete),
});

const key = (label: string) => `cachelock:plain:${label}:${randomBytes(6).toString('hex')}`;

describe('plain-cache adapter: two processes over one cache', () => {
  /**
   * Two adapters over one cache, each through its own delayed client, race for a key that holds
   * an expired lease (left by a holder that died); count the rounds that granted it to both, and
   * those that granted it to neither.
   */
  async function race(cache: PlainCache, rounds: number) {
    const [first, second] = [0, 1].map(() => plainCacheStore(delayCalls(cache, 5)));
    let doubles = 0;
    let nobody = 0;
    for (let round = 0; round < rounds; round++) {
      const k = key('double');
      const dead = JSON.stringify({ owner: 'h:1:dead:1', expiresAt: Date.now() - 1 });
      await cache.set(k, dead, 60_000);
      const [a, b] = await Promise.all([
        first!.acquire(k, `h:1:a:${round}`, 60_000),
        second!.acquire(k, `h:2:b:${round}`, 60_000),
      ]);
      if (a !== null && b !== null) doubles++;
      if (a === null && b === null) nobody++;
    }
    return { doubles, nobody };
  }

  it('grants an expired lease to exactly one of them over a cache with the three atomic methods', async () => {
    // Before the fix (get, delete, add), 25 to 40 of 200 rounds granted the key twice.
    expect(await race(mapCache({ ignoresTtl: true }), 200)).toEqual({ doubles: 0, nobody: 0 });
    expect(await race(mapCache(), 200)).toEqual({ doubles: 0, nobody: 0 });
  }, 60_000);

  it('does so too with add and compareAndDelete, clearing the expired lease against the value read', async () => {
    const cache = without(mapCache({ ignoresTtl: true }), 'compareAndSet');
    expect(await race(cache, 200)).toEqual({ doubles: 0, nobody: 0 });
  }, 60_000);

  it('with add alone, never grants one key to both: the expired lease waits for the cache to drop it', async () => {
    const cache = without(mapCache(), 'compareAndSet', 'compareAndDelete');
    expect(await race(cache, 200)).toEqual({ doubles: 0, nobody: 200 });
  }, 60_000);
});

/** `cache`, with the ttl of each `add` it is asked for written down in `ttls`. */
function recordingAdd<C extends Pick<Required<PlainCache>, 'add'>>(inner: C) {
  const ttls: number[] = [];
  const cache = {
    ...inner,
    add: (k: string, v: string, ttlMs: number) => {
      ttls.push(ttlMs);
      return inner.add(k, v, ttlMs);
    },
  };
  return { cache, ttls };
}

describe('plain-cache adapter: a cache that drops values early', () => {
  it('keeps a live lease over a cache that counts whole seconds, with a ttl a few seconds longer than the lease', async () => {
    let t = 1_000_000;
    const now = () => t;
    const cache = mapCache({ wholeSeconds: true, now });
    const [first, second] = [0, 1].map(() => plainCacheStore(cache, { now }));
    const k = key('early');
    expect(await first!.acquire(k, 'h:1:a:1', 1_500)).not.toBeNull();
    // The cache would have dropped a value given 1.5 s after one second.
    t += 1_200;
    expect(await second!.acquire(k, 'h:2:b:1', 1_500)).toBeNull();
    expect(await first!.extend(k, 'h:1:a:1', 1_500)).toBe(true);
    t += 1_200;
    expect(await second!.acquire(k, 'h:2:b:1', 1_500)).toBeNull();
    // Over by the value's own expiry: the next holder takes it, and its release leaves nothing.
    t += 400;
    expect(await second!.acquire(k, 'h:2:b:1', 1_500)).not.toBeNull();
    expect(await second!.release(k, 'h:2:b:1')).toBe(true);
    expect(await cache.get(k)).toBeUndefined();
  });

  it('never asks the cache to keep a value past what a timer counts, unless the lease is longer', async () => {
    const { cache, ttls } = recordingAdd(mapCache());
    const store = plainCacheStore(cache);
    const k = key('long');
    expect(await store.acquire(k, 'h:1:a:1', 2 ** 31 - 2_000)).not.toBeNull();
    expect(await store.release(k, 'h:1:a:1')).toBe(true);
    expect(await store.acquire(k, 'h:1:a:2', 1_200)).not.toBeNull();
    expect(ttls).toEqual([2 ** 31 - 1, 5_000]);
  });

  it('gives a cache with add alone the ttl as is: its expiry is the one that frees the key', async () => {
    const { cache, ttls } = recordingAdd(without(mapCache(), 'compareAndSet', 'compareAndDelete'));
    const store = plainCacheStore(cache);
    const k = key('add-only');
    expect(await store.acquire(k, 'h:1:a:1', 1_500)).not.toBeNull();
    expect(ttls).toEqual([1_500]);
    await store.release(k, 'h:1:a:1');
    // Its warning (a cache with add alone) is emitted on the next tick: here, not in a later test.
    await new Promise((resolve) => setImmediate(resolve));
  });
});

describe('plain-cache adapter: what it says about itself', () => {
  let warnings: (Error & { code?: string })[];
  const onWarning = (warning: Error) => warnings.push(warning);
  beforeEach(() => {
    warnings = [];
    process.on('warning', onWarning);
  });
  afterEach(() => {
    process.off('warning', onWarning);
  });
  const nonAtomic = async () => {
    // Warnings are emitted on the next tick.
    await new Promise((resolve) => setImmediate(resolve));
    return warnings.filter((w) => w.code === 'CACHELOCK_NON_ATOMIC').map((w) => w.message);
  };

  it('is atomic only with add, compareAndSet and compareAndDelete, and warns once per cache naming what is missing', async () => {
    const full = mapCache();
    expect(plainCacheStore(full).atomic).toBe(true);
    expect(await nonAtomic()).toEqual([]);

    const cases: [(keyof PlainCache)[], RegExp][] = [
      [
        ['compareAndSet', 'compareAndDelete'],
        /no compareAndSet, compareAndDelete, so acquiring is atomic, but an extend or release that straddles/,
      ],
      [['compareAndDelete'], /no compareAndDelete, so acquiring is atomic/],
      [['compareAndSet'], /no compareAndSet, so acquiring is atomic/],
      [['add'], /no add, so its locks are exclusive only within this process/],
      [
        ['add', 'compareAndSet', 'compareAndDelete'],
        /no add, compareAndSet, compareAndDelete, so its locks are exclusive only within this process/,
      ],
    ];
    for (const [missing, message] of cases) {
      const cache = without(mapCache(), ...missing);
      expect(plainCacheStore(cache).atomic, `without ${missing.join(', ')}`).toBe(false);
      plainCacheStore(cache);
      const said = await nonAtomic();
      expect(said, `without ${missing.join(', ')}`).toHaveLength(1);
      expect(said[0]).toMatch(message);
      warnings = [];
    }
  });
});

describe('plain-cache adapter: a value cachelock did not write', () => {
  const variants: [string, () => PlainCache][] = [
    ['the three atomic methods', () => mapCache()],
    ['add alone', () => without(mapCache(), 'compareAndSet', 'compareAndDelete')],
    [
      'get, set and delete alone',
      () => without(mapCache(), 'add', 'compareAndSet', 'compareAndDelete'),
    ],
  ];
  // python-cachelock stores 1; other programs store whatever they like.
  const foreign: unknown[] = [
    1,
    '1',
    'busy',
    '{"a":1}',
    '{"owner":5,"expiresAt":1}',
    '{"owner":"x"}',
    { owner: 'x' },
  ];

  // python-cachelock's test_lock_should_raises_lock_error: a key someone else set means locked.
  it('means the lock is held: acquire raises LockedError naming an unknown holder', async () => {
    for (const [name, make] of variants) {
      const cache = make();
      const k = key('seed');
      await cache.set(k, 1 as never, 60_000);
      const lock = new Lock(k, { cache, prefix: '' });
      const error = await lock.acquire().then(
        () => undefined,
        (e: unknown) => e,
      );
      expect(error, name).toBeInstanceOf(LockedError);
      expect((error as LockedError).message).toMatch(/held by an unknown owner/);
      expect((error as LockedError).holder?.owner).toBe('');
      expect(await lock.tryAcquire()).toBe(false);
      expect(await cache.get(k), `${name}: the value is untouched`).toBe(1);
      expect(await Lock.inspect(k, { cache, prefix: '' })).toEqual({
        owner: '',
        host: undefined,
        pid: undefined,
        ttlMs: Number.POSITIVE_INFINITY,
        fence: undefined,
      });
    }
  });

  it('is never taken, overwritten or deleted by acquire, extend or release', async () => {
    for (const [name, make] of variants) {
      const cache = make();
      const store = plainCacheStore(cache);
      for (const value of foreign) {
        const k = key('foreign');
        await cache.set(k, value as never, 60_000);
        const what = `${name}, ${JSON.stringify(value)}`;
        const someone = 'host:1:random:1';
        expect(await store.acquire(k, someone, 60_000), what).toBeNull();
        expect(await store.extend(k, someone, 60_000), what).toBe(false);
        expect(await store.release(k, someone), what).toBe(false);
        expect(await store.release(k, someone, 1_000), what).toBe(false);
        expect(await cache.get(k), what).toEqual(value);
        expect((await store.inspect(k))?.owner, what).toBe('');
      }
    }
  });

  it('is cleared by a forced release, and only by that', async () => {
    for (const [name, make] of variants) {
      const cache = make();
      const k = key('forced');
      await cache.set(k, 1 as never, 60_000);
      const write = vi.spyOn(process.stdout, 'write').mockImplementation(() => true);
      try {
        const request = { command: 'release', key: k, cache, prefix: '' } as const;
        expect(await forceRelease(request as never), name).toBe(0);
        expect(write.mock.calls.join('')).toMatch(/released .* held by an unknown owner/);
      } finally {
        write.mockRestore();
      }
      expect(await cache.get(k), name).toBeUndefined();
      const lock = await Lock.acquire(k, { cache, prefix: '' });
      expect(lock.held).toBe(true);
      // A release as the unknown owner never touches a lease cachelock wrote.
      expect(await plainCacheStore(cache).release(k, '')).toBe(false);
      expect(await lock.release()).toBe(true);
    }
  });
});
