import { Lock, type LockStore, ReadWriteLock, Semaphore } from 'cachelock';
import { describe, expect, it } from 'vitest';

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
let n = 0;
const unique = (label: string) => `primitives-${process.pid}-${label}-${++n}`;

/**
 * `Lock` on several keys, `Semaphore` and `ReadWriteLock` over a backend's capabilities, with two
 * stores on one backend standing for two processes.
 */
export function describePrimitives(stores: () => [LockStore, LockStore]): void {
  describe('the primitives over the store', () => {
    it('a semaphore of 2 shared by two stores: never a third inside, every waiter served', async () => {
      const key = unique('sem');
      let inside = 0;
      let most = 0;
      const tasks = Array.from({ length: 8 }, (_, i) =>
        new Semaphore(key, { permits: 2, cache: stores()[i % 2], wait: '20s' }).run(async () => {
          most = Math.max(most, ++inside);
          await sleep(30);
          inside--;
          return i;
        }),
      );
      expect((await Promise.all(tasks)).sort()).toEqual([0, 1, 2, 3, 4, 5, 6, 7]);
      // Whether two sections overlapped depends on the machine's load; the limit does not.
      expect(most, 'at most 2 inside').toBeLessThanOrEqual(2);
      expect((await Semaphore.inspect(key, { cache: stores()[0] })).holders).toEqual([]);
      // Both permits can be held at once, one through each store, and a third is refused.
      const [a, b] = stores();
      const first = await new Semaphore(key, { permits: 2, cache: a }).tryAcquire();
      const second = await new Semaphore(key, { permits: 2, cache: b }).tryAcquire();
      expect(first?.held && second?.held, 'both permits held at once').toBe(true);
      expect(await new Semaphore(key, { permits: 2, cache: a }).tryAcquire()).toBeNull();
      expect(await first!.release()).toBe(true);
      expect(await second!.release()).toBe(true);
    });

    it('readers together, a waiting writer holds back new readers, readers share its fence', async () => {
      const key = unique('rw');
      const [a, b] = stores();
      const onA = new ReadWriteLock(key, { cache: a, wait: '20s' });
      const onB = new ReadWriteLock(key, { cache: b, wait: '20s' });
      const tryOnB = new ReadWriteLock(key, { cache: b });
      const r1 = await onA.read();
      const r2 = await onB.read();
      expect(r1.held && r2.held).toBe(true);
      const writing = onA.write();
      await sleep(100);
      // The writer is in line: a new reader does not pass it.
      expect(await tryOnB.tryRead()).toBeNull();
      await r1.release();
      await r2.release();
      const w = await writing;
      expect(w.fence).toBeTypeOf('bigint');
      const reading = [onB.read(), onA.read()];
      await sleep(100);
      expect(await tryOnB.tryWrite()).toBeNull();
      await w.release();
      const readers = await Promise.all(reading);
      for (const r of readers) expect(r.fence).toBe(w.fence);
      for (const r of readers) expect(await r.release()).toBe(true);
      const next = await onB.write();
      expect(next.fence! > w.fence!).toBe(true);
      await next.release();
    });

    it('locks over the same keys in opposite orders never overlap nor deadlock', async () => {
      const [k1, k2] = [unique('acct'), unique('acct')];
      let inside = 0;
      let most = 0;
      const transfer = async (i: number) => {
        const keys = i % 2 === 0 ? [k1, k2] : [k2, k1];
        await using lock = await Lock.acquire(keys, { cache: stores()[i % 2], wait: '20s' });
        expect([...lock.fences.keys()].sort()).toEqual([k1, k2].sort());
        most = Math.max(most, ++inside);
        await sleep(10);
        inside--;
      };
      await Promise.all(Array.from({ length: 8 }, (_, i) => transfer(i)));
      expect(most).toBe(1);
      // Lock(k1) alone is excluded by the pair and free afterwards.
      const pair = await Lock.acquire([k1, k2], { cache: stores()[0] });
      expect(await new Lock(k1, { cache: stores()[1] }).tryAcquire()).toBe(false);
      expect(await pair.release()).toBe(true);
      expect(await new Lock(k1, { cache: stores()[1] }).tryAcquire()).toBe(true);
    });

    it('a lock on several keys gets its turn while single-key owners keep one of them busy', async () => {
      const [a, b] = [unique('busy'), unique('busy')];
      let stop = false;
      let cycles = 0;
      // Two owners, one per store, pass `a` between them without a gap: `a` is never free.
      const busy = stores().map(async (cache) => {
        while (!stop) {
          const lock = await Lock.acquire(a, { cache, wait: '20s' });
          await sleep(5);
          await lock.release();
          cycles++;
        }
      });
      await sleep(50);
      try {
        for (const cache of stores()) {
          const asked = performance.now();
          const both = await Lock.acquire([b, a], { cache, wait: '15s' });
          const waited = performance.now() - asked;
          expect(both.fences.size).toBe(2);
          await sleep(5);
          expect(await both.release()).toBe(true);
          // Served in turn on the stores with a line; on PostgreSQL, which has none (waiters
          // race once NOTIFY tells them), 0.01-2.1 s on a quiet machine and once 6 s in a loaded
          // CI pass. Starved, the 15 s wait would run out.
          expect(waited, 'served in turn, not when a happened to be free').toBeLessThan(10_000);
        }
      } finally {
        stop = true;
        await Promise.all(busy);
      }
      expect(cycles, 'the single-key owners kept going').toBeGreaterThan(2);
      // Nothing of the waits is left: both keys are free.
      expect(await Lock.inspect(a, { cache: stores()[0] })).toBeNull();
      expect(await Lock.inspect(b, { cache: stores()[0] })).toBeNull();
    });
  });
}
