import {
  closeAll,
  type Handoff,
  Lock,
  newOwner,
  ReadWriteLock,
  RW_LIMIT,
  Semaphore,
  type SharedLeases,
} from 'cachelock';
import {
  leaseKey,
  lockKeys,
  type RedisStore,
  redisStore,
  SHARED_FENCE_LINGER_MS,
  sharedKeys,
} from 'cachelock/redis';
import { Redis } from 'ioredis';
import { createClient } from 'redis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { binaryOrSkip, serverOrSkip } from '../support/reachable.js';
import { RedisServer, sleep } from '../support/redis-server.js';
import { describePrimitives } from '../support/store-primitives.js';

const reachable = await serverOrSkip('Redis', 6379);
const runs = await binaryOrSkip('Redis store', 'redis-server');
let counter = 0;
const key = (label: string) => `cachelock:caps:${process.pid}:${Date.now()}:${label}:${++counter}`;

const semaphore = (limit: number, lineMs?: number) => ({ limit, weight: 1, lineMs });
const reader = (lineMs?: number) => ({ limit: RW_LIMIT, weight: 1, shareFence: true, lineMs });
const writer = (lineMs?: number) => ({ limit: RW_LIMIT, weight: RW_LIMIT, lineMs });

/**
 * Every Redis name the store may have written for `k`, in every namespace, but the one that
 * outlives the leases for a while: the read/write lock's last write fence (see `lingers`).
 */
function namesOf(k: string): string[] {
  const lock = lockKeys(k);
  const permits = sharedKeys(k, 'permits');
  const rw = sharedKeys(k, 'rw');
  return [
    ...[lock.lease, lock.line, lock.waiters],
    ...[permits.holders, permits.data, permits.line, permits.places],
    ...[rw.holders, rw.line, rw.places],
  ];
}

/** The read/write lock's data, when left: only its fences and a zero weight, expiring. */
async function lingers(client: Redis, k: string): Promise<void> {
  const name = sharedKeys(k, 'rw').data;
  const fields = await client.hgetall(name);
  expect(Object.keys(fields).every((f) => ['last', 'share', 'total'].includes(f))).toBe(true);
  expect(fields.total ?? '0').toBe('0');
  const ttl = await client.pttl(name);
  expect(ttl === -2 || (ttl > 0 && ttl <= SHARED_FENCE_LINGER_MS)).toBe(true);
}

