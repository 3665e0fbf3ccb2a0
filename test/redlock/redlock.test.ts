import { closeAll, Lock, newOwner, registerScheme, StoreError } from 'cachelock';
import { lockKeys } from 'cachelock/redis';
import { type RedlockStore, redlockStore, storeFromUrl } from 'cachelock/redlock';
import { runConformance } from 'cachelock/testing';
import { Redis } from 'ioredis';
import { createClient } from 'redis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { binaryOrSkip } from '../support/reachable.js';
import { RedisServer } from '../support/redis-server.js';

const runs = await binaryOrSkip('Redlock', 'redis-server');
let counter = 0;
const key = (label: string) => `cachelock:redlock:${process.pid}:${label}:${++counter}`;
const leaseName = (k: string) => `${lockKeys(k).lease}:redlock`;

describe.runIf(runs)('redlock over 3 throwaway servers', () => {
  let servers: RedisServer[];
  let clients: Redis[];
  let nodeRedis: ReturnType<typeof createClient>;

  beforeAll(async () => {
    servers = await Promise.all([0, 1, 2].map(() => RedisServer.start()));
    clients = servers.map((s) => new Redis(s.port, '127.0.0.1'));
    nodeRedis = createClient({ url: servers[2]!.url });
    await nodeRedis.connect();
  });
  afterAll(async () => {
    for (const c of clients ?? []) c.disconnect();
    await nodeRedis?.close();
    await Promise.all((servers ?? []).map((s) => s.dispose()));
  });

  runConformance({ name: 'ioredis x3', describe, it, makeStore: () => redlockStore(clients) });
  runConformance({
    name: 'ioredis x2 + node-redis',
    describe,
    it,
    makeStore: () => redlockStore([clients[0]!, clients[1]!, nodeRedis]),
  });

  it('stores made over one node-redis client add no listener to it after the first', async () => {
    redlockStore([clients[0]!, clients[1]!, nodeRedis]);
    const listeners = nodeRedis.listenerCount('ready');
    for (let i = 0; i < 20; i++) redlockStore([clients[0]!, clients[1]!, nodeRedis]);
    expect(nodeRedis.listenerCount('ready')).toBe(listeners);
  });

  it('has no fence and needs a majority', async () => {
    const store = redlockStore(clients);
    expect(store.quorum).toBe(2);
    const k = key('fence');
    const a = newOwner();
    expect(await store.acquire(k, a, 10_000)).toEqual({});
    expect((await store.inspect(k))?.fence).toBeUndefined();
    expect(await store.release(k, a)).toBe(true);
  });

  it('wins with a majority against a minority holder, and cleans up a failed attempt', async () => {
    const store = redlockStore(clients);
    const k = key('quorum');
    const other = newOwner();
    // Another owner holds it on one server: a majority is still free.
    await clients[0]!.set(leaseName(k), other, 'PX', 10_000);
    const a = newOwner();
    expect(await store.acquire(k, a, 10_000)).not.toBeNull();
    expect(await clients[1]!.get(leaseName(k))).toBe(a);
    expect(await store.release(k, a)).toBe(true);
    // Held on two servers: refused, and nothing of ours is left on the third.
    await clients[1]!.set(leaseName(k), other, 'PX', 10_000);
    const b = newOwner();
    expect(await store.acquire(k, b, 10_000)).toBeNull();
    // Undone in the background, once the third server has answered.
    await expect.poll(() => clients[2]!.get(leaseName(k))).toBeNull();
    await Promise.all(clients.map((c) => c.del(leaseName(k))));
  });

  it('keeps working with 1 of 3 servers down and refuses with 2 of 3 down', async () => {
    const own = await Promise.all([0, 1, 2].map(() => RedisServer.start()));
    const ownClients = own.map((s) => new Redis(s.port, '127.0.0.1', { maxRetriesPerRequest: 1 }));
    for (const c of ownClients) c.on('error', () => {});
    const store: RedlockStore = redlockStore(ownClients, { serverTimeout: 500 });
    try {
      const k = key('down');
      await own[0]!.kill();
      const a = newOwner();
      expect(await store.acquire(k, a, 10_000)).not.toBeNull();
      expect(await store.acquire(k, newOwner(), 10_000)).toBeNull();
      expect(await store.extend(k, a, 10_000)).toBe(true);
      expect((await store.inspect(k))?.owner).toBe(a);
      expect(await store.release(k, a)).toBe(true);

      await own[1]!.kill();
      await expect(store.acquire(k, newOwner(), 10_000)).rejects.toThrow(/2 of 3 servers failed/);
      const lock = new Lock(k, { cache: store });
      await expect(lock.acquire()).rejects.toBeInstanceOf(StoreError);

      await own[0]!.launch();
      const b = newOwner();
      await expect
        .poll(() => store.acquire(k, b, 10_000).catch(() => null), { timeout: 5_000 })
        .not.toBeNull();
      expect(await store.release(k, b)).toBe(true);
    } finally {
      for (const c of ownClients) c.disconnect();
      await Promise.all(own.map((s) => s.dispose()));
    }
  });

  it('opens its own clients from a redlock: URL', async () => {
    registerScheme('redlock', storeFromUrl);
    const url = `redlock:?${servers.map((s) => `server=${encodeURIComponent(s.url)}`).join('&')}`;
    try {
      const lock = await Lock.acquire(key('url'), { cache: url, ttl: '5s' });
      expect(lock.fence).toBeUndefined();
      expect(await lock.release()).toBe(true);
    } finally {
      await closeAll();
    }
  });
});
