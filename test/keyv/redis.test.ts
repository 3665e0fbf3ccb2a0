import { randomBytes } from 'node:crypto';
import KeyvRedis from '@keyv/redis';
import { createCache } from 'cache-manager';
import { closeAll, Lock, LockedError, type LockStore, newOwner, StoreError } from 'cachelock';
import { keyvStore, storeFromClient } from 'cachelock/keyv';
import { lockKeys } from 'cachelock/redis';
import { runConformance } from 'cachelock/testing';
import { Redis } from 'ioredis';
import Keyv from 'keyv';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { closedPort, serverOrSkip } from '../support/reachable.js';
import { describePrimitives } from '../support/store-primitives.js';

const reachable = await serverOrSkip('Redis', 6379);
const url = 'redis://127.0.0.1:6379';
// A namespace per run keeps this run's keys apart from everyone else's on the shared server.
const run = `cl-test-${randomBytes(4).toString('hex')}`;

describe.runIf(reachable)('keyv + @keyv/redis on the shared Redis', () => {
  const keyvs: Keyv[] = [];
  const redisKeyv = (namespace = run) => {
    const keyv = new Keyv({ store: new KeyvRedis(url), namespace });
    keyvs.push(keyv);
    return keyv;
  };
  let warnings: Error[];
  const onWarning = (warning: Error) => warnings.push(warning);
  beforeEach(() => {
    warnings = [];
    process.on('warning', onWarning);
  });
  afterEach(() => {
    process.off('warning', onWarning);
  });
  afterAll(async () => {
    // The stores the core made for these Keyvs opened subscriber connections of their own.
    await closeAll();
    await Promise.all(keyvs.map((keyv) => keyv.disconnect()));
  });

  it('unwraps to the Redis store: atomic, fenced, and no non-atomic warning', async () => {
    const keyv = redisKeyv();
    const store = await keyvStore(keyv);
    expect(store.kind).toBe('keyv+redis');
    expect(store.atomic).toBe(true);
    const lock = await Lock.acquire('report', { cache: keyv });
    expect(typeof lock.fence).toBe('bigint');
    await expect(Lock.acquire('report', { cache: redisKeyv() })).rejects.toBeInstanceOf(
      LockedError,
    );
    await lock.release();
    await new Promise((resolve) => setImmediate(resolve));
    expect(
      warnings.filter((w) => (w as { code?: string }).code === 'CACHELOCK_NON_ATOMIC'),
    ).toEqual([]);
    await store.close?.();
  });

  it('folds the Keyv namespace into the key, so namespaces do not share locks', async () => {
    const keyv = redisKeyv();
    const lock = await Lock.acquire('nightly', { cache: keyv });
    const client = (keyv.store as KeyvRedis<string>).client;
    const lease = lockKeys(`${run}:cachelock:nightly`).lease;
    expect(await client.exists(lease)).toBe(1);
    // Another namespace on the same server is another lock space.
    const other = await Lock.acquire('nightly', { cache: redisKeyv(`${run}-other`) });
    await other.release();
    await lock.release();
    expect(await client.exists(lease)).toBe(0);
  });

  it('waits with push wake-ups through the Keyv', async () => {
    const keyv = redisKeyv();
    const holder = await Lock.acquire('handover', { cache: keyv });
    const waiter = new Lock('handover', { cache: redisKeyv(), wait: '10s' });
    const acquired = waiter.acquire();
    setTimeout(() => void holder.release(), 100);
    await acquired;
    expect(waiter.held).toBe(true);
    await waiter.release();
  });

  it('picks the Redis tier of a two-tier cache-manager Cache', async () => {
    const cache = createCache({ stores: [new Keyv(), redisKeyv()] });
    expect((await storeFromClient(cache)).kind).toBe('keyv+redis');
    const lock = await Lock.acquire('tiered', { cache });
    await expect(Lock.acquire('tiered', { cache: redisKeyv() })).rejects.toBeInstanceOf(
      LockedError,
    );
    await lock.release();
  });

  it('surfaces an unreachable Redis as a StoreError, never as held', async () => {
    const port = await closedPort();
    const keyv = new Keyv({
      store: new KeyvRedis({
        url: `redis://127.0.0.1:${port}`,
        socket: { reconnectStrategy: false, connectTimeout: 1_000 },
      }),
    });
    keyv.on('error', () => {});
    const lock = new Lock('down', { cache: keyv });
    await expect(lock.acquire()).rejects.toBeInstanceOf(StoreError);
    expect(lock.held).toBe(false);
  });

  it('passes the Redis store through whole: hand-offs that grant, several keys, permits, readers and writers', async () => {
    const store = await keyvStore(redisKeyv());
    expect(store.replaysWakeups).toBe(true);
    expect(store.handoffGrants).toBe(true);
    expect(Object.keys(store.capabilities ?? {}).sort()).toEqual([
      'keys',
      'permits',
      'readersWriters',
    ]);
    // Under the namespace, as the exclusive keys are.
    const client = new Redis(6379, '127.0.0.1');
    try {
      const owner = newOwner();
      expect(
        await store.capabilities!.permits!.acquire('render', owner, 10_000, {
          limit: 2,
          weight: 1,
        }),
      ).not.toBeNull();
      const names = await client.keys(`*${run}:render*`);
      expect(names.length).toBeGreaterThan(0);
      expect(await store.capabilities!.permits!.release('render', owner)).toBe(true);
      expect(await client.keys(`*${run}:render*`)).toEqual([]);
    } finally {
      client.disconnect();
    }
  });

  describe('the primitives over two Keyvs', () => {
    const stores: LockStore[] = [];
    beforeAll(async () => {
      for (let i = 0; i < 2; i++) stores.push(await keyvStore(redisKeyv()));
    });
    describePrimitives(() => [stores[0]!, stores[1]!]);
  });

  runConformance({
    name: 'conformance through keyvStore',
    describe,
    it,
    makeStore: () => keyvStore(redisKeyv()),
  });
});
