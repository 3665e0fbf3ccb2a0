import {
  closeAll,
  configure,
  currentLock,
  Lock,
  LockError,
  LockedError,
  LockLostError,
  type LockStore,
  LockTimeoutError,
  memoryStore,
  StoreError,
} from 'cachelock';
import { afterEach, describe, expect, it } from 'vitest';
import { watchedCount } from '../../src/watchdog.js';

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
let n = 0;
const key = () => `lock-test-${process.pid}-${++n}`;

afterEach(() => {
  configure(null);
});

describe('acquire and release', () => {
  it('takes a free key, refuses a held one, and frees it on release', async () => {
    const cache = memoryStore();
    const k = key();
    const first = await Lock.acquire(k, { cache });
    expect(first.held).toBe(true);
    const error = await new Lock(k, { cache }).acquire().catch((e) => e);
    expect(error).toBeInstanceOf(LockedError);
    expect(error.code).toBe('LOCKED');
    expect(error.key).toBe(k);
    expect(error.message).toContain(k);
    expect(error.message).toMatch(
      new RegExp(`pid ${process.pid} on .+ for (\\d+\\.\\d|\\d+)s more`),
    );
    expect(await first.release()).toBe(true);
    expect(first.held).toBe(false);
    expect(await first.release()).toBe(false);
    const second = await Lock.acquire(k, { cache });
    expect(second.fence! > first.fence!).toBe(true);
    await second.release();
  });

  it('rejects a second acquire on a held instance, and allows re-acquiring after release', async () => {
    const lock = new Lock(key(), { cache: memoryStore() });
    await lock.acquire();
    const error = await lock.acquire().catch((e) => e);
    expect(error).toBeInstanceOf(LockError);
    expect(error).not.toBeInstanceOf(LockedError);
    expect(lock.held).toBe(true);
    await lock.release();
    await lock.acquire();
    expect(lock.held).toBe(true);
    await lock.release();
  });

  it('tryAcquire resolves false where acquire would reject with LockedError/LockTimeoutError', async () => {
    const cache = memoryStore();
    const k = key();
    const holder = await Lock.acquire(k, { cache });
    expect(await new Lock(k, { cache }).tryAcquire()).toBe(false);
    expect(await new Lock(k, { cache, wait: 30 }).tryAcquire()).toBe(false);
    await holder.release();
    const free = new Lock(k, { cache });
    expect(await free.tryAcquire()).toBe(true);
    await free.release();
  });

  it('tryAcquire asks nobody who holds the key; acquire does, for its message', async () => {
    const inner = memoryStore();
    let inspected = 0;
    const counting: LockStore = {
      kind: 'counting',
      atomic: true,
      acquire: (k, owner, ttlMs) => inner.acquire(k, owner, ttlMs),
      release: (k, owner, keepMs) => inner.release(k, owner, keepMs),
      extend: (k, owner, ttlMs) => inner.extend(k, owner, ttlMs),
      inspect: (k) => {
        inspected++;
        return inner.inspect(k);
      },
    };
    const k = key();
    const holder = await Lock.acquire(k, { cache: counting });
    expect(await new Lock(k, { cache: counting }).tryAcquire()).toBe(false);
    expect(inspected).toBe(0);
    await expect(new Lock(k, { cache: counting }).acquire()).rejects.toThrow(
      /for (\d+\.\d|\d+)s more/,
    );
    expect(inspected).toBe(1);
    await holder.release();
  });

  it('releases at the end of an await using block', async () => {
    const cache = memoryStore();
    const k = key();
    {
      await using lock = await Lock.acquire(k, { cache });
      expect(lock.held).toBe(true);
      expect(await cache.inspect(`cachelock:${k}`)).not.toBeNull();
    }
    expect(await cache.inspect(`cachelock:${k}`)).toBeNull();
  });

  it('uses the prefix inside the store and reports the key without it', async () => {
    const cache = memoryStore();
    const lock = await Lock.acquire('report', { cache, prefix: 'app1:' });
    expect(lock.key).toBe('report');
    expect((await cache.inspect('app1:report'))?.owner).toBeTypeOf('string');
    expect(await cache.inspect('cachelock:report')).toBeNull();
    await lock.release();
  });

  it('inspect tells who holds a key, for how long, and its fence', async () => {
    const cache = memoryStore();
    const k = key();
    expect(await Lock.inspect(k, { cache })).toBeNull();
    const lock = await Lock.acquire(k, { cache, ttl: '10s' });
    const holder = await Lock.inspect(k, { cache });
    expect(holder).toMatchObject({ pid: process.pid, fence: lock.fence });
    expect(holder!.host).toBeTypeOf('string');
    expect(holder!.ttlMs).toBeGreaterThan(9_000);
    expect(holder!.ttlMs).toBeLessThanOrEqual(10_000);
    await lock.release();
  });
});

