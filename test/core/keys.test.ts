import {
  Lock,
  LockedError,
  type LockStore,
  LockTimeoutError,
  type MemoryStore,
  memoryStore,
} from 'cachelock';
import { describe, expect, it } from 'vitest';

let n = 0;
const key = (label = 'k') => `keys-test-${process.pid}-${label}-${++n}`;

/** The memory store without its capabilities: several keys are taken one at a time. */
function withoutCapabilities(store: MemoryStore, push = true): LockStore {
  const bare: LockStore = {
    kind: store.kind,
    atomic: store.atomic,
    acquire: (k, owner, ttlMs) => store.acquire(k, owner, ttlMs),
    release: (...args) => store.release(...args),
    extend: (...args) => store.extend(...args),
    inspect: (...args) => store.inspect(...args),
  };
  if (push) bare.onRelease = (k, listener) => store.onRelease(k, listener);
  return bare;
}

const stores: [string, () => { cache: LockStore; memory: MemoryStore }][] = [
  [
    'in one step (keys capability)',
    () => {
      const memory = memoryStore();
      return { cache: memory, memory };
    },
  ],
  [
    'one at a time, in order',
    () => {
      const memory = memoryStore();
      return { cache: withoutCapabilities(memory), memory };
    },
  ],
  [
    'one at a time, polling',
    () => {
      const memory = memoryStore();
      return { cache: withoutCapabilities(memory, false), memory };
    },
  ],
];

describe.each(stores)('a lock on several keys, %s', (_how, make) => {
  it('takes every key or none, and names the keys, fences and the first held key', async () => {
    const { cache, memory } = make();
    const [a, b, c] = [key('a'), key('b'), key('c')];
    const blocker = await Lock.acquire(b, { cache });
    const error = await Lock.acquire([a, b, c], { cache }).catch((e) => e);
    expect(error).toBeInstanceOf(LockedError);
    expect(error.key).toBe(`${a}, ${b}, ${c}`);
    expect(error.heldKey).toBe(b);
    expect(error.message).toContain(`"${b}"`);
    expect(error.holder.owner).toMatch(/:/);
    // Nothing of the set was left taken.
    expect(await memory.inspect(`cachelock:${a}`)).toBeNull();
    expect(await memory.inspect(`cachelock:${c}`)).toBeNull();
    await blocker.release();

    const all = await Lock.acquire([c, a, b, a], { cache });
    expect(all.keys).toEqual([c, a, b]);
    expect(all.key).toBe(`${c}, ${a}, ${b}`);
    expect(all.fence).toBeUndefined();
    expect([...all.fences.keys()]).toEqual([c, a, b]);
    for (const k of [a, b, c]) {
      const info = await memory.inspect(`cachelock:${k}`);
      expect(info?.fence).toBe(all.fences.get(k));
    }
    expect(await new Lock(a, { cache }).tryAcquire()).toBe(false);
    expect(await all.release()).toBe(true);
    for (const k of [a, b, c]) expect(await memory.inspect(`cachelock:${k}`)).toBeNull();
  });

  it('one key in an array is that key’s lock; an empty array is a TypeError', async () => {
    const { cache } = make();
    const k = key();
    const one = await Lock.acquire([k], { cache });
    expect(one.key).toBe(k);
    expect(one.fence).toBeDefined();
    expect(one.fences.get(k)).toBe(one.fence);
    expect(await new Lock(k, { cache }).tryAcquire()).toBe(false);
    await one.release();
    expect(() => new Lock([], { cache })).toThrow(TypeError);
    expect(() => new Lock([], { cache })).toThrow(/at least one key/);
    expect(() => new Lock([k, ''], { cache })).toThrow(/keys\[1\] must be a non-empty string/);
  });

  it('release is true only if every key was still held', async () => {
    let now = 1_000_000;
    const memory = memoryStore({ now: () => now });
    const cache =
      make === stores[0]![1] ? memory : withoutCapabilities(memory, make === stores[1]![1]);
    const [a, b] = [key('a'), key('b')];
    const lock = await Lock.acquire([a, b], { cache, ttl: 1_000, autoExtend: false });
    now += 1_001;
    // Another owner takes one key after the lease ran out; the other is still free.
    const thief = await Lock.acquire(b, { cache });
    expect(await lock.release()).toBe(false);
    expect((await memory.inspect(`cachelock:${b}`))?.owner).not.toBe('');
    expect(thief.held).toBe(true);
    await thief.release();
  });

  it('[a, b] and [b, a] never deadlock, and never hold together', async () => {
    const { cache } = make();
    const [a, b] = [key('a'), key('b')];
    let inside = 0;
    let most = 0;
    let sections = 0;
    const worker = async (keys: string[]) => {
      for (let i = 0; i < 25; i++) {
        await new Lock(keys, { cache, wait: '10s' }).run(async () => {
          inside++;
          most = Math.max(most, inside);
          await new Promise((resolve) => setImmediate(resolve));
          inside--;
          sections++;
        });
      }
    };
    await Promise.all([worker([a, b]), worker([b, a]), worker([a]), worker([b, a])]);
    expect(most).toBe(1);
    expect(sections).toBe(100);
  });

  it('waits for the refused key and gives up with LockTimeoutError naming it', async () => {
    const { cache } = make();
    const [a, b] = [key('a'), key('b')];
    const blocker = await Lock.acquire(a, { cache });
    const timedOut = await Lock.acquire([a, b], { cache, wait: 30 }).catch((e) => e);
    expect(timedOut).toBeInstanceOf(LockTimeoutError);
    expect(timedOut.heldKey).toBe(a);
    const waiting = Lock.acquire([b, a], { cache, wait: '5s' });
    setTimeout(() => void blocker.release(), 20);
    const both = await waiting;
    expect(both.held).toBe(true);
    await both.release();
  });

  it('extends every key while held, and is lost as a whole when one is taken', async () => {
    const { cache, memory } = make();
    const [a, b] = [key('a'), key('b')];
    const lost: Error[] = [];
    const lock = await Lock.acquire([a, b], {
      cache,
      ttl: 90,
      onLost: (error) => lost.push(error),
    });
    await new Promise((resolve) => setTimeout(resolve, 200));
    expect(lock.held).toBe(true);
    expect((await memory.inspect(`cachelock:${a}`))!.ttlMs).toBeGreaterThan(0);
    // Someone frees one key by force (as the CLI can) and takes it.
    const info = await memory.inspect(`cachelock:${b}`);
    await memory.release(`cachelock:${b}`, info!.owner);
    const thief = await Lock.acquire(b, { cache });
    await expect.poll(() => lost.length, { timeout: 2_000 }).toBe(1);
    expect(lock.signal.aborted).toBe(true);
    expect(await lock.release()).toBe(false);
    expect(thief.held).toBe(true);
    // The lost lock gives its other key back rather than sitting on it.
    await expect.poll(() => memory.inspect(`cachelock:${a}`), { timeout: 2_000 }).toBeNull();
    await thief.release();
  });
});

