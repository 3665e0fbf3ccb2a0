import { Lock, LockedError, type LockStore, memoryStore, StoreError } from 'cachelock';
import { afterEach, describe, expect, it, vi } from 'vitest';

/**
 * A store whose connection drops under the first acquire after the server granted it (the
 * caller never hears) and under the release that follows: what a killed connection does.
 */
function droppingStore(): LockStore & { releases: number } {
  const inner = memoryStore();
  let acquireDrops = 1;
  let releaseDrops = 1;
  const store = {
    kind: 'dropping',
    atomic: true,
    releases: 0,
    async acquire(key: string, owner: string, ttlMs: number) {
      const granted = await inner.acquire(key, owner, ttlMs);
      if (acquireDrops-- > 0) throw new Error('Connection lost: The server closed the connection.');
      return granted;
    },
    async release(key: string, owner: string, keepMs?: number) {
      store.releases++;
      if (releaseDrops-- > 0) throw new Error('Connection lost: The server closed the connection.');
      return inner.release(key, owner, keepMs);
    },
    extend: (key: string, owner: string, ttlMs: number) => inner.extend(key, owner, ttlMs),
    inspect: (key: string) => inner.inspect(key),
  };
  return store;
}

afterEach(() => {
  vi.useRealTimers();
  vi.restoreAllMocks();
});

describe('an acquisition that failed without an answer', () => {
  it('lets go of what it may hold again when the first release fails too', async () => {
    vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout'] });
    const store = droppingStore();
    await expect(Lock.acquire('k', { cache: store, ttl: '1m' })).rejects.toBeInstanceOf(StoreError);
    // The grant the caller never heard of is still on the store: the first release failed.
    expect(store.releases).toBe(1);
    await expect(Lock.acquire('k', { cache: store, ttl: '1m', wait: 0 })).rejects.toBeInstanceOf(
      LockedError,
    );
    await vi.advanceTimersByTimeAsync(60);
    expect(store.releases).toBe(2);
    const next = await Lock.acquire('k', { cache: store, ttl: '1m', wait: 0 });
    expect(next.held).toBe(true);
    await next.release();
  });

  it('tries a few times within a place in line, then gives up', async () => {
    vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout'] });
    const store = droppingStore();
    store.release = async () => {
      store.releases++;
      throw new Error('Connection refused');
    };
    await expect(Lock.acquire('k', { cache: store, ttl: '1m' })).rejects.toBeInstanceOf(StoreError);
    await vi.advanceTimersByTimeAsync(3_000);
    expect(store.releases).toBe(5);
    await vi.advanceTimersByTimeAsync(60_000);
    expect(store.releases).toBe(5);
  });

  it("does not try again a release that took longer than a place's claim to fail", async () => {
    vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout'] });
    // The clock the core reads, moved on by the fake timers' time.
    let offset = 0;
    const realNow = performance.now.bind(performance);
    vi.spyOn(performance, 'now').mockImplementation(() => realNow() + offset);
    const store = droppingStore();
    // A server that never answers: the release fails on the store's own timeout, 3.5 s later.
    store.release = () => {
      store.releases++;
      return new Promise((_, reject) =>
        setTimeout(() => {
          offset += 3_500;
          reject(new Error('timed out'));
        }, 3_500),
      );
    };
    await expect(Lock.acquire('k', { cache: store, ttl: '1m' })).rejects.toBeInstanceOf(StoreError);
    await vi.advanceTimersByTimeAsync(60_000);
    expect(store.releases).toBe(1);
  });
});