describe('waiting', () => {
  it('waits for a release and is woken by it', async () => {
    const cache = memoryStore();
    const k = key();
    const holder = await Lock.acquire(k, { cache });
    const waiter = new Lock(k, { cache, wait: '5s' });
    const pending = waiter.acquire();
    await sleep(30);
    const releasedAt = performance.now();
    await holder.release();
    await pending;
    expect(waiter.held).toBe(true);
    expect(performance.now() - releasedAt).toBeLessThan(1_000);
    await waiter.release();
  });

  it('takes the key once a dead holder lease expires, with no release event', async () => {
    const cache = memoryStore();
    const k = key();
    await cache.acquire(`cachelock:${k}`, 'a dead process', 150);
    const lock = await Lock.acquire(k, { cache, wait: '5s' });
    expect(lock.held).toBe(true);
    await lock.release();
  });

  it('gives up with LockTimeoutError when the wait runs out', async () => {
    const cache = memoryStore();
    const k = key();
    const holder = await Lock.acquire(k, { cache });
    const started = performance.now();
    const error = await new Lock(k, { cache, wait: 120 }).acquire().catch((e) => e);
    expect(error).toBeInstanceOf(LockTimeoutError);
    expect(error.code).toBe('TIMEOUT');
    expect(error.waitedMs).toBeGreaterThanOrEqual(100);
    expect(performance.now() - started).toBeGreaterThanOrEqual(110);
    expect(error.message).toContain(`pid ${process.pid}`);
    await holder.release();
  });

  it('rejects with the signal reason when aborted, and leaves no lock behind', async () => {
    const cache = memoryStore();
    const k = key();
    const holder = await Lock.acquire(k, { cache });
    const controller = new AbortController();
    const reason = new Error('shutting down');
    const waiter = new Lock(k, { cache, wait: 'forever', signal: controller.signal });
    const pending = waiter.acquire();
    setTimeout(() => controller.abort(reason), 30);
    await expect(pending).rejects.toBe(reason);
    expect(waiter.held).toBe(false);
    await holder.release();
    expect(await cache.inspect(`cachelock:${k}`)).toBeNull();
    const already = new Lock(key(), { cache, signal: AbortSignal.abort(reason) });
    await expect(already.acquire()).rejects.toBe(reason);
    expect(await cache.inspect(`cachelock:${already.key}`)).toBeNull();
  });

  it('serves waiters in one process in the order they came', async () => {
    const cache = memoryStore();
    const k = key();
    const holder = await Lock.acquire(k, { cache });
    const order: number[] = [];
    const waiters = [0, 1, 2, 3, 4].map(async (i) => {
      await sleep(i * 5);
      await new Lock(k, { cache, wait: '10s' }).run(async () => {
        order.push(i);
        await sleep(5);
      });
    });
    await sleep(60);
    await holder.release();
    await Promise.all(waiters);
    expect(order).toEqual([0, 1, 2, 3, 4]);
  });

  it('lets a waiter behind others time out or be aborted without costing the rest their turn', async () => {
    const cache = memoryStore();
    const k = key();
    const holder = await Lock.acquire(k, { cache });
    const controller = new AbortController();
    const reason = new Error('no longer needed');
    const order: string[] = [];
    const take = (name: string, options: { wait: number | string; signal?: AbortSignal }) =>
      new Lock(k, { cache, ...options }).acquire().then(
        async (lock) => {
          order.push(name);
          await sleep(5);
          await lock.release();
        },
        (error) => order.push(`${name}: ${error === reason ? 'aborted' : error.code}`),
      );
    const first = take('first', { wait: '10s' });
    const impatient = take('impatient', { wait: 40 });
    const aborted = take('aborted', { wait: '10s', signal: controller.signal });
    const last = take('last', { wait: '10s' });
    setTimeout(() => controller.abort(reason), 10);
    await Promise.all([impatient, aborted]);
    expect(order.sort()).toEqual(['aborted: aborted', 'impatient: TIMEOUT']);
    await holder.release();
    await Promise.all([first, last]);
    expect(order.slice(2)).toEqual(['first', 'last']);
  });

  it('hands the key from one waiter of the process to the next without waiting for a poll', async () => {
    const cache = memoryStore();
    const k = key();
    let left = 400;
    let inside = 0;
    let most = 0;
    const worker = async (index: number) => {
      const lock = new Lock(k, { cache, wait: '30s' });
      while (left > 0) {
        await lock.acquire();
        most = Math.max(most, ++inside);
        left--;
        // Half the workers hold across a tick, so the next in line is refused and then woken.
        if (index % 2 === 1) await null;
        inside--;
        await lock.release();
      }
    };
    const started = performance.now();
    await Promise.all([0, 1, 2, 3].map(worker));
    expect(most).toBe(1);
    // A hand-off that waited for the next poll (a second apart with push wake-ups) would take
    // minutes here.
    expect(performance.now() - started).toBeLessThan(10_000);
    expect(await cache.inspect(`cachelock:${k}`)).toBeNull();
  });

  it('does not stampede the store: one waiter per key talks to it', async () => {
    const inner = memoryStore();
    let attempts = 0;
    const counting: LockStore = {
      kind: 'counting',
      atomic: true,
      acquire: (k, owner, ttlMs) => {
        attempts++;
        return inner.acquire(k, owner, ttlMs);
      },
      release: (...args) => inner.release(...args),
      extend: (...args) => inner.extend(...args),
      inspect: (k) => inner.inspect(k),
    };
    const k = key();
    const holder = await Lock.acquire(k, { cache: counting });
    attempts = 0;
    const waiters = Array.from({ length: 20 }, () =>
      new Lock(k, { cache: counting, wait: '5s' }).acquire(),
    );
    await sleep(300);
    // 20 racing pollers would make hundreds of attempts in 300 ms; one polling head makes few.
    expect(attempts).toBeLessThan(20 + 40);
    await holder.release();
    for (const pending of waiters) await (await pending).release();
  });
});