describe('a lock on several keys and single-key locks', () => {
  it('exclude each other: Lock(a) blocks Lock([a, b]) and the reverse', async () => {
    const cache = memoryStore();
    const [a, b] = [key('a'), key('b')];
    const pair = await Lock.acquire([a, b], { cache });
    expect(await new Lock(a, { cache }).tryAcquire()).toBe(false);
    expect(await new Lock(b, { cache }).tryAcquire()).toBe(false);
    await pair.release();
    const single = await Lock.acquire(a, { cache });
    expect(await new Lock([b, a], { cache }).tryAcquire()).toBe(false);
    await single.release();
  });
});

describe('a store that takes several keys in one step', () => {
  it('is asked once per attempt, never key by key', async () => {
    const memory = memoryStore();
    const calls: string[] = [];
    const keys = memory.capabilities.keys;
    const cache: LockStore = {
      ...withoutCapabilities(memory),
      acquire: (k, owner, ttlMs) => {
        calls.push(`acquire ${k}`);
        return memory.acquire(k, owner, ttlMs);
      },
      capabilities: {
        keys: {
          acquire: (list, owner, ttlMs) => {
            calls.push(`all ${list.length}`);
            return keys.acquire(list, owner, ttlMs);
          },
          release: (list, owner, keepMs) => {
            calls.push(`release all ${list.length}`);
            return keys.release(list, owner, keepMs);
          },
          extend: (list, owner, ttlMs) => keys.extend(list, owner, ttlMs),
        },
      },
    };
    const lock = await Lock.acquire([key('a'), key('b'), key('c')], { cache });
    expect(await lock.release()).toBe(true);
    expect(calls).toEqual(['all 3', 'release all 3']);
  });
});

describe('a set that waits gives back what it took', () => {
  it('in one call where the store takes sets, not a release per key at once', async () => {
    const memory = memoryStore();
    const many = memory.capabilities.keys!;
    let single = 0;
    const givenBack: string[][] = [];
    const store: LockStore = {
      kind: memory.kind,
      atomic: memory.atomic,
      acquire: (k, owner, ttlMs) => memory.acquire(k, owner, ttlMs),
      release: (...args) => {
        single++;
        return memory.release(...args);
      },
      extend: (...args) => memory.extend(...args),
      inspect: (...args) => memory.inspect(...args),
      onRelease: (k, listener) => memory.onRelease(k, listener),
      capabilities: {
        keys: {
          acquire: (...args) => many.acquire(...args),
          release: (keys, ...rest) => {
            givenBack.push([...keys]);
            return many.release(keys, ...rest);
          },
          extend: (...args) => many.extend(...args),
        },
      },
    };
    const keys = ['a', 'b', 'c', 'd', 'e'].map((label) => key(label));
    // The third key is held: the set takes the first two, finds the third held, and gives back.
    expect(await memory.acquire(keys[2]!, 'blocker', 10_000)).not.toBeNull();
    const lock = new Lock(keys, { cache: store, prefix: '', wait: '5s' });
    const waiting = lock.acquire();
    await expect.poll(() => givenBack.length, { timeout: 2_000 }).toBeGreaterThan(0);
    expect(single).toBe(0);
    expect(givenBack[0]).toEqual(expect.arrayContaining([keys[0], keys[1]]));
    expect(await memory.release(keys[2]!, 'blocker')).toBe(true);
    await waiting;
    expect(lock.held).toBe(true);
    await lock.release();
  });
});

describe('a set waiting on the memory store', () => {
  it('lets the event loop run while it waits, and is served when the held key is freed', async () => {
    const memory = memoryStore();
    const keys = ['a', 'b', 'c', 'd'].map((label) => key(label));
    expect(await memory.acquire(keys[2]!, 'blocker', 10_000)).not.toBeNull();
    const lock = new Lock(keys, { cache: memory, prefix: '', wait: '3s' });
    const started = performance.now();
    let timerAt: number | undefined;
    // Giving back the keys it took woke the set itself, in a loop of promises alone: the timer
    // that frees the held key never ran, and the wait ran out.
    setTimeout(() => {
      timerAt = performance.now() - started;
      void memory.release(keys[2]!, 'blocker');
    }, 100);
    await lock.acquire();
    expect(timerAt).toBeDefined();
    expect(timerAt!).toBeLessThan(1_000);
    expect(lock.held).toBe(true);
    await lock.release();
  });
});
