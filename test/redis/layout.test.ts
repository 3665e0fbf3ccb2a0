import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { closeAll, Lock, LockedError, newOwner } from 'cachelock';
import { lockKeys, type RedisStore, redisStore } from 'cachelock/redis';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { forceRelease } from '../../src/cli/release.js';
import { binaryOrSkip } from '../support/reachable.js';
import { RedisServer, sleep } from '../support/redis-server.js';
import { FIRST_ACQUIRE, FIRST_RELEASE } from './fixtures/first-release.js';

const exec = promisify(execFile);
const runs = await binaryOrSkip('Redis layout', 'redis-server');
let counter = 0;
const key = (label: string) => `layout:${process.pid}:${label}:${++counter}`;

describe.runIf(runs)('the Redis layout, on a throwaway server', () => {
  let server: RedisServer;
  let client: Redis;
  let store: RedisStore;

  beforeAll(async () => {
    server = await RedisServer.start();
    client = new Redis(server.port, '127.0.0.1', { enableAutoPipelining: true });
    store = redisStore(client);
  });
  afterAll(async () => {
    await store?.close();
    client?.disconnect();
    await closeAll();
    await server?.dispose();
  });

  describe('nothing is left behind', () => {
    it('5,000 keys locked once, some held at least a while, some waited for: DBSIZE 0 after their leases', async () => {
      await client.flushall();
      const options = { cache: store, ttl: 1_000 };
      const base = key('once');
      for (let i = 0; i < 5_000; i += 500) {
        await Promise.all(
          Array.from({ length: 500 }, async (_, j) => {
            const lock = await Lock.acquire(`${base}:${i + j}`, options);
            expect(await lock.release()).toBe(true);
          }),
        );
      }
      // holdAtLeast keeps each key past its release, then lets it go.
      await Promise.all(
        Array.from({ length: 200 }, async (_, i) => {
          const lock = await Lock.acquire(`${base}:kept:${i}`, { ...options, holdAtLeast: 300 });
          expect(await lock.release()).toBe(true);
        }),
      );
      // A waiter joins the line, gives up, and the holder releases after.
      await Promise.all(
        Array.from({ length: 20 }, async (_, i) => {
          const k = `${base}:waited:${i}`;
          const lock = await Lock.acquire(k, options);
          const waiter = new Lock(k, { ...options, wait: 150 });
          expect(await waiter.tryAcquire()).toBe(false);
          expect(await lock.release()).toBe(true);
        }),
      );
      expect(await client.dbsize()).toBeGreaterThan(0); // the held-at-least keys, still
      await sleep(1_200);
      expect(await client.dbsize()).toBe(0);
    });

    it('the first release’s fence counters are ignored, and the documented command deletes them', async () => {
      const k = key('leftover');
      const names = lockKeys(`cachelock:${k}`);
      await client.set(names.fence, '41');
      // A key of another prefix, and a lease, which the command must leave alone.
      const otherPrefix = lockKeys(`other:${k}`).fence;
      await client.set(otherPrefix, '7');
      const lock = await Lock.acquire(k, { cache: store, ttl: 10_000 });
      expect(lock.fence!).toBeGreaterThan(41n);
      expect(await client.get(names.fence)).toBe('41');
      const { stdout } = await exec('bash', [
        '-c',
        `redis-cli -p ${server.port} --scan --pattern '{cachelock:*}:fence' | xargs -r -d '\\n' -n 500 redis-cli -p ${server.port} unlink`,
      ]);
      expect(stdout.trim()).toBe('1');
      expect(await client.exists(names.fence)).toBe(0);
      expect(await client.exists(otherPrefix, names.lease)).toBe(2);
      expect(await lock.release()).toBe(true);
      await client.del(otherPrefix);
    });
  });

  describe('fences only rise', () => {
    it('across a restart of a server that keeps nothing on disk', async () => {
      const own = await RedisServer.start(['--save', '', '--appendonly', 'no']);
      try {
        const k = key('restart');
        const before = new Redis(own.port, '127.0.0.1');
        const first = await Lock.acquire(k, { cache: before, ttl: 10_000 });
        expect(await first.release()).toBe(true);
        before.disconnect();
        await own.restart();
        expect(await own.cli('DBSIZE')).toBe('0');
        const after = new Redis(own.port, '127.0.0.1');
        const second = await Lock.acquire(k, { cache: after, ttl: 10_000 });
        expect(second.fence!).toBeGreaterThan(first.fence!);
        expect(await second.release()).toBe(true);
        after.disconnect();
      } finally {
        await closeAll();
        await own.dispose();
      }
    });

    it('are the server time in microseconds, and a hand-off’s is above the last fence', async () => {
      const k = key('ahead');
      const names = lockKeys(k);
      const [seconds, micros] = await client.time();
      const now = BigInt(String(seconds)) * 1_000_000n + BigInt(String(micros));
      const a = newOwner();
      const got = await store.acquire(k, a, 10_000);
      expect(got!.fence! >= now && got!.fence! < now + 10_000_000n).toBe(true);
      expect(await store.release(k, a)).toBe(true);
      // A fence ahead of the clock (it stepped back): the hand-off's fence is above it still.
      const ahead = now + 60_000_000n;
      const [b, c] = [newOwner(), newOwner()];
      await client.set(names.lease, `2/${ahead}:${b}`, 'PX', 10_000);
      expect(await store.acquire(k, c, 10_000, { lineMs: 5_000 })).toBeNull();
      expect(await store.release(k, b)).toBe(true);
      expect(await store.inspect(k)).toMatchObject({ owner: c, fence: ahead + 1n });
      expect(await store.release(k, c)).toBe(true);
      expect(await client.exists(names.lease, names.line, names.waiters, names.wake)).toBe(0);
    });
  });

  describe('a value cachelock did not write', () => {
    const foreign: [string, (k: string) => Promise<unknown>][] = [
      ['1', (k) => client.set(k, '1')],
      ['1 with an expiry', (k) => client.set(k, '1', 'PX', 60_000)],
      ['text', (k) => client.set(k, 'locked by the billing service')],
      ['text with colons', (k) => client.set(k, 'a:b:c')],
      ['digits and a colon', (k) => client.set(k, '7:')],
      ['this layout without an owner', (k) => client.set(k, '2/7:')],
      ['the empty string', (k) => client.set(k, '')],
      ['a hash', (k) => client.hset(k, 'field', 'value')],
    ];

    for (const [label, write] of foreign) {
      it(`is held by an unknown owner, never taken, changed or deleted: ${label}`, async () => {
        const k = key('foreign');
        const names = lockKeys(k);
        await write(names.lease);
        const dump = await client.dump(names.lease);
        const ttl = await client.pttl(names.lease);
        const options = { cache: store, prefix: '' };

        const refused = await Lock.acquire(k, options).catch((error) => error);
        expect(refused).toBeInstanceOf(LockedError);
        expect(refused.holder).toMatchObject({ owner: '' });
        expect(refused.holder.fence).toBeUndefined();
        const holder = await Lock.inspect(k, options);
        expect(holder).toMatchObject({ owner: '', fence: undefined });
        if (ttl === -1) expect(holder!.ttlMs).toBe(Number.POSITIVE_INFINITY);
        else expect(holder!.ttlMs).toBeGreaterThan(50_000);

        expect(await new Lock(k, { ...options, wait: 150 }).tryAcquire()).toBe(false);
        const a = newOwner();
        expect(await store.acquire(k, a, 10_000, { lineMs: 1_000 })).toBeNull();
        expect(await store.extend(k, a, 10_000)).toBe(false);
        expect(await store.release(k, a)).toBe(false);
        expect(await store.extend(k, '', 10_000)).toBe(false);
        expect(await client.dump(names.lease)).toEqual(dump);
        expect(await client.pttl(names.lease)).toBeLessThanOrEqual(Math.max(ttl, -1));
        expect(await client.exists(names.line, names.waiters, names.wake, names.fence)).toBe(0);

        // Only a forced release, which names the unknown owner '', removes it.
        expect(await store.release(k, '')).toBe(true);
        expect(await client.exists(names.lease)).toBe(0);
        const lock = await Lock.acquire(k, options);
        expect(await store.release(k, '')).toBe(false);
        expect(await lock.release()).toBe(true);
      });
    }

    it('is never extended or released by an owner its text happens to end with', async () => {
      const owner = newOwner();
      for (const text of [`a:${owner}`, `2/:${owner}`, `2/abc:${owner}`, `5*:${owner}`]) {
        const k = key('lookalike');
        const lease = lockKeys(k).lease;
        await client.set(lease, text, 'PX', 60_000);
        expect(await store.extend(k, owner, 1_000)).toBe(false);
        expect(await store.release(k, owner, 500)).toBe(false);
        expect(await store.release(k, owner)).toBe(false);
        expect(await client.get(lease)).toBe(text);
        expect(await client.pttl(lease)).toBeGreaterThan(50_000);
      }
    });

    it('`cachelock release --force` removes it', async () => {
      const k = key('force');
      await client.set(lockKeys(k).lease, '1');
      const write = process.stdout.write;
      const said: string[] = [];
      process.stdout.write = ((text: string) => said.push(text) > 0) as typeof write;
      let code: number;
      try {
        code = await forceRelease({ command: 'release', key: k, cache: server.url, prefix: '' });
      } finally {
        process.stdout.write = write;
      }
      expect(code).toBe(0);
      expect(said.join('')).toContain('released');
      expect(await client.exists(lockKeys(k).lease)).toBe(0);
    });
  });

  describe('a rolling upgrade from the first release', () => {
    const first = (script: { text: string }, k: string, ...args: string[]) =>
      client.eval(script.text, 1, lockKeys(k).lease, ...args);

    it('an old process cannot take a key held here, even as a waiter that marks it', async () => {
      const k = key('new-held');
      const a = newOwner();
      const got = await store.acquire(k, a, 10_000);
      const old = newOwner();
      expect(await first(FIRST_ACQUIRE, k, old, '10000', '0')).toBeNull();
      expect(await first(FIRST_ACQUIRE, k, old, '10000', '3000')).toBeNull();
      expect(await client.get(lockKeys(k).lease)).toBe(`2/${got!.fence}*:${a}`);
      expect(await store.inspect(k)).toMatchObject({ owner: a, fence: got!.fence });
      expect(await store.extend(k, a, 10_000)).toBe(true);
      expect(await first(FIRST_RELEASE, k, old, '0')).toBe(0);
      expect(await store.release(k, a)).toBe(true);
      expect(await client.exists(lockKeys(k).lease)).toBe(0);
      // Free again, the old process takes it (with its own counter's fence).
      expect(await first(FIRST_ACQUIRE, k, old, '10000', '3000')).not.toBeNull();
      expect(await first(FIRST_RELEASE, k, old, '0')).toBe(1);
      await client.del(
        lockKeys(k).fence,
        `${lockKeys(k).lease}:line`,
        `${lockKeys(k).lease}:waiters`,
      );
    });

    it('a key held by an old process is refused here, named, and left alone', async () => {
      const k = key('old-held');
      const old = newOwner();
      const oldFence = await first(FIRST_ACQUIRE, k, old, '10000', '0');
      const value = await client.get(lockKeys(k).lease);
      const refused = await Lock.acquire(k, { cache: store, prefix: '' }).catch((e) => e);
      expect(refused).toBeInstanceOf(LockedError);
      expect(refused.holder).toMatchObject({ owner: old, fence: BigInt(oldFence as number) });
      const a = newOwner();
      expect(await store.acquire(k, a, 10_000, { lineMs: 1_000 })).toBeNull();
      expect(await store.release(k, a)).toBe(false);
      expect(await store.extend(k, a, 10_000)).toBe(false);
      expect(await client.get(lockKeys(k).lease)).toBe(value);
      expect(await first(FIRST_RELEASE, k, old, '0')).toBe(1);
      const got = await store.acquire(k, a, 10_000);
      expect(got!.fence!).toBeGreaterThan(BigInt(oldFence as number));
      expect(await store.release(k, a)).toBe(true);
      await client.del(lockKeys(k).fence);
    });
  });
});
