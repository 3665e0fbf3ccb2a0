import { Lock, LockedError, LockTimeoutError, newOwner, StoreError } from 'cachelock';
import { lockKeys } from 'cachelock/redis';
import { type RedlockStore, redlockStore } from 'cachelock/redlock';
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
async function quorum() {
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
    store: redlockStore([...ioredis, nodeRedis]),
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
});