describe.runIf(reachable)('redis store capabilities on the shared server', () => {
  let ioredis: Redis;
  let nodeRedis: ReturnType<typeof createClient>;
  const stores: [string, () => RedisStore][] = [];

  beforeAll(async () => {
    ioredis = new Redis(6379, '127.0.0.1');
    nodeRedis = createClient({ url: 'redis://127.0.0.1:6379' });
    await nodeRedis.connect();
  });
  afterAll(async () => {
    for (const [, store] of stores) await store().close();
    await ioredis?.quit();
    await nodeRedis?.close();
  });

  const left = async (...keys: string[]) =>
    (await Promise.all(keys.flatMap(namesOf).map((n) => ioredis.exists(n)))).reduce(
      (a, b) => a + b,
      0,
    );

  for (const library of ['ioredis', 'node-redis'] as const) {
    let cached: RedisStore | undefined;
    const store = () => {
      cached ??= redisStore(library === 'ioredis' ? ioredis : nodeRedis);
      return cached;
    };
    stores.push([library, store]);

    describe(`${library}: several keys`, () => {
      it('takes all keys or none, with a fence each, and releases them all', async () => {
        const many = store().capabilities.keys!;
        const [a, b, c] = [key('a'), key('b'), key('c')];
        const one = newOwner();
        const two = newOwner();
        const got = await many.acquire([a, b], one, 10_000);
        expect(got?.fences).toHaveLength(2);
        expect(typeof got!.fences[0]).toBe('bigint');
        expect((await store().inspect(a))?.owner).toBe(one);
        expect((await store().inspect(b))?.fence).toBe(got!.fences[1]);
        // b is held: c is not taken either.
        expect(await many.acquire([c, b], two, 10_000)).toBeNull();
        expect(await store().inspect(c)).toBeNull();
        expect(await store().acquire(a, two, 10_000)).toBeNull();
        // The owner again: refreshed, same fences.
        expect((await many.acquire([a, b], one, 20_000))?.fences).toEqual(got!.fences);
        expect((await store().inspect(b))!.ttlMs).toBeGreaterThan(10_000);
        expect(await many.extend([a, b], two, 30_000)).toBe(false);
        expect(await many.extend([a, b], one, 30_000)).toBe(true);
        expect((await store().inspect(a))!.ttlMs).toBeGreaterThan(20_000);
        expect(await many.release([a, b], two)).toBe(false);
        expect((await store().inspect(a))?.owner).toBe(one);
        expect(await many.release([a, b], one)).toBe(true);
        expect(await left(a, b, c)).toBe(0);
        // Fences rise per key.
        const again = await many.acquire([b, a], two, 10_000);
        expect(again!.fences[0]!).toBeGreaterThan(got!.fences[1]!);
        expect(await many.release([a, b], two)).toBe(true);
      });

      it('extend and release report a key no longer held, extending none of them', async () => {
        const many = store().capabilities.keys!;
        const [a, b] = [key('a'), key('b')];
        const one = newOwner();
        await many.acquire([a, b], one, 10_000);
        expect(await store().release(b, one)).toBe(true);
        expect(await many.extend([a, b], one, 60_000)).toBe(false);
        expect((await store().inspect(a))!.ttlMs).toBeLessThanOrEqual(10_000);
        expect(await many.release([a, b], one)).toBe(false);
        expect(await store().inspect(a)).toBeNull();
      });

      it('a refused set has the holder’s release announced, on each key', async () => {
        const many = store().capabilities.keys!;
        const [a, b] = [key('a'), key('b')];
        const [one, two] = [newOwner(), newOwner()];
        await store().acquire(b, one, 10_000);
        const heard: string[] = [];
        const stops = [a, b].map((k) => store().onRelease(k, () => heard.push(k)));
        await sleep(50); // subscribed (each wakes once when it is)
        heard.length = 0;
        expect(await many.acquire([a, b], two, 10_000)).toBeNull();
        expect(await store().release(b, one)).toBe(true);
        await sleep(50);
        expect(heard).toEqual([b]);
        expect(await many.acquire([a, b], two, 10_000)).not.toBeNull();
        expect(await many.release([a, b], two)).toBe(true);
        for (const stop of stops) stop();
        expect(await left(a, b)).toBe(0);
      });

      it('a value cachelock did not write refuses the set and stays as it is', async () => {
        const many = store().capabilities.keys!;
        const [a, b] = [key('a'), key('b')];
        await ioredis.set(leaseKey(b), '1', 'PX', 10_000);
        expect(await many.acquire([a, b], newOwner(), 10_000)).toBeNull();
        expect(await ioredis.get(leaseKey(b))).toBe('1');
        expect(await store().inspect(a)).toBeNull();
        await ioredis.del(leaseKey(b));
      });

      it('a release hands a key on to a single-key waiter in line, and says so', async () => {
        const many = store().capabilities.keys!;
        const [a, b] = [key('a'), key('b')];
        const one = newOwner();
        const waiter = newOwner();
        await many.acquire([a, b], one, 10_000);
        const heard: unknown[] = [];
        const stop = store().onRelease(a, (handoff) => heard.push(handoff));
        expect(await store().acquire(a, waiter, 10_000, { lineMs: 3_000 })).toBeNull();
        expect(await many.release([a, b], one)).toBe(true);
        expect((await store().inspect(a))?.owner).toBe(waiter);
        expect(heard).toContainEqual(expect.objectContaining({ owner: waiter }));
        stop();
        expect(await store().release(a, waiter)).toBe(true);
        expect(await left(a, b)).toBe(0);
      });

      it('one key of a set excludes the same key alone, and the namespaces stay apart', async () => {
        const a = key('a');
        const one = newOwner();
        expect(await store().capabilities.keys!.acquire([a], one, 10_000)).not.toBeNull();
        expect(await store().acquire(a, newOwner(), 10_000)).toBeNull();
        // The semaphore and the read/write lock of the same name are other locks.
        const permits = store().capabilities.permits!;
        const rw = store().capabilities.readersWriters!;
        const p = newOwner();
        const w = newOwner();
        expect(await permits.acquire(a, p, 10_000, semaphore(1))).not.toBeNull();
        expect(await rw.acquire(a, w, 10_000, writer())).not.toBeNull();
        expect(await permits.inspect(a)).toMatchObject([{ owner: p }]);
        expect(await rw.inspect(a)).toMatchObject([{ owner: w }]);
        expect(await store().capabilities.keys!.release([a], one)).toBe(true);
        expect(await permits.release(a, p)).toBe(true);
        expect(await rw.release(a, w)).toBe(true);
        expect(await left(a)).toBe(0);
      });
    });

    describe(`${library}: permits`, () => {
      const permits = (): SharedLeases => store().capabilities.permits!;

      it('admits up to the limit, with a rising fence each, and lists holders oldest first', async () => {
        const k = key('sem');
        const [a, b, c] = [newOwner(), newOwner(), newOwner()];
        const fa = await permits().acquire(k, a, 10_000, semaphore(2));
        const fb = await permits().acquire(k, b, 20_000, semaphore(2));
        expect(fb!.fence!).toBeGreaterThan(fa!.fence!);
        expect(await permits().acquire(k, c, 10_000, semaphore(2))).toBeNull();
        // Each obeys its own limit.
        expect(await permits().acquire(k, c, 10_000, semaphore(3))).not.toBeNull();
        expect(await permits().release(k, c)).toBe(true);
        const holders = await permits().inspect(k);
        expect(holders.map((h) => h.owner)).toEqual([a, b]);
        expect(holders[1]!.ttlMs).toBeGreaterThan(10_000);
        expect(holders[0]!.fence).toBe(fa!.fence);
        // The holder again: refreshed, same fence.
        expect((await permits().acquire(k, a, 30_000, semaphore(2)))?.fence).toBe(fa!.fence);
        expect(await permits().extend(k, c, 10_000)).toBe(false);
        expect(await permits().extend(k, b, 40_000)).toBe(true);
        expect((await permits().inspect(k)).map((h) => h.owner)).toEqual([a, b]);
        expect(await permits().release(k, c)).toBe(false);
        expect(await permits().release(k, a)).toBe(true);
        const fc = await permits().acquire(k, c, 10_000, semaphore(2));
        expect(fc!.fence!).toBeGreaterThan(fb!.fence!);
        expect(await permits().release(k, b)).toBe(true);
        expect(await permits().release(k, c)).toBe(true);
        expect(await permits().inspect(k)).toEqual([]);
        expect(await left(k)).toBe(0);
      });

      it('serves waiters first come, first served; a try does not jump the line', async () => {
        const k = key('fifo');
        const [a, w1, w2, t] = [newOwner(), newOwner(), newOwner(), newOwner()];
        let wakes = 0;
        const stop = permits().onRelease!(k, () => wakes++);
        await sleep(50); // the subscription is active (it wakes once when it is)
        wakes = 0;
        await permits().acquire(k, a, 10_000, semaphore(1));
        expect(await permits().acquire(k, w1, 10_000, semaphore(1, 3_000))).toBeNull();
        expect(await permits().acquire(k, w2, 10_000, semaphore(1, 3_000))).toBeNull();
        expect(await permits().release(k, a)).toBe(true);
        await sleep(50);
        expect(wakes).toBe(1);
        expect(await permits().acquire(k, t, 10_000, semaphore(1))).toBeNull();
        expect(await permits().acquire(k, w2, 10_000, semaphore(1, 3_000))).toBeNull();
        expect(await permits().acquire(k, w1, 10_000, semaphore(1, 3_000))).not.toBeNull();
        // A waiter that gives up leaves the line: the one behind it is next.
        expect(await permits().release(k, w1)).toBe(true);
        expect(await permits().acquire(k, t, 10_000, semaphore(1))).toBeNull();
        expect(await permits().acquire(k, w2, 10_000, semaphore(1, 3_000))).not.toBeNull();
        expect(await permits().release(k, w2)).toBe(true);
        expect(await permits().acquire(k, t, 10_000, semaphore(1))).not.toBeNull();
        expect(await permits().release(k, t)).toBe(true);
        stop();
        expect(await left(k)).toBe(0);
      });

      it('a freed permit goes to the first in line in the release, told to it as a hand-off', async () => {
        const k = key('hand-over');
        const [a, b, w] = [newOwner(), newOwner(), newOwner()];
        const told: (Handoff | undefined)[] = [];
        const stop = permits().onRelease!(k, (h) => told.push(h));
        try {
          await sleep(50); // subscribed
          const fa = await permits().acquire(k, a, 10_000, semaphore(2));
          await permits().acquire(k, b, 10_000, semaphore(2));
          expect(await permits().acquire(k, w, 10_000, semaphore(2, 3_000))).toBeNull();
          told.length = 0;
          expect(await permits().release(k, a)).toBe(true);
          // w holds a permit now, for a claim of at most its place's 3 s, with a higher fence.
          const holders = await permits().inspect(k);
          expect(holders.map((h) => h.owner).sort()).toEqual([b, w].sort());
          const held = holders.find((h) => h.owner === w)!;
          expect(held.ttlMs).toBeLessThanOrEqual(3_000);
          expect(held.fence!).toBeGreaterThan(fa!.fence!);
          await vi_waitFor(() => told.some((h) => h?.owner === w));
          expect(told.find((h) => h?.owner === w)).toMatchObject({ fence: held.fence });
          // Nobody else is admitted past the limit, and w's acquire confirms the same fence.
          expect(await permits().acquire(k, newOwner(), 10_000, semaphore(2))).toBeNull();
          expect((await permits().acquire(k, w, 10_000, semaphore(2)))?.fence).toBe(held.fence);
          expect(await permits().release(k, w)).toBe(true);
          expect(await permits().release(k, b)).toBe(true);
        } finally {
          stop();
        }
        expect(await left(k)).toBe(0);
      });

      it("a permit handed over is claimed for at most its waiter's ttl, so one that died in line holds it no longer", async () => {
        const k = key('claim-ttl');
        const [a, w] = [newOwner(), newOwner()];
        await permits().acquire(k, a, 10_000, semaphore(1));
        // A place of 3 s, a ttl of 400 ms: w never comes for the permit handed to it.
        expect(await permits().acquire(k, w, 400, semaphore(1, 3_000))).toBeNull();
        expect(await permits().release(k, a)).toBe(true);
        const held = (await permits().inspect(k)).find((h) => h.owner === w)!;
        expect(held.ttlMs).toBeLessThanOrEqual(400);
        await sleep(500);
        expect(await permits().acquire(k, newOwner(), 10_000, semaphore(1))).not.toBeNull();
      });

      it('a hand-over made before its waiter was refused again is not told to it', async () => {
        const k = key('stale-hand-over');
        const [a, c, w] = [newOwner(), newOwner(), newOwner()];
        const early: (Handoff | undefined)[] = [];
        const stopEarly = permits().onRelease!(k, (h) => early.push(h));
        try {
          await sleep(50);
          await permits().acquire(k, a, 10_000, semaphore(1));
          // A place of 300 ms: the permit handed over is claimed for less than that.
          expect(await permits().acquire(k, w, 10_000, semaphore(1, 300))).toBeNull();
          expect(await permits().release(k, a)).toBe(true);
          await vi_waitFor(() => early.some((h) => h?.owner === w));
          await sleep(400); // the claim ran out unconfirmed
          expect(await permits().acquire(k, c, 10_000, semaphore(1))).not.toBeNull();
          expect(await permits().acquire(k, w, 10_000, semaphore(1, 3_000))).toBeNull();
          const late: (Handoff | undefined)[] = [];
          const stopLate = permits().onRelease!(k, (h) => late.push(h));
          try {
            await sleep(100); // the channel's last wake-ups are told again: not that one
            expect(late.filter((h) => h?.owner === w)).toEqual([]);
            expect(await permits().release(k, c)).toBe(true);
            await vi_waitFor(() => late.some((h) => h?.owner === w));
          } finally {
            stopLate();
          }
          expect(await permits().release(k, w)).toBe(true);
        } finally {
          stopEarly();
        }
        expect(await left(k)).toBe(0);
      });

      it('a release hands over past many lapsed places, in order, and the rest wait their turn', async () => {
        const k = key('lapsed-line');
        const [a, w, v] = [newOwner(), newOwner(), newOwner()];
        const fa = await permits().acquire(k, a, 10_000, semaphore(1));
        // More lapsed places ahead than a release reads at once.
        for (let i = 0; i < 6; i++) {
          expect(await permits().acquire(k, newOwner(), 10_000, semaphore(1, 100))).toBeNull();
        }
        expect(await permits().acquire(k, w, 10_000, semaphore(1, 3_000))).toBeNull();
        expect(await permits().acquire(k, v, 10_000, semaphore(1, 3_000))).toBeNull();
        await sleep(150);
        expect(await permits().release(k, a)).toBe(true);
        const [held] = await permits().inspect(k);
        expect(held).toMatchObject({ owner: w });
        expect(held!.fence!).toBeGreaterThan(fa!.fence!);
        expect(await permits().acquire(k, newOwner(), 10_000, semaphore(1))).toBeNull();
        expect(await permits().release(k, w)).toBe(true);
        expect((await permits().inspect(k)).map((h) => h.owner)).toEqual([v]);
        expect(await permits().release(k, v)).toBe(true);
        expect(await left(k)).toBe(0);
      });

      it('a waiter that leaves the head of the line lets in everyone behind it that now fits', async () => {
        const k = key('leave-head');
        const [a, first, b, c, d] = [newOwner(), newOwner(), newOwner(), newOwner(), newOwner()];
        await permits().acquire(k, a, 10_000, semaphore(3));
        // The first in line counts on 1 permit, the ones behind it on 3: they wait behind it.
        expect(await permits().acquire(k, first, 10_000, semaphore(1, 3_000))).toBeNull();
        for (const o of [b, c, d]) {
          expect(await permits().acquire(k, o, 10_000, semaphore(3, 3_000))).toBeNull();
        }
        expect(await permits().release(k, first)).toBe(false);
        expect((await permits().inspect(k)).map((h) => h.owner).sort()).toEqual([a, b, c].sort());
        expect(await permits().release(k, b)).toBe(true);
        expect((await permits().inspect(k)).map((h) => h.owner).sort()).toEqual([a, c, d].sort());
        for (const o of [a, c, d]) expect(await permits().release(k, o)).toBe(true);
        expect(await left(k)).toBe(0);
      });

      it('a lapsed place and an expired lease stop counting, and then leave nothing', async () => {
        const k = key('lapse');
        const [a, b, w, t] = [newOwner(), newOwner(), newOwner(), newOwner()];
        await permits().acquire(k, a, 100, semaphore(2));
        await permits().acquire(k, b, 200, semaphore(2));
        expect(await permits().acquire(k, w, 10_000, semaphore(2, 100))).toBeNull();
        await sleep(150);
        expect(await permits().acquire(k, t, 100, semaphore(2))).not.toBeNull();
        expect(await permits().extend(k, a, 10_000)).toBe(false);
        expect((await permits().inspect(k)).map((h) => h.owner)).toEqual([b, t]);
        await sleep(1_300);
        expect(await left(k)).toBe(0);
      });
    });

    it(`${library}: leases whose data was evicted count as everything until they end`, async () => {
      const permits = store().capabilities.permits!;
      const k = key('evicted');
      const [a, b] = [newOwner(), newOwner()];
      await permits.acquire(k, a, 300, semaphore(5));
      await ioredis.del(sharedKeys(k, 'permits').data);
      expect(await permits.acquire(k, b, 10_000, semaphore(5))).toBeNull();
      await sleep(350);
      expect(await permits.acquire(k, b, 10_000, semaphore(5))).not.toBeNull();
      expect(await permits.release(k, b)).toBe(true);
      expect(await left(k)).toBe(0);
    });

    it(`${library}: leases whose data was evicted still count after one of them ends`, async () => {
      const permits = store().capabilities.permits!;
      const k = key('evicted-end');
      const [a, b, c, d, e] = [newOwner(), newOwner(), newOwner(), newOwner(), newOwner()];
      await permits.acquire(k, a, 10_000, semaphore(2));
      await permits.acquire(k, b, 10_000, semaphore(2));
      await permits.acquire(k, c, 300, semaphore(3));
      await ioredis.del(sharedKeys(k, 'permits').data);
      // One lease released, another run out: neither may restart the count at zero.
      expect(await permits.release(k, a)).toBe(true);
      await sleep(350);
      expect(await permits.acquire(k, d, 10_000, semaphore(2))).toBeNull();
      expect(await permits.acquire(k, e, 10_000, semaphore(2))).toBeNull();
      expect((await permits.inspect(k)).length).toBeLessThanOrEqual(2);
      for (const owner of [b, d, e]) await permits.release(k, owner);
    });

    it(`${library}: a holder asking again after its data was evicted is refused, not an error`, async () => {
      const permits = store().capabilities.permits!;
      const k = key('evicted-again');
      const a = newOwner();
      expect(await permits.acquire(k, a, 300, semaphore(2))).not.toBeNull();
      await ioredis.del(sharedKeys(k, 'permits').data);
      expect(await permits.acquire(k, a, 10_000, semaphore(2))).toBeNull();
      await sleep(350);
      expect(await permits.acquire(k, a, 10_000, semaphore(2))).not.toBeNull();
      expect(await permits.release(k, a)).toBe(true);
    });

    describe(`${library}: readers and writers`, () => {
      const rw = (): SharedLeases => store().capabilities.readersWriters!;

      it('many readers or one writer; a waiting writer holds back new readers', async () => {
        const k = key('rw');
        const [r1, r2, r3, w] = [newOwner(), newOwner(), newOwner(), newOwner()];
        const f1 = await rw().acquire(k, r1, 10_000, reader());
        const f2 = await rw().acquire(k, r2, 10_000, reader());
        expect(f1?.fence).toBeDefined();
        expect(f2?.fence).toBe(f1!.fence);
        expect(await rw().acquire(k, w, 10_000, writer(3_000))).toBeNull();
        expect(await rw().acquire(k, r3, 10_000, reader())).toBeNull();
        expect(await rw().release(k, r1)).toBe(true);
        expect(await rw().acquire(k, w, 10_000, writer(3_000))).toBeNull();
        expect(await rw().release(k, r2)).toBe(true);
        const fw = await rw().acquire(k, w, 10_000, writer(3_000));
        expect(fw!.fence!).toBeGreaterThan(f1!.fence!);
        expect(await rw().acquire(k, r3, 10_000, reader(3_000))).toBeNull();
        expect(await rw().release(k, w)).toBe(true);
        // Readers share the fence of the last write before them.
        expect((await rw().acquire(k, r3, 10_000, reader(3_000)))?.fence).toBe(fw!.fence);
        expect((await rw().acquire(k, r1, 10_000, reader()))?.fence).toBe(fw!.fence);
        const w2 = newOwner();
        expect(await rw().acquire(k, w2, 10_000, writer())).toBeNull();
        expect(await rw().release(k, r1)).toBe(true);
        expect(await rw().release(k, r3)).toBe(true);
        const fw2 = await rw().acquire(k, w2, 10_000, writer());
        expect(fw2!.fence!).toBeGreaterThan(fw!.fence!);
        expect(await rw().release(k, w2)).toBe(true);
        expect(await left(k)).toBe(0);
        await lingers(ioredis, k);
        // After a while with nothing held, a reader still shares the last write's fence.
        const r4 = newOwner();
        expect((await rw().acquire(k, r4, 10_000, reader()))?.fence).toBe(fw2!.fence);
        expect(await rw().release(k, r4)).toBe(true);
      });

      it('a writer’s release wakes the readers in line, and each admitted one wakes the next', async () => {
        const k = key('cascade');
        const [w, r1, r2] = [newOwner(), newOwner(), newOwner()];
        let wakes = 0;
        const stop = rw().onRelease!(k, () => wakes++);
        await sleep(50);
        wakes = 0;
        await rw().acquire(k, w, 10_000, writer());
        expect(await rw().acquire(k, r1, 10_000, reader(3_000))).toBeNull();
        expect(await rw().acquire(k, r2, 10_000, reader(3_000))).toBeNull();
        await rw().release(k, w);
        await sleep(50);
        expect(wakes).toBe(1);
        expect(await rw().acquire(k, r1, 10_000, reader(3_000))).not.toBeNull();
        await sleep(50);
        expect(wakes).toBe(2);
        expect(await rw().acquire(k, r2, 10_000, reader(3_000))).not.toBeNull();
        await sleep(50);
        // Nobody left in line: no more wake-ups.
        expect(wakes).toBe(2);
        expect(await rw().release(k, r1)).toBe(true);
        expect(await rw().release(k, r2)).toBe(true);
        stop();
        expect(await left(k)).toBe(0);
      });

      it('holdAtLeast keeps a writer’s lease for keepMs', async () => {
        const k = key('keep');
        const [w, r] = [newOwner(), newOwner()];
        await rw().acquire(k, w, 10_000, writer());
        expect(await rw().release(k, w, 100)).toBe(true);
        expect((await rw().inspect(k))[0]!.ttlMs).toBeLessThanOrEqual(100);
        expect(await rw().acquire(k, r, 10_000, reader())).toBeNull();
        await sleep(150);
        expect(await rw().acquire(k, r, 10_000, reader())).not.toBeNull();
        expect(await rw().release(k, r)).toBe(true);
      });
    });
  }
  // ioredis and node-redis on one server stand for two processes.
  describePrimitives(() => [stores[0]![1](), stores[1]![1]()]);
});

