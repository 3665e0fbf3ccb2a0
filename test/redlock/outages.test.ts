import { Lock, LockedError, LockTimeoutError, newOwner, StoreError } from 'cachelock';
import { lockKeys } from 'cachelock/redis';
import {
  type RedlockStore,
  type RedlockStoreOptions,
  redlockStore,
  storeFromUrl,
} from 'cachelock/redlock';
import { Redis } from 'ioredis';
import { createClient } from 'redis';
import { describe, expect, it } from 'vitest';
import { binaryOrSkip } from '../support/reachable.js';
import { RedisServer, sleep } from '../support/redis-server.js';

// Redlock promises to keep working while a minority of its servers is down or stalled: an
// operation must not wait for the missing server (serverTimeout is 1 s by default), and a
// majority that cannot be reached is a store failure, never "held by someone else".

const runs = await binaryOrSkip('Redlock outages', 'redis-server');
let counter = 0;
const key = (label: string) => `cachelock:redlock-outage:${process.pid}:${label}:${++counter}`;
const leaseName = (k: string) => `${lockKeys(k).lease}:redlock`;
const ROUNDS = 20;
/** Far below serverTimeout (1 s), far above a loopback round trip on a busy machine. */
const PROMPT_MS = 200;

/** Three throwaway servers; the third is driven by node-redis, the others by ioredis. */
async function quorum(options?: RedlockStoreOptions) {
  const servers = await Promise.all([0, 1, 2].map(() => RedisServer.start()));
  // Default client options, as a user would make them: ioredis queues commands while it
  // reconnects, node-redis too.
  const ioredis = servers.slice(0, 2).map((s) => new Redis(s.port, '127.0.0.1'));
  for (const c of ioredis) c.on('error', () => {});
  const nodeRedis = createClient({ url: servers[2]!.url });
  nodeRedis.on('error', () => {});
  await nodeRedis.connect();
  await Promise.all(ioredis.map((c) => c.ping()));
  return {
    servers,
    ioredis,
    nodeRedis,
    store: redlockStore([...ioredis, nodeRedis], options),
    /** Kill servers and wait until their clients noticed (a command already on its way to a
     * server that dies may wait for serverTimeout: the client keeps it to send again). */
    async kill(...indexes: number[]) {
      await Promise.all(indexes.map((i) => servers[i]!.kill()));
      const down = (i: number) => (i === 2 ? !nodeRedis.isReady : ioredis[i]!.status !== 'ready');
      const deadline = Date.now() + 5_000;
      while (!indexes.every(down)) {
        if (Date.now() > deadline) throw new Error('the clients did not notice the kill');
        await sleep(5);
      }
    },
    async dispose() {
      for (const s of servers) if (s.pid !== undefined) process.kill(s.pid, 'SIGCONT');
      for (const c of ioredis) c.disconnect();
      nodeRedis.destroy();
      await Promise.all(servers.map((s) => s.dispose()));
    },
  };
}

const median = (values: number[]) => [...values].sort((a, b) => a - b)[values.length >> 1]!;

/** `ROUNDS` rounds of acquire, extend, release through `Lock` with a 500 ms ttl, timed. */
async function rounds(store: RedlockStore, label: string) {
  const timings = { acquire: [] as number[], extend: [] as number[], release: [] as number[] };
  let held = 0;
  for (let i = 0; i < ROUNDS; i++) {
    const lock = new Lock(key(label), { cache: store, ttl: 500, autoExtend: false });
    let t = performance.now();
    await lock.acquire();
    timings.acquire.push(performance.now() - t);
    if (lock.held) held++;
    t = performance.now();
    await lock.extend();
    timings.extend.push(performance.now() - t);
    t = performance.now();
    expect(await lock.release()).toBe(true);
    timings.release.push(performance.now() - t);
  }
  return { held, timings };
}

function expectPrompt(timings: Record<string, number[]>) {
  for (const [operation, values] of Object.entries(timings)) {
    expect(values, operation).toHaveLength(ROUNDS);
    expect(median(values), `median ${operation} ms`).toBeLessThan(PROMPT_MS);
  }
}