describe('the lease', () => {
  it('is extended while held, and nothing is watched once released', async () => {
    const cache = memoryStore();
    const k = key();
    const lock = await Lock.acquire(k, { cache, ttl: 150 });
    await sleep(500);
    expect(lock.held).toBe(true);
    expect((await cache.inspect(`cachelock:${k}`))?.owner).toBeDefined();
    expect(lock.signal.aborted).toBe(false);
    await lock.release();
    expect(watchedCount()).toBe(0);
  });

  it('is lost when it runs out without autoExtend: signal aborts, onLost once, release false', async () => {
    const cache = memoryStore();
    const k = key();
    const lost: LockLostError[] = [];
    const lock = await Lock.acquire(k, {
      cache,
      ttl: 100,
      autoExtend: false,
      onLost: (e) => lost.push(e),
    });
    const signal = lock.signal;
    await sleep(250);
    expect(signal.aborted).toBe(true);
    expect(signal.reason).toBeInstanceOf(LockLostError);
    expect(signal.reason.code).toBe('LOST');
    expect(lost).toHaveLength(1);
    expect(lost[0]).toBe(signal.reason);
    expect(lock.held).toBe(false);
    expect(await lock.release()).toBe(false);
    expect(lost).toHaveLength(1);
    expect(watchedCount()).toBe(0);
  });

  it('leases that onLost releases or takes while the watchdog runs are left or watched as they should be', async () => {
    const cache = memoryStore();
    const [a, b, c] = [key(), key(), key()];
    let taken: Lock | undefined;
    let second: Lock | undefined;
    // a and b run out in the same tick; a's onLost releases b and takes c meanwhile.
    const lost: LockLostError[] = [];
    await Lock.acquire(a, {
      cache,
      ttl: 100,
      autoExtend: false,
      onLost: (error) => {
        lost.push(error);
        void second?.release();
        taken = new Lock(c, { cache, ttl: 300 });
        void taken.acquire();
      },
    });
    second = await Lock.acquire(b, { cache, ttl: 100, autoExtend: false });
    await sleep(1_500);
    expect(lost).toHaveLength(1);
    // c, taken during the tick, was watched and extended well past its 300 ms.
    expect(taken?.held).toBe(true);
    expect((await cache.inspect(`cachelock:${c}`))?.owner).toBeDefined();
    expect(watchedCount()).toBe(1);
    expect(await taken!.release()).toBe(true);
    expect(watchedCount()).toBe(0);
  });

  it('is lost when another owner takes the key, and the new holder is left alone', async () => {
    const cache = memoryStore();
    const k = key();
    const lost: LockLostError[] = [];
    const lock = await Lock.acquire(k, { cache, ttl: 150, onLost: (e) => lost.push(e) });
    const { owner } = (await cache.inspect(`cachelock:${k}`))!;
    await cache.release(`cachelock:${k}`, owner);
    const thief = await Lock.acquire(k, { cache, ttl: '10s' });
    await sleep(200);
    expect(lock.signal.aborted).toBe(true);
    expect(lost).toHaveLength(1);
    expect(await lock.release()).toBe(false);
    expect((await cache.inspect(`cachelock:${k}`))?.fence).toBe(thief.fence);
    await thief.release();
  });

  it('extend(ttl) renews now and rejects with LockLostError once the lease is gone', async () => {
    const cache = memoryStore();
    const k = key();
    const lock = await Lock.acquire(k, { cache, ttl: '1s', autoExtend: false });
    await lock.extend('20s');
    expect((await cache.inspect(`cachelock:${k}`))!.ttlMs).toBeGreaterThan(19_000);
    await lock.release();
    await expect(lock.extend()).rejects.toBeInstanceOf(LockLostError);
    await expect(lock.extend('-1s')).rejects.toThrow(/ttl must not be negative, got "-1s"/);
  });

  it('holdAtLeast keeps the key after release until that long after acquisition', async () => {
    const cache = memoryStore();
    const k = key();
    const lock = await Lock.acquire(k, { cache, holdAtLeast: 300 });
    expect(await lock.release()).toBe(true);
    expect(await new Lock(k, { cache }).tryAcquire()).toBe(false);
    await sleep(400);
    const next = new Lock(k, { cache });
    expect(await next.tryAcquire()).toBe(true);
    await next.release();
  });

  it('never keeps a process alive, whatever it holds', async () => {
    const { execFileSync } = await import('node:child_process');
    const started = performance.now();
    execFileSync(
      process.execPath,
      [
        '--input-type=module',
        '-e',
        "import { Lock } from 'cachelock'; await Lock.acquire('held-at-exit', { ttl: '1h' }); console.log('held');",
      ],
      { cwd: process.cwd(), timeout: 10_000 },
    );
    expect(performance.now() - started).toBeLessThan(10_000);
  });
});

