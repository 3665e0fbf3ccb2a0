import { type LockStore, newOwner, RW_LIMIT, type SharedLeases } from 'cachelock';
import { describe, expect, it } from 'vitest';

export interface CapabilitySetup {
  /** Three stores on one backend (one table or file), as three processes would have. */
  stores(): [LockStore, LockStore, LockStore];
  /** Rows the store keeps for the shared key `key`, in either namespace. */
  sharedRows(key: string): Promise<number>;
  /** Rows of the whole shared table whose term has run out. */
  expiredSharedRows(): Promise<number>;
  /** Rows of the exclusive table for these keys. */
  exclusiveRows(keys: string[]): Promise<number>;
  /** Whether the store pushes wake-ups (`onRelease`) for shared leases. */
  push: boolean;
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/**
 * The store operations of several keys, permits and readers/writers, called directly, with the
 * checks only a backend's own test can make: what is left in its tables.
 */
export function describeCapabilities(setup: CapabilitySetup): void {
  const first = () => setup.stores()[0];
  const permits = (s: LockStore = first()): SharedLeases => s.capabilities!.permits!;
  const rw = (s: LockStore = first()): SharedLeases => s.capabilities!.readersWriters!;
  const { sharedRows, exclusiveRows } = setup;

  describe('several keys', () => {
    it('takes every key or none, with a fence per key, and excludes the single-key lock', async () => {
      const store = first();
      const keys = store.capabilities!.keys!;
      const [a, b] = [newOwner(), newOwner()];
      const got = await keys.acquire(['m1', 'm2', 'm3'], a, 10_000);
      expect(got?.fences).toHaveLength(3);
      for (const fence of got!.fences) expect(fence).toBeTypeOf('bigint');
      expect(new Set(got!.fences).size).toBe(3);
      // Overlapping one key: refused, and the free key of the set is not taken either.
      expect(await keys.acquire(['m3', 'm4'], b, 10_000)).toBeNull();
      expect(await store.inspect('m4')).toBeNull();
      expect(await store.acquire('m2', b, 10_000)).toBeNull();
      // The holder again: same fences, in the order asked.
      const again = await keys.acquire(['m3', 'm1', 'm2'], a, 10_000);
      expect(again?.fences).toEqual([got!.fences[2], got!.fences[0], got!.fences[1]]);
      expect(await keys.extend(['m1', 'm2', 'm4'], a, 20_000)).toBe(false);
      expect((await store.inspect('m1'))!.ttlMs).toBeLessThanOrEqual(10_000);
      expect(await keys.extend(['m1', 'm2', 'm3'], a, 20_000)).toBe(true);
      expect((await store.inspect('m1'))!.ttlMs).toBeGreaterThan(10_000);
      expect(await keys.release(['m1', 'm2', 'm3'], b)).toBe(false);
      expect(await keys.release(['m1', 'm2', 'm3', 'm4'], a)).toBe(false);
      expect(await exclusiveRows(['m1', 'm2', 'm3'])).toBe(0);
      const next = await keys.acquire(['m3', 'm4'], b, 10_000);
      expect(next!.fences[0]! > got!.fences[2]!).toBe(true);
      expect(await keys.release(['m3', 'm4'], b)).toBe(true);
    });

    it('a key held by a single-key lock keeps the whole set out; an expired one is taken', async () => {
      const store = first();
      const keys = store.capabilities!.keys!;
      const [a, b] = [newOwner(), newOwner()];
      expect(await store.acquire('x2', a, 200)).not.toBeNull();
      expect(await keys.acquire(['x1', 'x2'], b, 10_000)).toBeNull();
      expect(await store.inspect('x1')).toBeNull();
      await sleep(250);
      expect(await keys.acquire(['x1', 'x2'], b, 10_000)).not.toBeNull();
      expect((await store.inspect('x2'))!.owner).toBe(b);
      expect(await keys.release(['x1', 'x2'], b, 5_000)).toBe(true);
      expect((await store.inspect('x2'))!.ttlMs).toBeLessThanOrEqual(5_000);
      expect(await keys.release(['x1', 'x2'], b)).toBe(true);
    });

    it('reverse sets racing from two stores never deadlock and never overlap', async () => {
      const [one, two] = setup.stores();
      const k1 = one.capabilities!.keys!;
      const k2 = two.capabilities!.keys!;
      let inside = 0;
      let most = 0;
      let wins = 0;
      const worker = async (keys: typeof k1, order: string[]) => {
        for (let i = 0; i < 30; i++) {
          const owner = newOwner();
          const got = await keys.acquire(order, owner, 10_000);
          if (!got) continue;
          wins++;
          most = Math.max(most, ++inside);
          await sleep(1);
          inside--;
          expect(await keys.release(order, owner)).toBe(true);
        }
      };
      await Promise.all([
        worker(k1, ['r1', 'r2', 'r3']),
        worker(k2, ['r3', 'r2', 'r1']),
        worker(k1, ['r2', 'r3', 'r1']),
        worker(k2, ['r1', 'r3', 'r2']),
      ]);
      expect(most).toBe(1);
      expect(wins).toBeGreaterThan(0);
    });
  });

  describe('permits', () => {
    it('admits up to the limit, each with its own rising fence; owner-checked release and extend', async () => {
      const s = permits();
      const owners = [newOwner(), newOwner(), newOwner(), newOwner()];
      const fences: bigint[] = [];
      for (const owner of owners.slice(0, 3)) {
        const got = await s.acquire('p', owner, 10_000, { limit: 3, weight: 1 });
        fences.push(got!.fence!);
      }
      expect(fences[0]! < fences[1]! && fences[1]! < fences[2]!).toBe(true);
      expect(await s.acquire('p', owners[3]!, 10_000, { limit: 3, weight: 1 })).toBeNull();
      // A holder asking again keeps its lease and fence.
      expect(await s.acquire('p', owners[1]!, 10_000, { limit: 3, weight: 1 })).toEqual({
        fence: fences[1],
      });
      // Another process allowing more permits obeys its own limit.
      expect(await s.acquire('p', owners[3]!, 10_000, { limit: 4, weight: 1 })).not.toBeNull();
      const info = await s.inspect('p');
      expect(info.map((lease) => lease.owner)).toEqual(owners);
      expect(info[0]!.fence).toBe(fences[0]);
      expect(await s.extend('p', newOwner(), 10_000)).toBe(false);
      expect(await s.extend('p', owners[0]!, 20_000)).toBe(true);
      expect((await s.inspect('p'))[0]!.ttlMs).toBeGreaterThan(10_000);
      expect(await s.release('p', newOwner())).toBe(false);
      for (const owner of owners) expect(await s.release('p', owner)).toBe(true);
      expect(await s.release('p', owners[0]!)).toBe(false);
      expect(await s.inspect('p')).toEqual([]);
      expect(await sharedRows('p')).toBe(0);
    });

    it('an expired permit is free again; holdAtLeast shortens a lease', async () => {
      const s = permits();
      const [a, b, c] = [newOwner(), newOwner(), newOwner()];
      expect(await s.acquire('e', a, 200, { limit: 2, weight: 1 })).not.toBeNull();
      expect(await s.acquire('e', b, 10_000, { limit: 2, weight: 1 })).not.toBeNull();
      expect(await s.acquire('e', c, 10_000, { limit: 2, weight: 1 })).toBeNull();
      await sleep(250);
      expect(await s.extend('e', a, 10_000)).toBe(false);
      expect(await s.acquire('e', c, 10_000, { limit: 2, weight: 1 })).not.toBeNull();
      expect(await s.release('e', a)).toBe(false);
      expect(await s.release('e', b, 200)).toBe(true);
      expect((await s.inspect('e')).find((l) => l.owner === b)!.ttlMs).toBeLessThanOrEqual(200);
      await sleep(250);
      expect((await s.inspect('e')).map((l) => l.owner)).toEqual([c]);
      expect(await s.release('e', c)).toBe(true);
      expect(await sharedRows('e')).toBe(0);
    });

    it('serves the line first come, first served; a try without a place does not jump it', async () => {
      const s = permits();
      const [a, w1, w2, t] = [newOwner(), newOwner(), newOwner(), newOwner()];
      expect(await s.acquire('q', a, 10_000, { limit: 1, weight: 1 })).not.toBeNull();
      expect(await s.acquire('q', w1, 10_000, { limit: 1, weight: 1, lineMs: 5_000 })).toBeNull();
      expect(await s.acquire('q', w2, 10_000, { limit: 1, weight: 1, lineMs: 5_000 })).toBeNull();
      expect(await s.release('q', a)).toBe(true);
      // Free, but w1 and w2 are ahead.
      expect(await s.acquire('q', t, 10_000, { limit: 1, weight: 1 })).toBeNull();
      expect(await s.acquire('q', w2, 10_000, { limit: 1, weight: 1, lineMs: 5_000 })).toBeNull();
      expect(
        await s.acquire('q', w1, 10_000, { limit: 1, weight: 1, lineMs: 5_000 }),
      ).not.toBeNull();
      expect(await s.release('q', w1)).toBe(true);
      expect(await s.acquire('q', t, 10_000, { limit: 1, weight: 1 })).toBeNull();
      expect(await s.acquire('q', w2, 10_000, { limit: 1, weight: 1 })).not.toBeNull();
      expect(await s.release('q', w2)).toBe(true);
      expect(await s.acquire('q', t, 10_000, { limit: 1, weight: 1 })).not.toBeNull();
      expect(await s.release('q', t)).toBe(true);
      expect(await sharedRows('q')).toBe(0);
    });

    it('a place that runs out no longer holds the line; a waiter that leaves opens it', async () => {
      const s = permits();
      const [a, w, t] = [newOwner(), newOwner(), newOwner()];
      expect(await s.acquire('lq', a, 10_000, { limit: 1, weight: 1 })).not.toBeNull();
      expect(await s.acquire('lq', w, 10_000, { limit: 1, weight: 1, lineMs: 200 })).toBeNull();
      expect(await s.release('lq', a)).toBe(true);
      expect(await s.acquire('lq', t, 10_000, { limit: 1, weight: 1 })).toBeNull();
      await sleep(250);
      expect(await s.acquire('lq', t, 10_000, { limit: 1, weight: 1 })).not.toBeNull();
      expect(await s.release('lq', t)).toBe(true);
      expect(
        await s.acquire('lq', w, 10_000, { limit: 1, weight: 1, lineMs: 5_000 }),
      ).not.toBeNull();
      expect(await s.release('lq', w)).toBe(true);
      // Leaving the line by release, without ever holding.
      expect(await s.acquire('lq', a, 10_000, { limit: 1, weight: 1 })).not.toBeNull();
      expect(await s.acquire('lq', w, 10_000, { limit: 1, weight: 1, lineMs: 5_000 })).toBeNull();
      expect(await s.release('lq', w)).toBe(false);
      expect(await s.release('lq', a)).toBe(true);
      expect(await s.acquire('lq', t, 10_000, { limit: 1, weight: 1 })).not.toBeNull();
      expect(await s.release('lq', t)).toBe(true);
      expect(await sharedRows('lq')).toBe(0);
    });

    it.runIf(setup.push)('wakes a waiter when a permit is released', async () => {
      const s = permits();
      const [a, w] = [newOwner(), newOwner()];
      expect(await s.acquire('wk', a, 10_000, { limit: 1, weight: 1 })).not.toBeNull();
      let calls = 0;
      const subscribed = new Promise<void>((resolve) => {
        const stop = s.onRelease!('wk', () => {
          calls++;
          if (calls === 2) {
            stop();
            resolve();
          }
        });
      });
      // The first call tells that the LISTEN is active; then the release.
      while (calls < 1) await sleep(10);
      expect(await s.acquire('wk', w, 10_000, { limit: 1, weight: 1, lineMs: 5_000 })).toBeNull();
      expect(await s.release('wk', a)).toBe(true);
      await subscribed;
      expect(
        await s.acquire('wk', w, 10_000, { limit: 1, weight: 1, lineMs: 5_000 }),
      ).not.toBeNull();
      expect(await s.release('wk', w)).toBe(true);
    });

    it('three stores racing a semaphore of 3 never admit a fourth', async () => {
      let inside = 0;
      let most = 0;
      let admitted = 0;
      const worker = async (s: SharedLeases) => {
        for (let i = 0; i < 20; i++) {
          const owner = newOwner();
          const got = await s.acquire('race', owner, 10_000, { limit: 3, weight: 1 });
          if (!got) continue;
          admitted++;
          most = Math.max(most, ++inside);
          await sleep(15);
          inside--;
          expect(await s.release('race', owner)).toBe(true);
        }
      };
      const stores = setup.stores();
      await Promise.all(Array.from({ length: 9 }, (_, i) => worker(permits(stores[i % 3]))));
      expect(most, 'never more than 3 inside').toBeLessThanOrEqual(3);
      // Liveness on a loaded machine: the racers did share the permits.
      expect(most, 'more than one inside at once').toBeGreaterThanOrEqual(2);
      expect(admitted, 'permits granted').toBeGreaterThanOrEqual(10);
      expect(await sharedRows('race')).toBe(0);
    });
  });

  describe('readers and writers', () => {
    it('many readers or one writer; readers share the last write fence', async () => {
      const s = rw();
      const read = { limit: RW_LIMIT, weight: 1, shareFence: true };
      const write = { limit: RW_LIMIT, weight: RW_LIMIT };
      const [r1, r2, w1, w2] = [newOwner(), newOwner(), newOwner(), newOwner()];
      // Before the first write readers have no fence.
      expect(await s.acquire('doc', r1, 10_000, read)).toEqual({});
      expect(await s.acquire('doc', r2, 10_000, read)).toEqual({});
      expect(await s.acquire('doc', w1, 10_000, write)).toBeNull();
      // The writer waits: a new reader waits behind it.
      expect(await s.acquire('doc', w1, 10_000, { ...write, lineMs: 5_000 })).toBeNull();
      expect(await s.acquire('doc', newOwner(), 10_000, read)).toBeNull();
      expect(await s.release('doc', r1)).toBe(true);
      expect(await s.release('doc', r2)).toBe(true);
      const written = await s.acquire('doc', w1, 10_000, { ...write, lineMs: 5_000 });
      expect(written?.fence).toBeTypeOf('bigint');
      expect(await s.acquire('doc', w2, 10_000, write)).toBeNull();
      expect(await s.acquire('doc', r1, 10_000, read)).toBeNull();
      // Readers queued behind the writer get in together once it leaves, with its fence.
      expect(await s.acquire('doc', r1, 10_000, { ...read, lineMs: 5_000 })).toBeNull();
      expect(await s.acquire('doc', r2, 10_000, { ...read, lineMs: 5_000 })).toBeNull();
      expect(await s.release('doc', w1)).toBe(true);
      expect(await s.acquire('doc', r1, 10_000, { ...read, lineMs: 5_000 })).toEqual(written);
      expect(await s.acquire('doc', r2, 10_000, { ...read, lineMs: 5_000 })).toEqual(written);
      expect(await s.release('doc', r1)).toBe(true);
      expect(await s.release('doc', r2)).toBe(true);
      const later = await s.acquire('doc', w2, 10_000, write);
      expect(later!.fence! > written!.fence!).toBe(true);
      expect(await s.release('doc', w2)).toBe(true);
      // The last writer's fence outlives its release, for the readers that come next, and only
      // that: one row, until the longest term granted on the key runs out.
      expect(await sharedRows('doc')).toBe(1);
      expect(await s.acquire('doc', r1, 10_000, read)).toEqual(later);
      expect(await s.release('doc', r1)).toBe(true);
      expect(await sharedRows('doc')).toBe(1);
    });

    it('keeps its own namespace: a semaphore, a read/write lock and a lock of one name', async () => {
      const owner = newOwner();
      expect(
        await permits().acquire('same', owner, 10_000, { limit: 1, weight: 1 }),
      ).not.toBeNull();
      expect(
        await rw().acquire('same', newOwner(), 10_000, { limit: RW_LIMIT, weight: RW_LIMIT }),
      ).not.toBeNull();
      expect(await first().acquire('same', newOwner(), 10_000)).not.toBeNull();
      expect(await rw().inspect('same')).toHaveLength(1);
      expect(await permits().release('same', owner)).toBe(true);
      const writer = (await rw().inspect('same'))[0]!.owner;
      expect(await rw().release('same', writer)).toBe(true);
    });
  });

  it('leaves nothing behind once every lease has run out and a sweep went by', async () => {
    const s = permits(setup.stores()[1]);
    const owners = Array.from({ length: 5 }, () => newOwner());
    for (const owner of owners) {
      await s.acquire('gone', owner, 100, { limit: 3, weight: 1, lineMs: 100 });
    }
    // A writer released early and a reader: the key's last fence stays for the writer's term.
    const writer = newOwner();
    await rw().acquire('gone-rw', writer, 100, { limit: RW_LIMIT, weight: RW_LIMIT });
    await rw().release('gone-rw', writer);
    await rw().acquire('gone-rw', newOwner(), 50, { limit: RW_LIMIT, weight: 1, shareFence: true });
    expect(await sharedRows('gone-rw')).toBe(2);
    expect(await sharedRows('gone')).toBeGreaterThan(0);
    await sleep(150);
    // The sweep runs every few acquisitions, in the background.
    for (let i = 0; i < 20; i++) {
      const owner = newOwner();
      await s.acquire(`sweeper-${i}`, owner, 10_000, { limit: 1, weight: 1 });
      await s.release(`sweeper-${i}`, owner);
    }
    await sleep(200);
    expect(await sharedRows('gone')).toBe(0);
    expect(await sharedRows('gone-rw')).toBe(0);
    // Nothing whose term ran out is left, of any key.
    expect(await setup.expiredSharedRows()).toBe(0);
  });
}
