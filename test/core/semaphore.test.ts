import {
  currentLock,
  Lock,
  LockedError,
  type LockStore,
  LockTimeoutError,
  memoryStore,
  Permit,
  ReadWriteLock,
  Semaphore,
} from 'cachelock';
import { describe, expect, it } from 'vitest';
import { watchedCount } from '../../src/watchdog.js';

let n = 0;
const key = (label = 'k') => `semaphore-test-${process.pid}-${label}-${++n}`;
const turn = () => new Promise((resolve) => setImmediate(resolve));

/** A store with only the required members: no capabilities. */
function plainStore(): LockStore {
  const store = memoryStore();
  return {
    kind: 'bare',
    atomic: true,
    acquire: (k, owner, ttlMs) => store.acquire(k, owner, ttlMs),
    release: (k, owner, keepMs) => store.release(k, owner, keepMs),
    extend: (k, owner, ttlMs) => store.extend(k, owner, ttlMs),
    inspect: (k) => store.inspect(k),
  };
}

describe('Semaphore', () => {
  it('checks permits and the store where it is made', () => {
    for (const permits of [0, -1, 1.5, Number.NaN, '2', undefined]) {
      expect(() => new Semaphore('s', { permits } as never)).toThrow(RangeError);
      expect(() => new Semaphore('s', { permits } as never)).toThrow(
        /permits must be an integer >= 1, got/,
      );
    }
    expect(() => new Semaphore('s', { permits: 1, wait: -1 })).toThrow(/wait/);
    expect(() => new Semaphore('', { permits: 1 })).toThrow(TypeError);
    expect(() => new Semaphore('s', { permits: 2, cache: plainStore() })).toThrow(TypeError);
    expect(() => new Semaphore('s', { permits: 2, cache: plainStore() })).toThrow(
      /Semaphore needs a store with the "permits" capability; the bare store .*has no capabilities.permits/,
    );
    expect(() => new ReadWriteLock('s', { cache: plainStore() })).toThrow(
      /ReadWriteLock needs a store with the "readersWriters" capability/,
    );
  });

  it('grants at most `permits` at once, each with its own rising fence', async () => {
    const cache = memoryStore();
    const k = key();
    const renders = new Semaphore(k, { permits: 3, cache });
    const held = [await renders.acquire(), await renders.acquire(), await renders.acquire()];
    for (const permit of held) {
      expect(permit).toBeInstanceOf(Permit);
      expect(permit.held).toBe(true);
      expect(permit.key).toBe(k);
    }
    expect(held[1]!.fence! > held[0]!.fence!).toBe(true);
    expect(held[2]!.fence! > held[1]!.fence!).toBe(true);
    expect(await renders.tryAcquire()).toBeNull();
    const refused = await renders.acquire().catch((e) => e);
    expect(refused).toBeInstanceOf(LockedError);
    expect(refused.key).toBe(k);
    const { holders } = await Semaphore.inspect(k, { cache });
    expect(holders.map((h) => h.fence)).toEqual(held.map((p) => p.fence));
    expect(holders[0]!.pid).toBe(process.pid);
    // A separate namespace: the lock and the read/write lock of the same name are free.
    const lock = new Lock(k, { cache });
    expect(await lock.tryAcquire()).toBe(true);
    const write = await new ReadWriteLock(k, { cache }).tryWrite();
    expect(write).not.toBeNull();
    await lock.release();
    await write!.release();
    expect(await held[1]!.release()).toBe(true);
    expect(await held[1]!.release()).toBe(false);
    const next = await renders.acquire();
    expect(next.fence! > held[2]!.fence!).toBe(true);
    for (const permit of [held[0]!, held[2]!, next]) await permit.release();
    expect((await Semaphore.inspect(k, { cache })).holders).toEqual([]);
    expect(cache.capabilities.permits.size).toBe(0);
  });

  it('serves waiters first come, first served, and tryAcquire does not jump the line', async () => {
    const cache = memoryStore();
    const k = key();
    const sem = new Semaphore(k, { permits: 1, cache, wait: '5s' });
    const first = await sem.acquire();
    const order: number[] = [];
    const waiters = [1, 2, 3].map((i) =>
      sem.acquire().then(async (permit) => {
        order.push(i);
        await turn();
        await permit.release();
      }),
    );
    await new Promise((resolve) => setTimeout(resolve, 30));
    expect(await new Semaphore(k, { permits: 1, cache }).tryAcquire()).toBeNull();
    // Even a process allowing more permits waits behind the line.
    expect(await new Semaphore(k, { permits: 5, cache }).tryAcquire()).toBeNull();
    await first.release();
    await Promise.all(waiters);
    expect(order).toEqual([1, 2, 3]);
  });

  it('waits, times out naming a holder, and frees an expired permit', async () => {
    let now = 1_000_000;
    const cache = memoryStore({ now: () => now });
    const k = key();
    const sem = new Semaphore(k, { permits: 1, cache, ttl: 1_000, autoExtend: false });
    const dead = await sem.acquire();
    const timedOut = await new Semaphore(k, { permits: 1, cache, wait: 20 })
      .acquire()
      .catch((e) => e);
    expect(timedOut).toBeInstanceOf(LockTimeoutError);
    expect(timedOut.holder.fence).toBe(dead.fence);
    now += 1_001; // the holder died: its lease runs out without a release
    const next = await sem.acquire();
    expect(next.fence! > dead.fence!).toBe(true);
    await next.release();
    expect(await dead.release()).toBe(false);
  });

  it('forgets a read/write key’s last write fence once its terms ran out, not before', async () => {
    let now = 1_000_000;
    const cache = memoryStore({ now: () => now });
    const rw = cache.capabilities.readersWriters;
    const write = { limit: 2 ** 30, weight: 2 ** 30 };
    const read = { limit: 2 ** 30, weight: 1, shareFence: true };
    for (let i = 0; i < 200; i++) {
      expect(await rw.acquire(`used-once-${i}`, 'w', 1_000, write)).not.toBeNull();
      expect(await rw.release(`used-once-${i}`, 'w')).toBe(true);
    }
    const w = await rw.acquire('kept', 'w', 1_000, write);
    await rw.release('kept', 'w');
    // Right after the release a reader still shares the writer's fence.
    expect((await rw.acquire('kept', 'r', 5_000, read))?.fence).toBe(w!.fence);
    await rw.release('kept', 'r');
    expect(rw.size).toBe(0);
    now += 1_001;
    // The reader's term keeps the fence; acquisitions going by sweep the others away.
    for (let i = 0; i < 100; i++) await rw.acquire(`other-${i}`, 'x', 10, write);
    expect(rw.fences).toBe(101);
    now += 5_000;
    for (let i = 0; i < 100; i++) await rw.acquire(`more-${i}`, 'x', 10, write);
    expect(rw.fences).toBe(100);
  });

  it('a waiter that gives up leaves the line at once', async () => {
    const cache = memoryStore();
    const k = key();
    const holder = await new Semaphore(k, { permits: 1, cache }).acquire();
    const controller = new AbortController();
    const waiting = new Semaphore(k, { permits: 1, cache, wait: '1m', signal: controller.signal })
      .acquire()
      .catch((e) => e);
    await new Promise((resolve) => setTimeout(resolve, 20));
    controller.abort(new Error('stop'));
    expect((await waiting).message).toBe('stop');
    await holder.release();
    // Its place in line (kept for seconds otherwise) is gone: a try gets the permit.
    const next = await new Semaphore(k, { permits: 1, cache }).tryAcquire();
    expect(next).not.toBeNull();
    await next!.release();
    expect(cache.capabilities.permits.size).toBe(0);
  });

  it('runs fn with a permit as currentLock(), extends it, and releases', async () => {
    const cache = memoryStore();
    const k = key();
    const sem = new Semaphore(k, { permits: 2, cache, ttl: 60 });
    const result = await sem.run(async (signal) => {
      const permit = currentLock();
      expect(permit).toBeInstanceOf(Permit);
      expect(permit!.signal).toBe(signal);
      await new Promise((resolve) => setTimeout(resolve, 150));
      expect(permit!.held).toBe(true);
      return 'done';
    });
    expect(result).toBe('done');
    expect((await Semaphore.inspect(k, { cache })).holders).toEqual([]);
    expect(watchedCount()).toBe(0);
  });

  it('a permit whose lease runs out is lost: onLost, signal, release false', async () => {
    const cache = memoryStore();
    const k = key();
    const lost: Error[] = [];
    const sem = new Semaphore(k, {
      permits: 1,
      cache,
      ttl: 40,
      autoExtend: false,
      onLost: (error) => lost.push(error),
    });
    const permit = await sem.acquire();
    await expect.poll(() => lost.length, { timeout: 2_000 }).toBe(1);
    expect(permit.signal.aborted).toBe(true);
    expect(permit.held).toBe(false);
    expect(lost[0]!.message).toContain(`lock "${k}" was lost`);
    expect(await permit.release()).toBe(false);
    const next = await sem.acquire();
    await next.release();
  });

  it('an unknown store is refused at the first acquisition', async () => {
    const sem = new Semaphore(key(), { permits: 1, cache: 'memory:' });
    // memory: has permits; a plain cache made from get/set/delete has not.
    await (await sem.acquire()).release();
    const plain = new Map<string, unknown>();
    const cache = {
      get: (k: string) => plain.get(k),
      set: (k: string, v: unknown) => void plain.set(k, v),
      delete: (k: string) => plain.delete(k),
    };
    const refused = await new Semaphore(key(), { permits: 1, cache }).acquire().catch((e) => e);
    expect(refused).toBeInstanceOf(TypeError);
    expect(refused.message).toMatch(/has no capabilities.permits/);
  });
});