describe('run', () => {
  it('acquires, passes the signal, releases, and returns what fn returns', async () => {
    const cache = memoryStore();
    const k = key();
    const lock = new Lock(k, { cache });
    const result = await lock.run(async (signal) => {
      expect(signal).toBe(lock.signal);
      expect(currentLock()).toBe(lock);
      expect(lock.held).toBe(true);
      return 42;
    });
    expect(result).toBe(42);
    expect(lock.held).toBe(false);
    expect(currentLock()).toBeUndefined();
    expect(await cache.inspect(`cachelock:${k}`)).toBeNull();
  });

  it('lets an error from fn win and still releases', async () => {
    const cache = memoryStore();
    const k = key();
    const boom = new Error('boom');
    await expect(
      new Lock(k, { cache, ttl: 100, autoExtend: false }).run(async () => {
        await sleep(200);
        throw boom;
      }),
    ).rejects.toBe(boom);
    await expect(new Lock(k, { cache }).run(() => Promise.reject(boom))).rejects.toBe(boom);
    expect(await cache.inspect(`cachelock:${k}`)).toBeNull();
  });

  it('rejects with LockLostError after fn settles when the lease was lost', async () => {
    const cache = memoryStore();
    let finished = false;
    const error = await new Lock(key(), { cache, ttl: 100, autoExtend: false })
      .run(async (signal) => {
        await sleep(200);
        expect(signal.aborted).toBe(true);
        finished = true;
        return 'done';
      })
      .catch((e) => e);
    expect(finished).toBe(true);
    expect(error).toBeInstanceOf(LockLostError);
  });
});

