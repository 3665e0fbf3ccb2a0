import { closeAll, type Handoff, Lock, Semaphore } from 'cachelock';
import { type RedisStore, redisStore } from 'cachelock/redis';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { lockKeys, sharedKeys } from '../../src/redis/keys.js';
import { twoTriesInTurn } from '../support/joined-behind.js';
import { binaryOrSkip } from '../support/reachable.js';
import { RedisServer, sleep } from '../support/redis-server.js';

const runs = await binaryOrSkip('Redis store', 'redis-server');

describe.runIf(runs)('waiting on a Redis key (throwaway server)', () => {
  let server: RedisServer;

  beforeAll(async () => {
    server = await RedisServer.start();
  });
  afterAll(async () => {
    await closeAll();
    await server?.dispose();
  });

  it('a contended section costs two scripts however many wait: no polling while in line, no confirmation', async () => {
    const perSection: number[] = [];
    for (const workers of [3, 12]) {
      const key = `cachelock:test:${process.pid}:waiting:${workers}`;
      const clients = Array.from({ length: workers }, () => new Redis(server.port, '127.0.0.1'));
      const locks = clients.map((cache) => new Lock(key, { cache, ttl: '10s', wait: '30s' }));
      let inside = 0;
      let overlaps = 0;
      const run = (sections: number) =>
        Promise.all(
          locks.map(async (lock) => {
            for (let i = 0; i < sections; i++) {
              await lock.acquire();
              if (++inside > 1) overlaps++;
              await sleep(1);
              inside--;
              await lock.release();
            }
          }),
        );
      await run(2); // connected, scripts loaded, channels subscribed
      await server.cli('CONFIG', 'RESETSTAT');
      const sections = 10;
      await run(sections);
      const stats = await server.cli('INFO', 'commandstats');
      const scripts = Number(/cmdstat_evalsha:calls=(\d+)/.exec(stats)?.[1] ?? 0);
      perSection.push(scripts / (workers * sections));
      for (const c of clients) c.disconnect();
      expect(overlaps).toBe(0);
    }
    // One try that joins the line and the release that hands the key on: the hand-off is the
    // grant. (A hand-off that comes while the waiter's own try is out is confirmed by it.)
    for (const cost of perSection) expect(cost).toBeLessThanOrEqual(2.5);
  });

  it('a contended permit costs two scripts: the release hands it to the first in line', async () => {
    const key = `cachelock:test:${process.pid}:permits`;
    const clients = Array.from({ length: 6 }, () => new Redis(server.port, '127.0.0.1'));
    const semaphores = clients.map(
      (cache) => new Semaphore(key, { cache, permits: 2, ttl: '10s', wait: '30s' }),
    );
    let inside = 0;
    let most = 0;
    const run = (sections: number) =>
      Promise.all(
        semaphores.map(async (semaphore) => {
          for (let i = 0; i < sections; i++) {
            const permit = await semaphore.acquire();
            most = Math.max(most, ++inside);
            await sleep(1);
            inside--;
            await permit.release();
          }
        }),
      );
    try {
      await run(2);
      await server.cli('CONFIG', 'RESETSTAT');
      const sections = 10;
      await run(sections);
      const stats = await server.cli('INFO', 'commandstats');
      const scripts = Number(/cmdstat_evalsha:calls=(\d+)/.exec(stats)?.[1] ?? 0);
      expect(most).toBeLessThanOrEqual(2);
      // The try that joins the line and the release that hands the permit on.
      expect(scripts / (semaphores.length * sections)).toBeLessThanOrEqual(2.5);
    } finally {
      for (const c of clients) c.disconnect();
    }
  });

  it('a waiter granted by a hand-off is extended to its ttl before the claim runs out', async () => {
    const key = `cachelock:test:${process.pid}:claim`;
    const cache = new Redis(server.port, '127.0.0.1');
    const other = new Redis(server.port, '127.0.0.1');
    try {
      const holder = await Lock.acquire(key, { cache: other, ttl: '10s' });
      const waiter = new Lock(key, { cache, ttl: '10s', wait: '30s' });
      const waiting = waiter.acquire();
      await sleep(200); // in line
      await holder.release();
      await waiting;
      // Handed over with a claim of at most the place's 3 s, not the 10 s asked for.
      const claim = await Lock.inspect(key, { cache });
      expect(claim?.owner).not.toBe('');
      expect(claim!.ttlMs).toBeLessThanOrEqual(3_000);
      expect(waiter.fence).toBe(claim!.fence);
      // Held on past the claim: extended to the ttl within the first third of the claim.
      await sleep(3_500);
      expect(waiter.held).toBe(true);
      const after = await Lock.inspect(key, { cache });
      expect(after!.fence).toBe(waiter.fence);
      expect(after!.ttlMs).toBeGreaterThan(5_000);
      expect(await waiter.release()).toBe(true);
    } finally {
      cache.disconnect();
      other.disconnect();
    }
  });

  it('a try that joined the line before another waiter of the process does not hold the key up', async () => {
    const key = `cachelock:test:${process.pid}:joined-behind`;
    const cache = new Redis(server.port, '127.0.0.1');
    const other = new Redis(server.port, '127.0.0.1');
    const store = redisStore(cache);
    // The first try's answer comes late: it is first in the server's line, but the second try,
    // answered at once, is the first waiter of the process, the one that listens and asks.
    let late = true;
    const slow = new Proxy(store, {
      get(target, name) {
        if (name === 'acquire') {
          return async (...args: Parameters<RedisStore['acquire']>) => {
            const delayed = late;
            late = false;
            const got = await target.acquire(...args);
            if (delayed) await sleep(50);
            return got;
          };
        }
        const value = Reflect.get(target, name, target) as unknown;
        return typeof value === 'function' ? value.bind(target) : value;
      },
    });
    try {
      const holder = await Lock.acquire(key, { cache: other, ttl: '10s' });
      const { served, afterReleaseMs } = await twoTriesInTurn(key, { cache: slow }, () =>
        holder.release(),
      );
      // Handed to the first try's place, the key sat unused until its claim ran out (3 s): that
      // waiter does not listen until its turn in the process, and the other was refused.
      expect(afterReleaseMs).toBeLessThan(1_000);
      expect(served).toEqual(['second', 'first']);
    } finally {
      await store.close();
      cache.disconnect();
      other.disconnect();
    }
  });

  it('without autoExtend a waiter confirms its hand-off, so that it holds the whole ttl', async () => {
    const key = `cachelock:test:${process.pid}:claim-fixed`;
    const cache = new Redis(server.port, '127.0.0.1');
    const other = new Redis(server.port, '127.0.0.1');
    try {
      const holder = await Lock.acquire(key, { cache: other, ttl: '10s' });
      const waiter = new Lock(key, { cache, ttl: '10s', wait: '30s', autoExtend: false });
      const waiting = waiter.acquire();
      await sleep(200);
      await holder.release();
      await waiting;
      const info = await Lock.inspect(key, { cache });
      expect(info!.fence).toBe(waiter.fence);
      expect(info!.ttlMs).toBeGreaterThan(5_000);
      expect(await waiter.release()).toBe(true);
    } finally {
      cache.disconnect();
      other.disconnect();
    }
  });

  describe("a hand-off is published to the waiter's store alone", () => {
    type Listen = (store: RedisStore, key: string, listener: (h?: Handoff) => void) => () => void;
    type Join = (store: RedisStore, key: string, owner: string) => Promise<unknown>;
    type Leave = (store: RedisStore, key: string, owner: string) => Promise<boolean>;
    const permits = (store: RedisStore) => store.capabilities.permits;
    /** The key's channel, its old wake hash, and the wake channel a waiter's entry names. */
    type Names = (key: string) => {
      channel: string;
      wake: string;
      wakeOf: (admin: Redis, owner: string) => Promise<string | null | undefined>;
    };
    const cases: [string, Names, Listen, Join, Join, Leave][] = [
      [
        'lock',
        (key) => {
          const names = lockKeys(key);
          return { ...names, wakeOf: (admin, owner) => admin.hget(names.wake, owner) };
        },
        (store, key, listener) => store.onRelease(key, listener),
        (store, key, owner) => store.acquire(key, owner, 10_000),
        (store, key, owner) => store.acquire(key, owner, 10_000, { lineMs: 5_000 }),
        (store, key, owner) => store.release(key, owner),
      ],
      [
        'permits',
        (key) => {
          const names = sharedKeys(key, 'permits');
          // A place ends with its store's wake channel.
          const wakeOf = async (admin: Redis, owner: string) =>
            /:(cachelock:wake:.*)$/.exec((await admin.hget(names.places, owner)) ?? '')?.[1];
          return { ...names, wakeOf };
        },
        (store, key, listener) => permits(store).onRelease!(key, listener),
        (store, key, owner) => permits(store).acquire(key, owner, 10_000, { limit: 1, weight: 1 }),
        (store, key, owner) =>
          permits(store).acquire(key, owner, 10_000, { limit: 1, weight: 1, lineMs: 5_000 }),
        (store, key, owner) => permits(store).release(key, owner),
      ],
    ];
    for (const [name, namesOf, listen, take, join, leave] of cases) {
      it(`${name}: on its wake channel, and on the key's when its store listens on none`, async () => {
        // Not ASCII: the wake message names the key's channel by its length in bytes.
        const key = `cachelock:test:${process.pid}:wake:${name}:ключ✓`;
        const { channel, wake, wakeOf } = namesOf(key);
        const clients = Array.from({ length: 4 }, () => new Redis(server.port, '127.0.0.1'));
        const [holder, waiter, bystander, silent] = clients.map((c) => redisStore(c));
        const spy = new Redis(server.port, '127.0.0.1');
        const published: string[] = [];
        spy.on('pmessage', (_pattern: string, on: string) => published.push(on));
        try {
          await spy.psubscribe('*');
          const told: (Handoff | undefined)[] = [];
          const stops = [
            listen(waiter!, key, (h) => told.push(h)),
            listen(bystander!, key, () => {}),
          ];
          const admin = clients[0]!;
          const subscribed = async () => {
            for (let i = 0; i < 100; i++) {
              const [, n] = (await admin.call('PUBSUB', 'NUMSUB', channel)) as [string, number];
              if (Number(n) === 2) return;
              await sleep(20);
            }
            throw new Error(`${channel} never had 2 subscribers`);
          };
          await subscribed();

          expect(await take(holder!, key, 'h1')).not.toBeNull();
          expect(await join(waiter!, key, 'w1')).toBeNull();
          expect(await wakeOf(admin, 'w1')).toMatch(/^cachelock:wake:/);
          published.length = 0;
          expect(await leave(holder!, key, 'h1')).toBe(true);
          for (let i = 0; i < 100 && !told.some((h) => h?.owner === 'w1'); i++) await sleep(20);
          expect(told.find((h) => h?.owner === 'w1')).toBeDefined();
          await sleep(100); // anything else published arrives meanwhile
          expect(published).toHaveLength(1);
          expect(published[0]).toMatch(/^cachelock:wake:/);

          // A store that never listened (as an older version's) leaves no wake channel: its
          // waiter's hand-off comes on the key's channel, which every store there hears.
          expect(await join(silent!, key, 's1')).toBeNull();
          published.length = 0;
          expect(await leave(waiter!, key, 'w1')).toBe(true);
          for (let i = 0; i < 100 && !published.includes(channel); i++) await sleep(20);
          expect(published).toEqual([channel]);
          expect(await admin.exists(wake)).toBe(0);
          expect(await leave(silent!, key, 's1')).toBe(true);
          for (const stop of stops) stop();
        } finally {
          spy.disconnect();
          for (const c of clients) c.disconnect();
        }
      });
    }
  });
});
