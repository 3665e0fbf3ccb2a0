import { closeAll, Lock, newOwner, once, RW_LIMIT } from 'cachelock';
import { keySlot, leaseKey, lockKeys, redisStore, sharedKeys } from 'cachelock/redis';
import { Cluster } from 'ioredis';
import { createCluster } from 'redis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { caseBudgetMs, conformanceCases, runCase } from '../../src/testing/conformance.js';
import { binaryOrSkip } from '../support/reachable.js';
import { RedisCluster } from '../support/redis-server.js';
import { tagKeys } from '../support/tag-keys.js';

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
      for (const name of [names.fence, names.line, names.waiters, names.wake]) {
        expect(await ioredis.cluster('KEYSLOT', name)).toBe(slot);
      }
      slots.add(slot as number);
    }
    // The keys spread over the cluster rather than all landing on one slot.
    expect(slots.size).toBeGreaterThan(1);
  });

  it('the slot computed before sending is the one the cluster reports', async () => {
    const names = ['plain', '{acct}:1', 'a{b}c', '{}x', '{{x}', 'x{}{y}', 'ключ 🔒', '', '\ud83d']
      .flatMap((k) => [`cachelock:${k}`, k])
      .flatMap((k) => [k, leaseKey(k), sharedKeys(k, 'permits').data, sharedKeys(k, 'rw').line]);
    for (const name of names) {
      expect(keySlot(name), name).toBe(await ioredis.cluster('KEYSLOT', name));
    }
    // A key's own hash tag picks the slot, alone and in every namespace.
    const slot = keySlot(leaseKey('cachelock:{acct}:1'));
    expect(keySlot(leaseKey('cachelock:{acct}:2'))).toBe(slot);
    expect(keySlot(sharedKeys('cachelock:{acct}:3', 'permits').places)).toBe(slot);
    expect(keySlot(sharedKeys('cachelock:{acct}:3', 'permits').wake)).toBe(slot);
  });

  it('several keys of one hash tag go together; keys of different slots are refused', async () => {
    for (const client of [ioredis, nodeRedis]) {
      const store = redisStore(client);
      const many = store.capabilities.keys;
      const tag = `{acct-${process.pid}-${Math.random()}}`;
      const keys = [`cachelock:${tag}:1`, `cachelock:${tag}:2`, `cachelock:${tag}:3`];
      const owner = newOwner();
      const got = await many.acquire(keys, owner, 10_000);
      expect(got?.fences).toHaveLength(3);
      expect((await store.inspect(keys[1]!))?.owner).toBe(owner);
      expect(await many.extend(keys, owner, 20_000)).toBe(true);
      expect(await many.release(keys, owner)).toBe(true);
      expect(await store.inspect(keys[0]!)).toBeNull();
      // Two keys without a common tag land in different slots (checked here, not assumed).
      const apart = ['cachelock:transfer:1', 'cachelock:transfer:2'];
      expect(keySlot(leaseKey(apart[0]!))).not.toBe(keySlot(leaseKey(apart[1]!)));
      await expect(many.acquire(apart, owner, 10_000)).rejects.toThrow(TypeError);
      await expect(many.acquire(apart, owner, 10_000)).rejects.toThrow(
        /different slots.*same hash tag/,
      );
      await expect(many.release(apart, owner)).rejects.toThrow(TypeError);
      expect(await store.inspect(apart[0]!)).toBeNull();
      await store.close();
    }
  });

  it('Lock on keys of different slots is refused with a TypeError naming keys and slots, never tried or waited on; with one hash tag it works', async () => {
    const apart = [`apart:${process.pid}:1`, `apart:${process.pid}:2`];
    const slots = apart.map((key) => keySlot(leaseKey(`cachelock:${key}`)));
    expect(slots[0]).not.toBe(slots[1]);
    for (const cache of [ioredis, nodeRedis]) {
      // One of the keys is held: a lock that tried or waited would sit out its wait.
      const holder = await Lock.acquire(apart[0]!, { cache, ttl: '30s' });
      const lock = new Lock(apart, { cache, ttl: '10s', wait: '30s' });
      const started = performance.now();
      const error = await lock.acquire().catch((e: unknown) => e);
      expect(performance.now() - started).toBeLessThan(10_000);
      expect(error).toBeInstanceOf(TypeError);
      const message = (error as TypeError).message;
      for (const [i, key] of apart.entries()) {
        // The key as written, and the name that is hashed.
        expect(message).toContain(`"${key}" (stored as "cachelock:${key}", slot ${slots[i]})`);
      }
      expect(message).toContain("same hash tag, e.g. '{acct}:1'");
      await expect(lock.tryAcquire()).rejects.toBeInstanceOf(TypeError);
      await expect(lock.run(() => 'ran')).rejects.toBeInstanceOf(TypeError);
      expect(lock.held).toBe(false);
      expect(await holder.release()).toBe(true);
      // Never granted, not even in part.
      for (const key of apart) expect(await Lock.inspect(key, { cache })).toBeNull();
    }
    // A store given as such is known when the lock is made: refused there.
    const store = redisStore(ioredis);
    expect(() => new Lock(apart, { cache: store })).toThrow(/different|one hash slot/);
    expect(() => new Lock(apart, { cache: store })).toThrow(TypeError);
    await store.close();
    const tagged = [`{apart-${process.pid}}:1`, `{apart-${process.pid}}:2`];
    const lock = await Lock.acquire(tagged, { cache: ioredis, ttl: '10s' });
    expect(await lock.release()).toBe(true);
    await closeAll();
  });

  it('once over keys of different slots rejects each call with the TypeError and never runs fn; a tag in the template works', async () => {
    let ran = 0;
    const transfer = async (from: string, to: string) => {
      ran++;
      return `${from}->${to}`;
    };
    const apart = once({ key: ['once-apart-{from}', 'once-apart-{to}'], cache: ioredis }, transfer);
    await expect(apart('1', '2')).rejects.toBeInstanceOf(TypeError);
    await expect(apart('1', '2')).rejects.toThrow(/one hash slot.*same hash tag/);
    expect(ran).toBe(0);
    // `{{` and `}}` are literal braces in a template: the hash tag of Redis.
    const together = once(
      { key: ['{{once-{from}}}:out', '{{once-{from}}}:in-{to}'], cache: ioredis },
      transfer,
    );
    expect(await together('1', '2')).toBe('1->2');
    expect(ran).toBe(1);
    await closeAll();
  });

  it('permits and readers/writers work on keys of every master', async () => {
    for (const client of [ioredis, nodeRedis]) {
      const store = redisStore(client);
      const permits = store.capabilities.permits;
      const rw = store.capabilities.readersWriters;
      for (let i = 0; i < 10; i++) {
        const k = `cachelock:cluster-shared:${process.pid}:${Math.random()}:${i}`;
        const [a, b] = [newOwner(), newOwner()];
        expect(await permits.acquire(k, a, 10_000, { limit: 1, weight: 1 })).not.toBeNull();
        expect(
          await permits.acquire(k, b, 10_000, { limit: 1, weight: 1, lineMs: 3_000 }),
        ).toBeNull();
        expect(await permits.release(k, a)).toBe(true);
        expect(
          await permits.acquire(k, b, 10_000, { limit: 1, weight: 1, lineMs: 3_000 }),
        ).not.toBeNull();
        expect((await permits.inspect(k)).map((h) => h.owner)).toEqual([b]);
        expect(await permits.release(k, b)).toBe(true);
        const w = await rw.acquire(k, a, 10_000, { limit: RW_LIMIT, weight: RW_LIMIT });
        expect(w?.fence).toBeDefined();
        expect(await rw.acquire(k, b, 10_000, { limit: RW_LIMIT, weight: 1 })).toBeNull();
        expect(await rw.release(k, a)).toBe(true);
      }
      await store.close();
    }
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

  // The several-keys cases take keys made independently, which a Cluster refuses together
  // unless they share a hash tag: those run with every key under one tag, the rest as they are,
  // spread over the masters.
  for (const [name, client] of [
    ['ioredis Cluster', () => ioredis],
    ['node-redis cluster', () => nodeRedis],
  ] as const) {
    describe(name, () => {
      for (const testCase of conformanceCases) {
        const tagged = testCase.needs === 'keys';
        const makeStore = () =>
          tagged
            ? tagKeys(redisStore(client()), `conformance-${process.pid}`)
            : redisStore(client());
        const budget = caseBudgetMs(testCase, 300);
        it(testCase.name, () => runCase({ makeStore }, testCase, 300, budget), budget + 5_000);
      }
    });
  }
});