describe.runIf(runs)('redis store capabilities on a throwaway server', () => {
  let server: RedisServer;
  let client: Redis;
  let store: RedisStore;

  beforeAll(async () => {
    server = await RedisServer.start();
    client = new Redis(server.port, '127.0.0.1');
    store = redisStore(client);
  });
  afterAll(async () => {
    await store?.close();
    client?.disconnect();
    await server?.dispose();
  });

  const evalshaCalls = async () => {
    const stats = await server.cli('info', 'commandstats');
    return Number(/cmdstat_evalsha:calls=(\d+)/.exec(stats)?.[1] ?? 0);
  };

  it('two keys taken and released uncontended: two commands, and nothing left', async () => {
    const many = store.capabilities.keys!;
    const owner = newOwner();
    await many.acquire(['warm:a', 'warm:b'], owner, 10_000);
    await many.release(['warm:a', 'warm:b'], owner);
    const before = await evalshaCalls();
    expect(await many.acquire(['{acct}:1', '{acct}:2'], owner, 10_000)).not.toBeNull();
    expect(await many.release(['{acct}:1', '{acct}:2'], owner)).toBe(true);
    expect((await evalshaCalls()) - before).toBe(2);
    expect(await client.dbsize()).toBe(0);
  });

  it('semaphores used and released leave no keys; read/write locks only their last write fence, for a while', async () => {
    const permits = store.capabilities.permits!;
    const rw = store.capabilities.readersWriters!;
    await Promise.all(
      Array.from({ length: 200 }, async (_, i) => {
        const owners = [newOwner(), newOwner(), newOwner()];
        const k = `gone:${i}`;
        await permits.acquire(k, owners[0]!, 10_000, semaphore(2));
        await permits.acquire(k, owners[1]!, 10_000, semaphore(2));
        await permits.acquire(k, owners[2]!, 10_000, semaphore(2, 3_000));
        await rw.acquire(k, owners[0]!, 10_000, reader());
        await rw.acquire(k, owners[1]!, 10_000, writer(3_000));
        for (const owner of owners) {
          await permits.release(k, owner);
          await rw.release(k, owner);
        }
      }),
    );
    // The semaphores leave nothing; each read/write lock only its last write fence, expiring.
    const left = await client.keys('*');
    expect(left).toHaveLength(200);
    for (const name of left) {
      expect(name.endsWith(':v2:rw:data')).toBe(true);
      const fields = await client.hgetall(name);
      expect(Object.keys(fields).sort()).toEqual(['last', 'share', 'total']);
      expect(fields.total).toBe('0');
      expect(await client.pttl(name)).toBeLessThanOrEqual(SHARED_FENCE_LINGER_MS);
    }
  });

  it('an extension that comes after its lease ran out leaves nothing that does not expire', async () => {
    const permits = store.capabilities.permits!;
    const rw = store.capabilities.readersWriters!;
    await client.flushall();
    const owner = newOwner();
    expect(await permits.acquire('late', owner, 100, semaphore(2))).not.toBeNull();
    expect(await rw.acquire('late', owner, 100, writer())).not.toBeNull();
    await new Promise((resolve) => setTimeout(resolve, 250));
    // Nothing else touches the keys: the failed extensions are the last word on them.
    expect(await permits.extend('late', owner, 10_000)).toBe(false);
    expect(await rw.extend('late', owner, 10_000)).toBe(false);
    for (const name of await client.keys('*')) {
      expect(await client.pttl(name), name).toBeGreaterThan(0);
      expect(await client.pttl(name), name).toBeLessThanOrEqual(SHARED_FENCE_LINGER_MS);
    }
  });

  it('fences rise across a restart of a server that keeps nothing', async () => {
    const permits = store.capabilities.permits!;
    const first = await permits.acquire('restart', newOwner(), 10_000, semaphore(1));
    await server.restart();
    const fresh = new Redis(server.port, '127.0.0.1');
    const after = redisStore(fresh);
    try {
      const second = await after.capabilities.permits!.acquire(
        'restart',
        newOwner(),
        10_000,
        semaphore(1),
      );
      expect(second!.fence!).toBeGreaterThan(first!.fence!);
    } finally {
      await after.close();
      fresh.disconnect();
    }
  });
});

