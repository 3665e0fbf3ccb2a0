import { randomBytes } from 'node:crypto';
import { Socket } from 'node:net';
import { Lock, LockedError, type LockStore, newOwner } from 'cachelock';
import { memcachedStore } from 'cachelock/memcached';
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import { memcachedKeys } from '../../src/memcached/keys.js';
import { MemcachedServer } from '../support/memcached-server.js';
import { binaryOrSkip } from '../support/reachable.js';

const installed = await binaryOrSkip('memcached', 'memcached');
const run = randomBytes(4).toString('hex');
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
const KEYS = 5_000;

/** Send raw protocol text on a connection of the test's own; resolve once `done` says so. */
function raw(port: number, text: string, done: (reply: string) => boolean): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = new Socket();
    let reply = '';
    socket.on('data', (chunk) => {
      reply += chunk.toString('latin1');
      if (done(reply)) {
        socket.destroy();
        resolve(reply);
      }
    });
    socket.once('error', reject);
    socket.connect(port, '127.0.0.1', () => socket.write(text));
  });
}

/** Look up every item (which drops those that expired), then count what the server holds. */
async function itemsAfterTouching(port: number, names: string[]): Promise<number> {
  await raw(port, `${names.map((name) => `mg ${name}\r\n`).join('')}mn\r\n`, (reply) =>
    reply.endsWith('MN\r\n'),
  );
  const stats = await raw(port, 'stats\r\n', (reply) => reply.endsWith('END\r\n'));
  return Number(/STAT curr_items (\d+)/.exec(stats)?.[1]);
}

describe.runIf(installed)('memcached store: nothing left behind', () => {
  let server: MemcachedServer;
  let store: LockStore;

  beforeAll(async () => {
    server = await MemcachedServer.start();
    store = memcachedStore(server.url);
  });
  afterAll(async () => {
    await store?.close?.();
    await server?.kill();
  });

  it('keeps no item for 15,000 keys locked once: released, held at least, or left to expire', async () => {
    const keys: string[] = [];
    for (let i = 0; i < KEYS; i++) {
      const released = `released:${run}:${i}`;
      const owner = newOwner();
      expect(await store.acquire(released, owner, 1_000)).not.toBeNull();
      expect(await store.release(released, owner)).toBe(true);
      const kept = `held-at-least:${run}:${i}`;
      const keeper = newOwner();
      expect(await store.acquire(kept, keeper, 1_000)).not.toBeNull();
      expect(await store.release(kept, keeper, 200)).toBe(true);
      const expired = `expired:${run}:${i}`;
      expect(await store.acquire(expired, newOwner(), 1_000)).not.toBeNull();
      keys.push(released, kept, expired);
    }
    // Items outlive their lease by up to 4 s (memcached counts whole seconds).
    await sleep(5_000);
    const names = keys.flatMap((key) => {
      const { lease, fence } = memcachedKeys(key);
      return [lease, fence];
    });
    expect(await itemsAfterTouching(server.port, names)).toBe(0);
  }, 60_000);
});

describe.runIf(installed)('memcached store: fences across a restart', () => {
  let server: MemcachedServer;
  let store: LockStore;

  beforeAll(async () => {
    server = await MemcachedServer.start();
    store = memcachedStore(server.url);
  });
  afterEach(() => {
    vi.restoreAllMocks();
  });
  afterAll(async () => {
    await store?.close?.();
    await server?.kill();
  });

  async function acquireSoon(key: string, owner: string) {
    for (let attempt = 0; ; attempt++) {
      try {
        return await store.acquire(key, owner, 10_000);
      } catch (error) {
        if (attempt >= 50) throw error;
        await sleep(50);
      }
    }
  }

  it('the fence after a restart is above the one before, or both are absent, whatever the clocks', async () => {
    const key = `restart:${run}`;
    const first = newOwner();
    const before = await acquireSoon(key, first);
    expect(await store.release(key, first)).toBe(true);
    await server.restart();
    // The next acquirer runs on a machine whose clock is 10 s behind the first one's.
    const realNow = Date.now.bind(Date);
    vi.spyOn(Date, 'now').mockImplementation(() => realNow() - 10_000);
    const after = await acquireSoon(key, newOwner());
    expect(after).not.toBeNull();
    if (before?.fence === undefined || after?.fence === undefined) {
      expect([before?.fence, after?.fence]).toEqual([undefined, undefined]);
    } else {
      expect(after.fence > before.fence).toBe(true);
    }
  });
});

describe.runIf(installed)('memcached store: a value cachelock did not write', () => {
  let server: MemcachedServer;
  let store: LockStore;

  beforeAll(async () => {
    server = await MemcachedServer.start();
    store = memcachedStore(server.url);
  });
  afterAll(async () => {
    await store?.close?.();
    await server?.kill();
  });

  const get = async (name: string) => {
    const reply = await raw(server.port, `mg ${name} v\r\n`, (text) =>
      /^(EN\r\n|VA \d+\r\n[\s\S]*\r\n)$/.test(text),
    );
    return reply.startsWith('VA') ? reply.split('\r\n')[1] : null;
  };

  it('is held by an unknown owner: never taken, overwritten or deleted but by a forced release', async () => {
    // What python-cachelock stores, in a cache shared with it, with no prefix.
    const key = `report:${run}`;
    await raw(server.port, `ms ${key} 1 T0\r\n1\r\n`, (reply) => reply.endsWith('\r\n'));
    const options = { cache: store, prefix: '' };
    await expect(Lock.acquire(key, options)).rejects.toBeInstanceOf(LockedError);
    expect(await new Lock(key, options).tryAcquire()).toBe(false);
    expect(await get(key)).toBe('1');

    const holder = await Lock.inspect(key, options);
    expect(holder).toMatchObject({ owner: '', host: undefined, pid: undefined });
    expect(holder?.fence).toBeUndefined();

    expect(await store.extend(key, '', 10_000)).toBe(false);
    expect(await store.release(key, newOwner())).toBe(false);
    expect(await get(key)).toBe('1');
    // `cachelock release --force` releases as the owner `inspect` named.
    expect(await store.release(key, holder!.owner)).toBe(true);
    expect(await get(key)).toBeNull();
    const lock = await Lock.acquire(key, options);
    expect(lock.held).toBe(true);
    // A forced release aimed at an unknown value never removes a lease of ours.
    expect(await store.release(key, '')).toBe(false);
    expect(lock.held).toBe(true);
    expect(await lock.release()).toBe(true);
  });
});
