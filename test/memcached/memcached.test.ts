import { randomBytes } from 'node:crypto';
import { createServer, type Server, type Socket } from 'node:net';
import { closeAll, Lock, type LockStore, newOwner, StoreError } from 'cachelock';
import { memcachedStore, storeFromClient, storeFromUrl } from 'cachelock/memcached';
import memjs from 'memjs';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { memcachedKeys } from '../../src/memcached/keys.js';
import { expirySeconds } from '../../src/memcached/lease.js';
import { MemcachedServer } from '../support/memcached-server.js';
import { binaryOrSkip, closedPort, freePort } from '../support/reachable.js';

const installed = await binaryOrSkip('memcached', 'memcached');
const run = randomBytes(4).toString('hex');
let counter = 0;
const key = (label: string) => `cachelock:mc-test:${run}:${label}:${++counter}`;
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** memjs's get, as a promise of the item's text or null. */
async function rawGet(client: memjs.Client, name: string): Promise<string | null> {
  const { value } = await client.get(name);
  return value === null ? null : value.toString('utf8');
}

describe('memcached keys', () => {
  it('keeps plain keys readable and hashes the rest into at most 250 bytes', () => {
    expect(memcachedKeys('cachelock:report')).toEqual({
      lease: 'cachelock:report',
      fence: 'cachelock:report#fence',
      line: 'cachelock:report#line',
    });
    for (const hostile of ['a b', 'a\nb', 'a#b', 'caf\u00e9', 'x'.repeat(245), '\u0000', '']) {
      const { lease, fence, line } = memcachedKeys(hostile);
      expect(lease).toMatch(/^[\x21-\x7e]*#[A-Za-z0-9_-]{43}$/);
      expect(Buffer.byteLength(fence)).toBeLessThanOrEqual(250);
      expect(fence).toBe(`${lease}#fence`);
      expect(line).toBe(`${lease}#line`);
    }
  });

  it('never maps two keys, or a key and a fence, to one item', () => {
    const keys = [
      'a',
      'a#fence',
      'a b',
      'a_b',
      '\ud83d',
      '\ud83e',
      '\ufffd',
      'x'.repeat(244),
      'x'.repeat(245),
      `${'x'.repeat(245)}#fence`,
      'a#line',
      `${'x'.repeat(245)}#line`,
    ];
    const items = keys.flatMap((k) => Object.values(memcachedKeys(k)));
    expect(new Set(items).size).toBe(items.length);
  });

  it('gives the item the lease rounded up to whole seconds, plus three', () => {
    expect(expirySeconds(1)).toBe(4);
    expect(expirySeconds(1000)).toBe(4);
    expect(expirySeconds(1001)).toBe(5);
    expect(expirySeconds(30_000)).toBe(33);
    // Past 30 days memcached reads the number as a Unix time.
    expect(expirySeconds(40 * 86_400_000)).toBeGreaterThan(Date.now() / 1000);
  });
});

describe.runIf(installed)('memcached store', () => {
  let server: MemcachedServer;
  let store: LockStore;
  let raw: memjs.Client;

  beforeAll(async () => {
    server = await MemcachedServer.start();
    store = memcachedStore(server.url);
    raw = memjs.Client.create(`127.0.0.1:${server.port}`, { logger: { log() {} } });
  });
  afterAll(async () => {
    raw?.close();
    await store?.close?.();
    await closeAll();
    await server?.kill();
  });

  it('never lets a lease end early, whatever the phase of memcached one-second clock', async () => {
    // An item set with T1 can vanish after a few ms; every 1 s lease must hold for 1 s.
    await Promise.all(
      [0, 250, 500, 750].map(async (offset) => {
        await sleep(offset);
        const k = key('early');
        const started = performance.now();
        expect(await store.acquire(k, newOwner(), 1000)).not.toBeNull();
        while (performance.now() - started < 950) {
          expect(await store.acquire(k, newOwner(), 1000)).toBeNull();
          await sleep(25);
        }
      }),
    );
  });

  it('stores a hostile key under its hashed item, with owner and expiry in the value, and no fence', async () => {
    const k = `${key('hostile')} with spaces\nand a newline ${'z'.repeat(300)}`;
    const owner = newOwner();
    const acquired = await store.acquire(k, owner, 10_000);
    expect(acquired).toEqual({});
    const { lease, fence } = memcachedKeys(k);
    const value = await rawGet(raw, lease);
    expect(value).toMatch(new RegExp(`^\\d+ - ${owner}$`));
    expect(await rawGet(raw, fence)).toBeNull();
    expect(await store.release(k, owner)).toBe(true);
    expect(await rawGet(raw, lease)).toBeNull();
  });

  it('releases only the item the owner wrote, even after another write replaced it', async () => {
    const k = key('cas');
    const owner = newOwner();
    await store.acquire(k, owner, 10_000);
    // Someone overwrites the item with the same text: the CAS differs, so it is not ours.
    const { lease } = memcachedKeys(k);
    const text = (await rawGet(raw, lease))!;
    await raw.set(lease, text.replace(owner, 'intruder'), { expires: 10 });
    expect(await store.release(k, owner)).toBe(false);
    expect(await store.extend(k, owner, 10_000)).toBe(false);
    expect(await rawGet(raw, lease)).toContain('intruder');
  });

  it('an owner acting through a second store instance is still recognised', async () => {
    const k = key('second-store');
    const owner = newOwner();
    const other = storeFromUrl(new URL(server.url));
    try {
      const first = await store.acquire(k, owner, 10_000);
      expect(await other.acquire(k, owner, 10_000)).toEqual(first);
      expect(await other.extend(k, owner, 10_000)).toBe(true);
      expect(await store.extend(k, owner, 10_000)).toBe(true);
      expect(await other.release(k, owner)).toBe(true);
      expect(await store.inspect(k)).toBeNull();
    } finally {
      await other.close?.();
    }
  });

  it('works through the core with a URL and with a memjs client as cache', async () => {
    const viaUrl = new Lock(key('core-url'), { cache: server.url, ttl: '2s' });
    await viaUrl.acquire();
    expect(viaUrl.fence).toBeUndefined();
    const holder = await Lock.inspect(viaUrl.key, { cache: server.url });
    expect(holder?.pid).toBe(process.pid);
    expect(holder?.ttlMs).toBeGreaterThan(0);
    expect(holder?.ttlMs).toBeLessThanOrEqual(2000);
    expect(await new Lock(viaUrl.key, { cache: raw }).tryAcquire()).toBe(false);
    expect(await viaUrl.release()).toBe(true);

    const viaMemjs = new Lock(key('core-memjs'), { cache: raw, ttl: '2s' });
    expect(await viaMemjs.tryAcquire()).toBe(true);
    expect(await viaMemjs.release()).toBe(true);
  });

  it('wraps a memjs client without closing it, spreading keys over its servers', async () => {
    const second = await MemcachedServer.start();
    const client = memjs.Client.create(`127.0.0.1:${server.port},127.0.0.1:${second.port}`, {
      logger: { log() {} },
    });
    const wrapped = storeFromClient(client);
    const single = [memcachedStore(server.url), memcachedStore(second.url)];
    try {
      const keys = Array.from({ length: 20 }, () => key('spread'));
      for (const k of keys) expect(await wrapped.acquire(k, newOwner(), 10_000)).not.toBeNull();
      const perServer = [0, 0];
      for (const k of keys) {
        const found = await Promise.all(single.map((s) => s.inspect(k)));
        expect(found.filter(Boolean)).toHaveLength(1);
        perServer[found[0] ? 0 : 1]!++;
      }
      expect(perServer[0]).toBeGreaterThan(0);
      expect(perServer[1]).toBeGreaterThan(0);
      await wrapped.close?.();
      // The user's client still works after the store closed.
      await client.set('cachelock-still-open', 'yes', {});
      expect((await client.get('cachelock-still-open')).value?.toString()).toBe('yes');
    } finally {
      client.close();
      for (const s of single) await s.close?.();
      await second.kill();
    }
  });

  it('rejects what it cannot honour', () => {
    expect(() => memcachedStore('redis://127.0.0.1:6379')).toThrow(TypeError);
    expect(() => memcachedStore('memcached://user:secret@127.0.0.1:1')).toThrow(/password/);
    const sasl = memjs.Client.create('user:secret@127.0.0.1:1', { logger: { log() {} } });
    expect(() => storeFromClient(sasl)).toThrow(/SASL/);
    expect(() => storeFromClient({ get() {} })).toThrow(TypeError);
    expect(() => memcachedStore(`${server.url}?timeout=soon`)).toThrow(/timeout/);
    expect(() => memcachedStore(server.url, { timeout: 0 })).toThrow(RangeError);
  });
});

describe.runIf(installed)('memcached store when the server fails', () => {
  const closers: Array<() => unknown> = [];
  afterEach(async () => {
    for (const close of closers.splice(0).reverse()) await close();
    await closeAll();
  });

  it('a killed server gives StoreError, never a lock, and a new server on the port recovers', async () => {
    const server = await MemcachedServer.start();
    closers.push(() => server.kill());
    const url = `${server.url}?timeout=1s&connectTimeout=1s`;
    const k = key('killed');
    const lost: unknown[] = [];
    const holder = new Lock(k, { cache: url, ttl: '1s', onLost: (e) => lost.push(e) });
    await holder.acquire();

    await server.kill();
    const started = performance.now();
    const attempt = new Lock(k, { cache: url, ttl: '1s' }).acquire();
    await expect(attempt).rejects.toBeInstanceOf(StoreError);
    expect(performance.now() - started).toBeLessThan(5_000);
    await expect(Lock.inspect(k, { cache: url })).rejects.toBeInstanceOf(StoreError);
    // The holder's watchdog cannot extend: the lease is lost, not silently kept.
    await expect.poll(() => lost.length, { timeout: 5_000 }).toBe(1);
    expect(holder.held).toBe(false);

    await server.launch();
    const after = new Lock(k, { cache: url, ttl: '1s' });
    await after.acquire();
    // No fence before or after: memcached has nothing that would keep one rising over a restart.
    expect([holder.fence, after.fence]).toEqual([undefined, undefined]);
    expect(await after.release()).toBe(true);
  });

  it('a server that never answers makes operations reject within the timeout', async () => {
    const sockets = new Set<Socket>();
    const silent: Server = createServer((socket) => sockets.add(socket));
    const port = await freePort();
    await new Promise<void>((resolve) => silent.listen(port, '127.0.0.1', resolve));
    closers.push(
      () =>
        new Promise<void>((resolve) => {
          for (const socket of sockets) socket.destroy();
          silent.close(() => resolve());
        }),
    );
    const store = memcachedStore(`memcached://127.0.0.1:${port}`, { timeout: '300ms' });
    closers.push(() => store.close?.());
    const owner = newOwner();
    await expect(store.acquire(key('silent'), owner, 1000)).rejects.toThrow(/did not answer/);
    await expect(store.release(key('silent'), owner)).rejects.toThrow(/did not answer/);
    await expect(store.inspect(key('silent'))).rejects.toThrow(/did not answer/);
  });

  it('a server that hangs up mid-command rejects instead of hanging', async () => {
    const rude: Server = createServer((socket) => socket.once('data', () => socket.destroy()));
    const port = await freePort();
    await new Promise<void>((resolve) => rude.listen(port, '127.0.0.1', resolve));
    closers.push(() => new Promise<void>((resolve) => rude.close(() => resolve())));
    const store = memcachedStore(`memcached://127.0.0.1:${port}`);
    closers.push(() => store.close?.());
    await expect(store.acquire(key('rude'), newOwner(), 1000)).rejects.toThrow(/closed/);
  });

  it('nothing listening rejects at once', async () => {
    const port = await closedPort();
    const store = memcachedStore(`memcached://127.0.0.1:${port}`);
    closers.push(() => store.close?.());
    await expect(store.acquire(key('refused'), newOwner(), 1000)).rejects.toThrow(/ECONNREFUSED/);
  });
});
