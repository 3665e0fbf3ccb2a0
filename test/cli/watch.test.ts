import { randomBytes } from 'node:crypto';
import { Lock, LockLostError, memoryStore, newOwner } from 'cachelock';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { CHECK_EVERY_MS, watchLease } from '../../src/cli/watch.js';

// The check `cachelock run` makes while its command runs, on a store in memory and a fake
// clock: what it costs while the lease is ours, and how soon it notices that it is not.
describe('watchLease', () => {
  beforeEach(() => {
    vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout'] });
  });
  afterEach(() => {
    vi.useRealTimers();
  });

  const held = async () => {
    const store = memoryStore();
    const key = `watch-${randomBytes(4).toString('hex')}`;
    const lock = await Lock.acquire(key, { cache: store, ttl: '30s' });
    const inspect = vi.spyOn(store, 'inspect');
    const extend = vi.spyOn(store, 'extend');
    return { store, storeKey: `cachelock:${key}`, lock, inspect, extend };
  };

  it('while the lease is ours: one inspect per interval and no write, none after stop', async () => {
    const { lock, inspect, extend, store } = await held();
    const stop = watchLease(lock, { cache: store });
    await vi.advanceTimersByTimeAsync(CHECK_EVERY_MS * 4);
    expect(inspect).toHaveBeenCalledTimes(4);
    expect(extend).not.toHaveBeenCalled();
    expect(lock.signal.aborted).toBe(false);
    stop();
    await vi.advanceTimersByTimeAsync(CHECK_EVERY_MS * 4);
    expect(inspect).toHaveBeenCalledTimes(4);
    expect(await lock.release()).toBe(true);
  });

  it('aborts lock.signal within one interval of a forced release', async () => {
    const { lock, store, storeKey } = await held();
    const stop = watchLease(lock, { cache: store });
    const holder = await store.inspect(storeKey);
    expect(await store.release(storeKey, holder!.owner)).toBe(true);
    await vi.advanceTimersByTimeAsync(CHECK_EVERY_MS - 1);
    expect(lock.signal.aborted).toBe(false);
    await vi.advanceTimersByTimeAsync(1);
    expect(lock.signal.aborted).toBe(true);
    expect(lock.signal.reason).toBeInstanceOf(LockLostError);
    stop();
  });

  it('aborts lock.signal when another owner took the key, and stops looking', async () => {
    const { lock, store, storeKey, inspect } = await held();
    const stop = watchLease(lock, { cache: store });
    const holder = await store.inspect(storeKey);
    await store.release(storeKey, holder!.owner);
    expect(await store.acquire(storeKey, newOwner(), 30_000)).not.toBeNull();
    await vi.advanceTimersByTimeAsync(CHECK_EVERY_MS);
    expect(lock.signal.aborted).toBe(true);
    const looks = inspect.mock.calls.length;
    await vi.advanceTimersByTimeAsync(CHECK_EVERY_MS * 4);
    expect(inspect.mock.calls.length).toBe(looks);
    stop();
  });
});