describe('store failures', () => {
  const failing = (
    what: Partial<Record<'acquire' | 'release' | 'extend' | 'inspect', boolean>>,
  ): LockStore => {
    const inner = memoryStore();
    const fail = () => Promise.reject(new Error('connection refused'));
    return {
      kind: 'failing',
      atomic: true,
      acquire: (k, owner, ttlMs) => (what.acquire ? fail() : inner.acquire(k, owner, ttlMs)),
      release: (...args) => (what.release ? fail() : inner.release(...args)),
      extend: (...args) => (what.extend ? fail() : inner.extend(...args)),
      inspect: (k) => (what.inspect ? fail() : inner.inspect(k)),
    } as LockStore;
  };

  it('a failing acquire is a StoreError with the cause, never a granted lock', async () => {
    const lock = new Lock(key(), { cache: failing({ acquire: true }) });
    const error = await lock.acquire().catch((e) => e);
    expect(error).toBeInstanceOf(StoreError);
    expect(error.code).toBe('STORE');
    expect(error.cause.message).toBe('connection refused');
    expect(lock.held).toBe(false);
    expect(await lock.tryAcquire().catch((e) => e)).toBeInstanceOf(StoreError);
    await expect(lock.run(() => 'ran')).rejects.toBeInstanceOf(StoreError);
    expect(watchedCount()).toBe(0);
  });

  it('an acquire whose reply is lost is undone, waiting or not, so the key is not stuck', async () => {
    const inner = memoryStore();
    // The store grants the lease but the reply never arrives: the caller sees a failure.
    const lostReply: LockStore = {
      kind: 'lost-reply',
      atomic: true,
      acquire: async (k, owner, ttlMs) => {
        await inner.acquire(k, owner, ttlMs);
        throw new Error('reply lost');
      },
      release: (...args) => inner.release(...args),
      extend: (...args) => inner.extend(...args),
      inspect: (k) => inner.inspect(k),
    };
    for (const wait of [0, '1s']) {
      const k = key();
      await expect(Lock.acquire(k, { cache: lostReply, wait })).rejects.toBeInstanceOf(StoreError);
      await sleep(5);
      expect(await inner.inspect(`cachelock:${k}`)).toBeNull();
    }
  });

  it('a failing release is a StoreError', async () => {
    const lock = await Lock.acquire(key(), { cache: failing({ release: true }) });
    await expect(lock.release()).rejects.toBeInstanceOf(StoreError);
    expect(watchedCount()).toBe(0);
  });

  it('extensions that keep failing end in a lost lease carrying the store error', async () => {
    const lock = await Lock.acquire(key(), { cache: failing({ extend: true }), ttl: 150 });
    const lost = await new Promise<LockLostError>((resolve) =>
      lock.signal.addEventListener('abort', () => resolve(lock.signal.reason)),
    );
    expect(lost).toBeInstanceOf(LockLostError);
    expect((lost.cause as Error).message).toBe('connection refused');
    expect(lost.message).toContain('could not be reached');
  });
});

