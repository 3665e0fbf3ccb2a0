import { Lock, type LockStore, memoryStore } from 'cachelock';
import { describe, expect, it } from 'vitest';

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/**
 * A store that throws rather than rejects once it is closed, as a hand-written store may: the
 * core's clean-ups run from timers, where a throw would be nobody's to catch.
 */
function closingStore(): LockStore & { shut(): void } {
  const inner = memoryStore();
  let shut = false;
  // Throws at the call, before any promise: what a plain function that checks first does.
  const open = (): LockStore => {
    if (shut) throw new Error('the store is closed');
    return inner;
  };
  return {
    kind: 'throwing',
    atomic: true,
    acquire: (key, owner, ttlMs) => open().acquire(key, owner, ttlMs),
    release: (key, owner, keepMs) => open().release(key, owner, keepMs),
    extend: (key, owner, ttlMs) => open().extend(key, owner, ttlMs),
    inspect: (key) => open().inspect(key),
    shut: () => {
      shut = true;
    },
  };
}

describe('a store that throws once closed', () => {
  it('a lease lost on it afterwards is reported, and nothing throws from the timers', async () => {
    const uncaught: unknown[] = [];
    const onUncaught = (error: unknown) => uncaught.push(error);
    process.on('uncaughtException', onUncaught);
    try {
      const store = closingStore();
      const lost: Error[] = [];
      const lock = await Lock.acquire(['a', 'b'], {
        cache: store,
        ttl: 300,
        onLost: (e) => lost.push(e),
      });
      const single = await Lock.acquire('c', {
        cache: store,
        ttl: 300,
        onLost: (e) => lost.push(e),
      });
      store.shut();
      // The watchdog's extensions fail, and after the ttl both leases are lost and given up.
      await sleep(700);
      expect(lock.held).toBe(false);
      expect(single.held).toBe(false);
      expect(uncaught).toEqual([]);
      expect(lost.map((e) => e.message).join()).toMatch(/could not be reached/);
    } finally {
      process.off('uncaughtException', onUncaught);
    }
  });
});