describe.runIf(reachable)('Lock on several Redis keys, through the core', () => {
  let client: Redis;
  beforeAll(() => {
    client = new Redis(6379, '127.0.0.1');
  });
  afterAll(async () => {
    await closeAll();
    await client?.quit();
  });

  it('takes every key in one step, excludes each key alone, and never deadlocks the reverse', async () => {
    const tag = `{transfer-${process.pid}-${Date.now()}}`;
    const [a, b] = [`${tag}:1`, `${tag}:2`];
    const both = await Lock.acquire([a, b], { cache: client, ttl: '10s' });
    expect(both.keys).toEqual([a, b]);
    expect(typeof both.fences.get(b)).toBe('bigint');
    await expect(Lock.acquire(b, { cache: client })).rejects.toMatchObject({ code: 'LOCKED' });
    expect(await both.release()).toBe(true);
    let inside = 0;
    let sections = 0;
    await Promise.all(
      Array.from({ length: 8 }, async (_, i) => {
        const keys = i % 2 ? [a, b] : [b, a];
        for (let n = 0; n < 10; n++) {
          const lock = await Lock.acquire(keys, { cache: client, ttl: '10s', wait: '20s' });
          expect(++inside).toBe(1);
          await sleep(1);
          inside--;
          sections++;
          expect(await lock.release()).toBe(true);
        }
      }),
    );
    expect(sections).toBe(80);
    expect(await client.exists(leaseKey(`cachelock:${a}`), leaseKey(`cachelock:${b}`))).toBe(0);
  });
});

