import { closeAll, Lock, newOwner } from 'cachelock';
import { lockKeys, redisStore } from 'cachelock/redis';
import { runConformance } from 'cachelock/testing';
import { Cluster } from 'ioredis';
import { createCluster } from 'redis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { binaryOrSkip } from '../support/reachable.js';
import { RedisCluster } from '../support/redis-server.js';

const runs = await binaryOrSkip('Redis Cluster', 'redis-server');

describe.runIf(runs)('redis store on a 3-master Cluster', () => {
  let cluster: RedisCluster;
  let ioredis: Cluster;
  let nodeRedis: ReturnType<typeof createCluster>;

  beforeAll(async () => {
    cluster = await RedisCluster.start(3);
    ioredis = new Cluster(cluster.nodes);
    nodeRedis = createCluster({
      rootNodes: cluster.nodes.map((n) => ({ url: `redis://${n.host}:${n.port}` })),
    });
    await nodeRedis.connect();
  });
  afterAll(async () => {
    await ioredis?.quit();
    await nodeRedis?.close();
    await cluster?.dispose();
  });

  it('a lock, its fence counter and its line share one slot, for hostile keys too', async () => {
    const keys = ['plain', '{braced}', '}{', '', 'x'.repeat(10_000), 'ключ 🔒\n', '%7B'];
    const slots = new Set<number>();
    for (const k of keys) {
      const names = lockKeys(`cachelock:${k}`);
      const slot = await ioredis.cluster('KEYSLOT', names.lease);
      for (const name of [names.fence, names.line, names.waiters]) {
        expect(await ioredis.cluster('KEYSLOT', name)).toBe(slot);
      }
      slots.add(slot as number);
    }
    // The keys spread over the cluster rather than all landing on one slot.
    expect(slots.size).toBeGreaterThan(1);
  });

  it('keys on every master work, with either client', async () => {
    for (const client of [ioredis, nodeRedis]) {
      const store = redisStore(client);
      for (let i = 0; i < 30; i++) {
        const k = `cachelock:cluster:${process.pid}:${i}`;
        const a = newOwner();
        expect(await store.acquire(k, a, 10_000)).not.toBeNull();
        expect((await store.inspect(k))?.owner).toBe(a);
        expect(await store.release(k, a)).toBe(true);
      }
      await store.close();
    }
  });

  it('the core recognises both cluster clients passed as `cache`', async () => {
    for (const client of [ioredis, nodeRedis]) {
      const key = `recognised:${process.pid}:${Math.random()}`;
      const first = await Lock.acquire(key, { cache: client, ttl: '10s' });
      expect(await first.release()).toBe(true);
      const second = await Lock.acquire(key, { cache: client, ttl: '10s' });
      expect(second.fence!).toBeGreaterThan(first.fence!);
      expect(await second.release()).toBe(true);
    }
    await closeAll();
  });

  runConformance({ name: 'ioredis Cluster', describe, it, makeStore: () => redisStore(ioredis) });
  runConformance({
    name: 'node-redis cluster',
    describe,
    it,
    makeStore: () => redisStore(nodeRedis),
  });
});
