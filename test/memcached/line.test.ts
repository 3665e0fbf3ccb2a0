import { randomBytes } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { type LockStore, newOwner } from 'cachelock';
import { memcachedStore } from 'cachelock/memcached';
import memjs from 'memjs';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { memcachedKeys } from '../../src/memcached/keys.js';
import { runFairness } from '../harness/fairness.js';
import { MemcachedServer } from '../support/memcached-server.js';
import { binaryOrSkip, builtOrSkip } from '../support/reachable.js';

const installed = await binaryOrSkip('memcached', 'memcached');
const run = randomBytes(4).toString('hex');
let counter = 0;
const key = (label: string) => `cachelock:mc-line:${run}:${label}:${++counter}`;

describe.runIf(installed)('memcached line of waiters', () => {
  let server: MemcachedServer;
  let client: memjs.Client;
  const stores: LockStore[] = [];
  const open = () => {
    const store = memcachedStore(server.url);
    stores.push(store);
    return store;
  };
  /** The owners with a place in `k`'s line, read straight from the cache. */
  const places = async (k: string): Promise<string[]> => {
    const { value } = await client.get(memcachedKeys(k).line);
    if (value === null) return [];
    return value
      .toString('utf8')
      .split('\n')
      .map((entry) => entry.slice(entry.indexOf(' ') + 1));
  };

  beforeAll(async () => {
    server = await MemcachedServer.start();
    client = memjs.Client.create(server.url.replace('memcached://', ''));
  });
  afterAll(async () => {
    for (const store of stores) await store.close?.();
    client?.close();
    await server?.kill();
  });

  it('a freed key goes to the first live place: a newcomer and a later waiter are refused', async () => {
    const store = open();
    const k = key('order');
    const [holder, first, second, newcomer] = [newOwner(), newOwner(), newOwner(), newOwner()];
    expect(await store.acquire(k, holder, 10_000)).not.toBeNull();
    expect(await store.acquire(k, first, 10_000, { lineMs: 10_000 })).toBeNull();
    expect(await store.acquire(k, second, 10_000, { lineMs: 10_000 })).toBeNull();
    expect(await places(k)).toEqual([first, second]);
    expect(await store.release(k, holder)).toBe(true);
    expect(await store.acquire(k, newcomer, 10_000)).toBeNull();
    expect(await store.acquire(k, holder, 10_000)).toBeNull();
    expect(await store.acquire(k, second, 10_000, { lineMs: 10_000 })).toBeNull();
    // Refused while free: nothing of the newcomers' is left holding the key.
    expect(await store.inspect(k)).toBeNull();
    expect(await store.acquire(k, first, 10_000, { lineMs: 10_000 })).not.toBeNull();
    // The served waiter leaves the line without waiting for the reply.
    await vi.waitFor(async () => expect(await places(k)).toEqual([second]));
    expect(await store.release(k, first)).toBe(true);
    expect(await store.acquire(k, second, 10_000)).not.toBeNull();
    expect(await store.release(k, second)).toBe(true);
    // The last place served takes the line item with it.
    expect(await places(k)).toEqual([]);
    expect(await store.acquire(k, newcomer, 10_000)).not.toBeNull();
  });

  it('a waiter that leaves, or whose place runs out, no longer holds up the line', async () => {
    const store = open();
    const k = key('leave');
    const [holder, leaver, lapser, next] = [newOwner(), newOwner(), newOwner(), newOwner()];
    expect(await store.acquire(k, holder, 10_000)).not.toBeNull();
    expect(await store.acquire(k, leaver, 10_000, { lineMs: 10_000 })).toBeNull();
    expect(await store.acquire(k, lapser, 10_000, { lineMs: 300 })).toBeNull();
    expect(await store.acquire(k, next, 10_000, { lineMs: 10_000 })).toBeNull();
    expect(await store.release(k, holder)).toBe(true);
    expect(await store.release(k, leaver)).toBe(false);
    expect(await places(k)).toEqual([lapser, next]);
    expect(await store.acquire(k, next, 10_000, { lineMs: 10_000 })).toBeNull();
    await sleep(400);
    expect(await store.acquire(k, next, 10_000, { lineMs: 10_000 })).not.toBeNull();
    expect(await store.release(k, next)).toBe(true);
    expect(await places(k)).toEqual([]);
  });

  it('the first waiter in line hears a release by another store within a few polls', async () => {
    const [releaser, waiting] = [open(), open()];
    const k = key('wake');
    const [holder, waiter] = [newOwner(), newOwner()];
    let heard = 0;
    const stop = waiting.onRelease!(k, () => heard++);
    try {
      expect(await releaser.acquire(k, holder, 10_000)).not.toBeNull();
      expect(await waiting.acquire(k, waiter, 10_000, { lineMs: 10_000 })).toBeNull();
      await sleep(100);
      expect(heard).toBe(0);
      expect(await releaser.release(k, holder)).toBe(true);
      const started = performance.now();
      while (heard === 0 && performance.now() - started < 5_000) await sleep(1);
      expect(heard).toBeGreaterThan(0);
      expect(await waiting.acquire(k, waiter, 10_000, { lineMs: 10_000 })).not.toBeNull();
      expect(await waiting.release(k, waiter)).toBe(true);
    } finally {
      stop();
    }
  });
});

describe.runIf(installed && builtOrSkip('memcached fairness', ['index.js', 'memcached/index.js']))(
  'memcached waiters across processes (built package)',
  () => {
    let server: MemcachedServer;
    beforeAll(async () => {
      server = await MemcachedServer.start();
    });
    afterAll(async () => {
      await server?.kill();
    });

    it('5 processes cycling on one key are served first come, first served: none is starved', async () => {
      const result = await runFairness({ cache: server.url });
      console.log('memcached fairness', result);
      expect(result.sections).toHaveLength(5);
      const mean = result.sections.reduce((a, b) => a + b, 0) / 5;
      for (const sections of result.sections) expect(sections).toBeGreaterThan(mean * 0.5);
      expect(result.worstWaitMs).toBeLessThan(2_000);
    }, 120_000);
  },
);
