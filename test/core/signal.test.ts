import { Lock, LockLostError, type LockStore, memoryStore } from 'cachelock';
import { describe, expect, it } from 'vitest';

let n = 0;
const key = () => `signal-test-${process.pid}-${++n}`;

/** A memory store whose holders can be made to lose their lease: the next extend is refused. */
function losableStore(): LockStore & { refuseExtend: boolean } {
  const inner = memoryStore();
  const store = {
    kind: 'memory',
    atomic: true,
    refuseExtend: false,
    acquire: inner.acquire.bind(inner),
    release: inner.release.bind(inner),
    inspect: inner.inspect.bind(inner),
    extend: (k: string, owner: string, ttlMs: number) =>
      store.refuseExtend ? Promise.resolve(false) : inner.extend(k, owner, ttlMs),
  };
  return store;
}

/** The lease is lost (an extension is refused) and the key freed in the store. */
async function loseLease(lock: Lock, store: LockStore & { refuseExtend: boolean }): Promise<void> {
  store.refuseExtend = true;
  await expect(lock.extend()).rejects.toBeInstanceOf(LockLostError);
  store.refuseExtend = false;
  const storeKey = `cachelock:${lock.key}`;
  const holder = await store.inspect(storeKey);
  if (holder !== null) await store.release(storeKey, holder.owner);
}

describe('lock.signal', () => {
  it('read before the first acquire belongs to that acquisition and aborts when it is lost', async () => {
    const cache = losableStore();
    const lock = new Lock(key(), { cache, autoExtend: false });
    const early = lock.signal;
    await lock.acquire();
    expect(lock.signal).toBe(early);
    expect(early.aborted).toBe(false);
    await loseLease(lock, cache);
    expect(early.aborted).toBe(true);
    expect(early.reason).toBeInstanceOf(LockLostError);
    expect(lock.held).toBe(false);
    await lock.release();
  });

  it('read while held is the current one, the same on every read, and aborts on loss', async () => {
    const cache = losableStore();
    const lock = await Lock.acquire(key(), { cache, autoExtend: false });
    const held = lock.signal;
    expect(lock.signal).toBe(held);
    await loseLease(lock, cache);
    expect(held.aborted).toBe(true);
    expect(held.reason.code).toBe('LOST');
  });

  it('read after release belongs to the next acquisition; the released one never aborts', async () => {
    const cache = losableStore();
    const lock = await Lock.acquire(key(), { cache, autoExtend: false });
    const first = lock.signal;
    await lock.release();
    const next = lock.signal;
    expect(next).not.toBe(first);
    await lock.acquire();
    expect(lock.signal).toBe(next);
    await loseLease(lock, cache);
    expect(next.aborted).toBe(true);
    expect(first.aborted).toBe(false);
  });

  it('a lost acquisition keeps its aborted signal; the next acquisition gets a fresh one', async () => {
    const cache = losableStore();
    const lock = await Lock.acquire(key(), { cache, autoExtend: false });
    const lost = lock.signal;
    await loseLease(lock, cache);
    // Read after the loss and before acquiring again: still the lost acquisition's.
    expect(lock.signal).toBe(lost);
    expect(lock.signal.aborted).toBe(true);
    await lock.acquire();
    const again = lock.signal;
    expect(again).not.toBe(lost);
    expect(again.aborted).toBe(false);
    expect(lost.aborted).toBe(true);
    await lock.release();
    expect(again.aborted).toBe(false);
  });

  it('a release that finds the lease gone aborts the signal handed out while held', async () => {
    const cache = losableStore();
    const lock = await Lock.acquire(key(), { cache, autoExtend: false });
    const held = lock.signal;
    const storeKey = `cachelock:${lock.key}`;
    await cache.release(storeKey, (await cache.inspect(storeKey))!.owner);
    const releasing = lock.release();
    // Read while the release is under way: not held, so it is the next acquisition's.
    const during = lock.signal;
    expect(await releasing).toBe(false);
    expect(held.aborted).toBe(true);
    expect(during).not.toBe(held);
    expect(during.aborted).toBe(false);
    await lock.acquire();
    expect(lock.signal).toBe(during);
    await lock.release();
  });

  it('first read after a loss is already aborted', async () => {
    const cache = losableStore();
    const lock = await Lock.acquire(key(), { cache, autoExtend: false });
    await loseLease(lock, cache);
    expect(lock.signal.aborted).toBe(true);
    expect(lock.signal.reason).toBeInstanceOf(LockLostError);
  });

  it('read before an acquire that is refused still belongs to the next acquisition', async () => {
    const cache = losableStore();
    const k = key();
    const holder = await Lock.acquire(k, { cache });
    const lock = new Lock(k, { cache, autoExtend: false });
    const early = lock.signal;
    expect(await lock.tryAcquire()).toBe(false);
    await holder.release();
    await lock.acquire();
    expect(lock.signal).toBe(early);
    await loseLease(lock, cache);
    expect(early.aborted).toBe(true);
  });

  it('run() passes the signal read before it, and it aborts when the lease is lost in fn', async () => {
    const cache = losableStore();
    const lock = new Lock(key(), { cache, autoExtend: false });
    const early = lock.signal;
    const error = await lock
      .run(async (signal) => {
        expect(signal).toBe(early);
        expect(signal).toBe(lock.signal);
        await loseLease(lock, cache);
        expect(signal.aborted).toBe(true);
      })
      .catch((e) => e);
    expect(error).toBeInstanceOf(LockLostError);
    expect(early.reason).toBe(error);
  });
});
