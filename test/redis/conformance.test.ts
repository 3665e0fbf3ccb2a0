import { closeAll, Lock } from 'cachelock';
import { redisStore } from 'cachelock/redis';
import { runConformance } from 'cachelock/testing';
import { Redis } from 'ioredis';
import { createClient } from 'redis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { serverOrSkip } from '../support/reachable.js';

// The shared server: normal tests only, with keys unique per run (the suite's keys are).
const reachable = await serverOrSkip('Redis', 6379);

describe.runIf(reachable)('redis store on the shared server', () => {
  let ioredis: Redis;
  let nodeRedis: ReturnType<typeof createClient>;

  beforeAll(async () => {
    ioredis = new Redis(6379, '127.0.0.1');
    nodeRedis = createClient({ url: 'redis://127.0.0.1:6379' });
    await nodeRedis.connect();
  });
  afterAll(async () => {
    await ioredis?.quit();
    await nodeRedis?.close();
  });

  it('the core recognises both clients passed as `cache` and wraps them in this store', async () => {
    for (const client of [ioredis, nodeRedis]) {
      const key = `recognised:${process.pid}:${Math.random()}`;
      const lock = await Lock.acquire(key, { cache: client, ttl: '10s' });
      expect(typeof lock.fence).toBe('bigint');
      const holder = await Lock.inspect(key, { cache: client });
      expect(holder?.pid).toBe(process.pid);
      await expect(Lock.acquire(key, { cache: client })).rejects.toMatchObject({ code: 'LOCKED' });
      expect(await lock.release()).toBe(true);
    }
    await closeAll();
  });

  runConformance({ name: 'ioredis', describe, it, makeStore: () => redisStore(ioredis) });
  runConformance({ name: 'node-redis', describe, it, makeStore: () => redisStore(nodeRedis) });
});