describe.runIf(reachable)('Semaphore and ReadWriteLock on Redis, through the core', () => {
  let clients: Redis[];
  beforeAll(() => {
    clients = Array.from({ length: 3 }, () => new Redis(6379, '127.0.0.1'));
  });
  afterAll(async () => {
    await closeAll();
    for (const client of clients ?? []) await client.quit();
  });

  it('at most `permits` sections at once across clients, each permit with a fence of its own', async () => {
    const k = key('core-sem');
    let inside = 0;
    let most = 0;
    const fences: bigint[] = [];
    await Promise.all(
      Array.from({ length: 6 }, async (_, i) => {
        const semaphore = new Semaphore(k, {
          cache: clients[i % 3]!,
          permits: 2,
          ttl: '10s',
          wait: '20s',
        });
        for (let n = 0; n < 8; n++) {
          await using permit = await semaphore.acquire();
          fences.push(permit.fence!);
          most = Math.max(most, ++inside);
          await sleep(2);
          inside--;
        }
      }),
    );
    expect(most).toBe(2);
    expect(new Set(fences).size).toBe(48);
    expect(await left(k)).toBe(0);
  });

  it('Semaphore.inspect lists the holders oldest first; a waiter gets a released permit', async () => {
    const k = key('core-inspect');
    const options = { cache: clients[0]!, permits: 2, ttl: '10s' };
    const first = await new Semaphore(k, options).acquire();
    const second = await new Semaphore(k, { ...options, cache: clients[1]! }).acquire();
    const { holders } = await Semaphore.inspect(k, { cache: clients[2]! });
    expect(holders.map((h) => h.fence)).toEqual([first.fence, second.fence]);
    expect(holders[0]!.pid).toBe(process.pid);
    const waiting = new Semaphore(k, { ...options, cache: clients[2]!, wait: '10s' }).acquire();
    await sleep(100);
    await first.release();
    const third = await waiting;
    expect(third.fence!).toBeGreaterThan(second.fence!);
    await second.release();
    await third.release();
    expect((await Semaphore.inspect(k, { cache: clients[0]! })).holders).toEqual([]);
  });

  it('readers together, and a writer alone', async () => {
    const k = key('core-rw');
    let readers = 0;
    let writers = 0;
    let overlap = false;
    let readersAtOnce = 0;
    await Promise.all(
      Array.from({ length: 6 }, async (_, i) => {
        const rw = new ReadWriteLock(k, { cache: clients[i % 3]!, ttl: '10s', wait: '20s' });
        for (let n = 0; n < 6; n++) {
          if ((i + n) % 3 === 0) {
            await using w = await rw.write();
            writers++;
            if (readers > 0 || writers > 1) overlap = true;
            await sleep(2);
            writers--;
            expect(typeof w.fence).toBe('bigint');
          } else {
            await using r = await rw.read();
            readers++;
            readersAtOnce = Math.max(readersAtOnce, readers);
            if (writers > 0) overlap = true;
            await sleep(2);
            readers--;
            expect(typeof r.fence).toBe('bigint');
          }
        }
      }),
    );
    expect(overlap).toBe(false);
    expect(readersAtOnce).toBeGreaterThan(1);
    expect(await left(k)).toBe(0);
  });
});

async function left(k: string): Promise<number> {
  const client = new Redis(6379, '127.0.0.1');
  try {
    let n = 0;
    for (const name of namesOf(`cachelock:${k}`)) n += await client.exists(name);
    return n;
  } finally {
    client.disconnect();
  }
}

async function vi_waitFor(probe: () => boolean | Promise<boolean>): Promise<void> {
  const deadline = Date.now() + 5_000;
  while (!(await probe())) {
    if (Date.now() > deadline) throw new Error('condition not met within 5 s');
    await sleep(10);
  }
}