describe('defaults and the cache', () => {
  it('configure sets defaults, returns the previous ones, and null clears them', async () => {
    const cache = memoryStore();
    expect(configure({ cache, ttl: '5s' })).toEqual({});
    expect(configure({ wait: 10 })).toEqual({ cache, ttl: '5s' });
    const lock = await Lock.acquire(key());
    expect((await cache.inspect(`cachelock:${lock.key}`))!.ttlMs).toBeLessThanOrEqual(5_000);
    await lock.release();
    configure(null);
    expect(configure({})).toEqual({});
  });

  it('resolves the cache: option, then configure, then CACHELOCK_URL, then memory', async () => {
    const optionStore = memoryStore();
    const configured = memoryStore();
    const k = key();
    const saved = process.env.CACHELOCK_URL;
    try {
      process.env.CACHELOCK_URL = 'memory:from-env';
      const fromEnv = await Lock.acquire(k);
      const again = new Lock(k);
      expect(await again.tryAcquire()).toBe(false);
      delete process.env.CACHELOCK_URL;
      const fromMemory = new Lock(k);
      expect(await fromMemory.tryAcquire()).toBe(true);
      configure({ cache: configured });
      const fromConfigure = await Lock.acquire(k);
      expect(await configured.inspect(`cachelock:${k}`)).not.toBeNull();
      const fromOption = await Lock.acquire(k, { cache: optionStore });
      expect(await optionStore.inspect(`cachelock:${k}`)).not.toBeNull();
      for (const lock of [fromEnv, fromMemory, fromConfigure, fromOption])
        expect(await lock.release()).toBe(true);
    } finally {
      if (saved === undefined) delete process.env.CACHELOCK_URL;
      else process.env.CACHELOCK_URL = saved;
      await closeAll();
    }
  });

  it('a URL names one shared store until closeAll', async () => {
    const k = key();
    const a = await Lock.acquire(k, { cache: 'memory:shared' });
    expect(await new Lock(k, { cache: 'memory:shared' }).tryAcquire()).toBe(false);
    expect(await new Lock(k, { cache: 'memory:other' }).tryAcquire()).toBe(true);
    await a.release();
    await closeAll();
  });

  it('a plain cache with add, compareAndSet and compareAndDelete is atomic and quiet; without them it warns once', async () => {
    const warnings: Array<Error & { code?: string }> = [];
    const onWarning = (w: Error & { code?: string }) => warnings.push(w);
    process.on('warning', onWarning);
    try {
      const map = new Map<string, string>();
      const withAdd = {
        get: (k: string) => map.get(k),
        set: (k: string, v: string) => void map.set(k, v),
        delete: (k: string) => map.delete(k),
        add: (k: string, v: string) => !map.has(k) && map.set(k, v) !== undefined,
        compareAndSet: (k: string, expected: unknown, v: string) =>
          map.get(k) === expected && map.set(k, v) !== undefined,
        compareAndDelete: (k: string, expected: unknown) =>
          map.get(k) === expected && map.delete(k),
      };
      const k = key();
      const a = await Lock.acquire(k, { cache: withAdd });
      expect(await new Lock(k, { cache: withAdd }).tryAcquire()).toBe(false);
      await a.release();
      const bare = { get: withAdd.get, set: withAdd.set, delete: withAdd.delete };
      const b = await Lock.acquire(key(), { cache: bare });
      await b.release();
      await (await Lock.acquire(key(), { cache: bare })).release();
      await sleep(10);
      const ours = warnings.filter((w) => w.code === 'CACHELOCK_NON_ATOMIC');
      expect(ours).toHaveLength(1);
    } finally {
      process.off('warning', onWarning);
    }
  });

  it('a plain cache that throws gives StoreError and no lock', async () => {
    const broken = {
      get: () => {
        throw new Error('cache down');
      },
      set: () => undefined,
      delete: () => undefined,
      add: () => {
        throw new Error('cache down');
      },
    };
    const error = await new Lock(key(), { cache: broken }).acquire().catch((e) => e);
    expect(error).toBeInstanceOf(StoreError);
    expect(error.cause.message).toBe('cache down');
  });
});