describe('ReadWriteLock', () => {
  it('admits many readers or one writer; readers share the last write’s fence', async () => {
    const cache = memoryStore();
    const k = key();
    const rw = new ReadWriteLock(k, { cache });
    const before = await rw.read();
    expect(before.fence).toBeUndefined();
    expect(await rw.tryWrite()).toBeNull();
    await before.release();
    const w = await rw.write();
    expect(await rw.tryRead()).toBeNull();
    expect(await rw.tryWrite()).toBeNull();
    await w.release();
    const readers = [await rw.read(), await rw.read(), await rw.read()];
    for (const r of readers) expect(r.fence).toBe(w.fence);
    expect(await rw.tryWrite()).toBeNull();
    for (const r of readers) await r.release();
    const w2 = await rw.write();
    expect(w2.fence! > w.fence!).toBe(true);
    await w2.release();
  });

  it('a waiting writer holds back new readers, then readers go after it', async () => {
    const cache = memoryStore();
    const k = key();
    const rw = new ReadWriteLock(k, { cache, wait: '5s' });
    const reader = await rw.read();
    const events: string[] = [];
    const writing = rw.runWrite(async () => {
      events.push('write');
      await turn();
    });
    await new Promise((resolve) => setTimeout(resolve, 30));
    expect(await new ReadWriteLock(k, { cache }).tryRead()).toBeNull();
    const reading = rw.runRead(() => void events.push('read'));
    await new Promise((resolve) => setTimeout(resolve, 30));
    expect(events).toEqual([]);
    // A read holder that asks to write waits like anyone else: no upgrade.
    expect(await new ReadWriteLock(k, { cache, wait: 20 }).tryWrite()).toBeNull();
    await reader.release();
    await Promise.all([writing, reading]);
    expect(events).toEqual(['write', 'read']);
  });
});