describe.runIf(runs)('redlock with servers down or stalled', () => {
  it.each([
    ['an ioredis', 0],
    ['a node-redis', 2],
  ])(
    'with %s server killed, acquire, extend and release stay prompt with a 500 ms ttl',
    async (_, down) => {
      const q = await quorum();
      try {
        await q.kill(down);
        const { held, timings } = await rounds(q.store, 'one-down');
        expect(held).toBe(ROUNDS);
        expectPrompt(timings);

        // A waiting acquire over a free key is granted, not refused as "still held".
        const lock = new Lock(key('one-down-wait'), { cache: q.store, ttl: 500, wait: '2s' });
        const started = performance.now();
        await lock.acquire();
        expect(performance.now() - started).toBeLessThan(PROMPT_MS);
        expect(await lock.release()).toBe(true);
      } finally {
        await q.dispose();
      }
    },
  );

  it('with 2 of 3 servers killed, acquire is a prompt StoreError, never contention', async () => {
    const q = await quorum();
    try {
      await q.kill(0, 2);
      const k = key('two-down');
      const started = performance.now();
      await expect(q.store.acquire(k, newOwner(), 500)).rejects.toThrow(/2 of 3 servers/);
      expect(performance.now() - started).toBeLessThan(PROMPT_MS);

      for (const wait of [0, 2_000]) {
        const lock = new Lock(k, { cache: q.store, ttl: 500, wait });
        const at = performance.now();
        const error = await lock.acquire().catch((e: unknown) => e);
        expect(error).toBeInstanceOf(StoreError);
        expect(error).not.toBeInstanceOf(LockedError);
        expect(error).not.toBeInstanceOf(LockTimeoutError);
        expect(performance.now() - at, `wait ${wait}`).toBeLessThan(PROMPT_MS);
      }
      // Nothing is left behind on the one live server.
      expect(await q.ioredis[1]!.get(leaseName(k))).toBeNull();
    } finally {
      await q.dispose();
    }
  });

  it('with 1 of 3 servers stalled (SIGSTOP), operations stay prompt and leave nothing behind', async () => {
    const q = await quorum();
    const stalled = q.servers[1]!;
    try {
      process.kill(stalled.pid!, 'SIGSTOP');
      const { held, timings } = await rounds(q.store, 'stalled');
      expect(held).toBe(ROUNDS);
      expectPrompt(timings);

      // Refused by the two live servers while another owner holds it there: contention.
      const k = key('stalled-held');
      const other = newOwner();
      await Promise.all([
        q.ioredis[0]!.set(leaseName(k), other, 'PX', 10_000),
        q.nodeRedis.set(leaseName(k), other, { PX: 10_000 }),
      ]);
      const started = performance.now();
      expect(await q.store.acquire(k, newOwner(), 500)).toBeNull();
      expect(performance.now() - started).toBeLessThan(PROMPT_MS);

      // Once it runs again the stalled server works through what it was sent: every acquire
      // there is followed by its release, so no lease of ours is left on it.
      process.kill(stalled.pid!, 'SIGCONT');
      await expect
        .poll(() => q.ioredis[1]!.keys('*redlock-outage*'), { timeout: 3_000 })
        .toEqual([]);
    } finally {
      await q.dispose();
    }
  });

  it('with 1 of 3 servers killed, a lease shorter than serverTimeout is still granted', async () => {
    const q = await quorum();
    try {
      await q.kill(0);
      const k = key('short');
      const a = newOwner();
      expect(await q.store.acquire(k, a, 300)).toEqual({});
      expect(await q.store.acquire(k, newOwner(), 300)).toBeNull();
      expect(await q.store.release(k, a)).toBe(true);
    } finally {
      await q.dispose();
    }
  });

  it('with 1 of 3 servers down, a split vote is settled at once, also by a store opened by URL', async () => {
    const servers = await Promise.all([0, 1, 2].map(() => RedisServer.start()));
    const direct = new Redis(servers[0]!.port, '127.0.0.1');
    const url = `redlock:?${servers.map((s) => `server=${s.url}`).join('&')}`;
    const store = (await storeFromUrl(new URL(url))) as RedlockStore;
    try {
      await store.inspect(key('warm-up'));
      await servers[2]!.kill();
      // Through the outage, as the store's clients back off between reconnection attempts:
      // another owner holds the key on server 1 only, so server 3 would decide the vote.
      for (let i = 0; i < 6; i++) {
        const k = key('url-split');
        await direct.set(leaseName(k), newOwner(), 'PX', 10_000);
        const started = performance.now();
        expect(await store.acquire(k, newOwner(), 500)).toBeNull();
        expect(performance.now() - started, `attempt ${i}`).toBeLessThan(PROMPT_MS);
        await sleep(250);
      }
    } finally {
      await store.close();
      direct.disconnect();
      await Promise.all(servers.map((s) => s.dispose()));
    }
  });

  it('a vote does not wait for a command that was on its way to a server that died, and the server keeps nothing when it comes back', async () => {
    const q = await quorum({ serverTimeout: '5s' });
    const victim = q.servers[1]!;
    try {
      const k = key('in-flight');
      const other = newOwner();
      const mine = newOwner();
      await q.ioredis[0]!.set(leaseName(k), other, 'PX', 10_000);
      // The acquire reaches server 2 and stays unanswered there; server 2 then dies with it on
      // the wire, and its client keeps it to send again once it reconnects.
      process.kill(victim.pid!, 'SIGSTOP');
      const attempt = q.store.acquire(k, mine, 2_000);
      await sleep(50);
      await q.kill(1);
      const killed = performance.now();
      expect(await attempt).toBeNull();
      expect(performance.now() - killed).toBeLessThan(PROMPT_MS);
      // Undone on the live server that granted it (the undo is not waited for).
      await expect.poll(() => q.nodeRedis.get(leaseName(k)), { timeout: 1_000 }).toBeNull();

      // Back, empty: the acquire it is sent again is undone after it, not before.
      await victim.launch();
      await expect.poll(() => q.ioredis[1]!.status, { timeout: 5_000 }).toBe('ready');
      await sleep(300);
      expect(await q.ioredis[1]!.get(leaseName(k))).toBeNull();
      // Once the other owner is gone, the key is free on a majority again.
      await q.ioredis[0]!.del(leaseName(k));
      expect(await q.store.acquire(k, newOwner(), 500)).toEqual({});
    } finally {
      await q.dispose();
    }
  });

  it.each(['url', 'clients'] as const)(
    'contenders hand one key over promptly while a member dies mid-stream (%s)',
    async (opened) => {
      const servers = await Promise.all([0, 1, 2].map(() => RedisServer.start()));
      const url = `redlock:?${servers.map((s) => `server=${s.url}`).join('&')}`;
      const stores: RedlockStore[] = [];
      const clients: Redis[] = [];
      for (let i = 0; i < 8; i++) {
        if (opened === 'url') {
          stores.push((await storeFromUrl(new URL(url))) as RedlockStore);
        } else {
          const mine = servers.map((s) => new Redis(s.port, '127.0.0.1'));
          for (const c of mine) c.on('error', () => {});
          clients.push(...mine);
          stores.push(redlockStore(mine, { serverTimeout: '5s' }));
        }
      }
      const k = key(`hand-over-${opened}`);
      let running = true;
      let released = performance.now();
      const gaps: number[] = [];
      const failures: unknown[] = [];
      const contend = async (store: RedlockStore) => {
        while (running) {
          const lock = new Lock(k, { cache: store, ttl: 1_000, autoExtend: true, wait: '10s' });
          try {
            await lock.acquire();
          } catch (error) {
            failures.push(error);
            continue;
          }
          gaps.push(performance.now() - released);
          await sleep(Math.random() * 10);
          try {
            await lock.release();
          } catch (error) {
            failures.push(error);
          }
          released = performance.now();
        }
      };
      try {
        const contenders = stores.map(contend);
        await sleep(500);
        const before = gaps.length;
        // Killed while the contenders keep it busy, so commands are on the wire to it.
        await servers[1]!.kill();
        await sleep(2_000);
        const during = gaps.length - before;
        await servers[1]!.launch();
        await sleep(1_000);
        running = false;
        await Promise.all(contenders);
        expect(failures).toEqual([]);
        expect(during).toBeGreaterThan(10);
        // A hand-over is a release and a poll of the next contender (at most 200 ms apart).
        expect(Math.max(...gaps)).toBeLessThan(600);
      } finally {
        running = false;
        await Promise.all(stores.map((s) => s.close()));
        for (const c of clients) c.disconnect();
        await Promise.all(servers.map((s) => s.dispose()));
      }
    },
  );
});
