import { Lock, newOwner } from 'cachelock';
import { lockKeys, redisStore } from 'cachelock/redis';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { RELEASE } from '../../src/redis/release.js';
import { binaryOrSkip } from '../support/reachable.js';
import { RedisServer, sleep } from '../support/redis-server.js';
import { StallingProxy } from './fixtures/stalling-proxy.js';

const runs = await binaryOrSkip('Redis hand-off', 'redis-server');
let counter = 0;
const key = (label: string) => `handoff:${process.pid}:${label}:${++counter}`;

describe.runIf(runs)('redis hand-offs that arrive late', () => {
  let server: RedisServer;
  let direct: Redis;

  beforeAll(async () => {
    server = await RedisServer.start();
    direct = new Redis(server.port, '127.0.0.1');
  });
  afterAll(async () => {
    direct?.disconnect();
    await server?.dispose();
  });

  it('a waiter held back past its claim does not hold a key another owner took meanwhile', async () => {
    // Everything the waiter sends and hears goes through a proxy that can hold it back, as if
    // its process were paused: the hand-off then reaches it after its claim ran out.
    const proxy = await StallingProxy.start(server.port);
    const waiterClient = new Redis(proxy.port, '127.0.0.1');
    const waiterStore = redisStore(waiterClient);
    const store = redisStore(direct);
    const k = key('late');
    const names = lockKeys(k);
    const [holder, other] = [newOwner(), newOwner()];
    // A ttl of 300 ms makes the hand-off's claim 300 ms.
    const waiter = new Lock(k, { cache: waiterStore, prefix: '', ttl: 300, wait: '20s' });
    let settledAt: { held: boolean; aborted: boolean; otherHolds: boolean } | undefined;
    let otherHolds = false;
    try {
      expect(await store.acquire(k, holder, 30_000)).not.toBeNull();
      const waiting = waiter.acquire().then(() => {
        settledAt = { held: waiter.held, aborted: waiter.signal.aborted, otherHolds };
      });
      waiting.catch(() => {});
      await until(async () => {
        const [, subscribers] = (await direct.pubsub('NUMSUB', names.channel)) as [string, number];
        return subscribers >= 1 && (await direct.zcard(names.line)) >= 1;
      });
      proxy.stall();
      // Released as a holder in another process would: only the channel tells the waiter.
      expect(await direct.eval(RELEASE.text, 1, names.lease, holder, '0')).not.toBe(0);
      const handedTo = await store.inspect(k);
      expect(handedTo?.owner).not.toBe(holder);
      // The claim runs out and another owner takes the key with a higher fence.
      let taken = await store.acquire(k, other, 30_000);
      while (taken === null) {
        await sleep(10);
        taken = await store.acquire(k, other, 30_000);
      }
      otherHolds = true;
      expect(taken.fence!).toBeGreaterThan(handedTo!.fence!);
      proxy.resume();
      // The late hand-off and the late replies arrive now; the key is the other owner's.
      await Promise.race([waiting, sleep(1_000)]);
      expect(settledAt).toBeUndefined();
      expect(waiter.held).toBe(false);
      otherHolds = false;
      expect(await store.release(k, other)).toBe(true);
      await waiting;
      expect(settledAt).toEqual({ held: true, aborted: false, otherHolds: false });
      expect(waiter.fence!).toBeGreaterThan(taken.fence!);
      expect(await waiter.release()).toBe(true);
    } finally {
      proxy.resume();
      await waiter.release().catch(() => {});
      await waiterStore.close();
      waiterClient.disconnect();
      await proxy.close();
    }
  });
});

async function until(probe: () => boolean | Promise<boolean>, withinMs = 5_000): Promise<void> {
  const deadline = Date.now() + withinMs;
  while (!(await probe())) {
    if (Date.now() > deadline) throw new Error(`condition not met within ${withinMs} ms`);
    await sleep(10);
  }
}
