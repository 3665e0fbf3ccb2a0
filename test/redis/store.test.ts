import type { Handoff, LockStore } from 'cachelock';
import { newOwner } from 'cachelock';
import { lockKeys, type RedisStore, redisStore, storeFromUrl } from 'cachelock/redis';
import { Redis } from 'ioredis';
import { createClient } from 'redis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseWake } from '../../src/redis/keys.js';
import { binaryOrSkip, closedPort } from '../support/reachable.js';
import { RedisServer, sleep } from '../support/redis-server.js';

const runs = await binaryOrSkip('Redis store', 'redis-server');
let counter = 0;
const key = (label: string) => `cachelock:test:${process.pid}:${label}:${++counter}`;

describe.runIf(runs)('redis store on a throwaway server', () => {
  let server: RedisServer;
  let client: Redis;
  let store: RedisStore;

  beforeAll(async () => {
    server = await RedisServer.start();
    client = new Redis(server.port, '127.0.0.1');
    store = redisStore(client);
  });
  afterAll(async () => {
    await store?.close();
    client?.disconnect();
    await server?.dispose();
  });

  it('hostile keys work and never collide', async () => {
    const base = key('hostile');
    const hostile = [
      '',
      ' ',
      'a b',
      'line\nbreak',
      '{',
      '}',
      '{}',
      '}{',
      '{a}',
      'a',
      '%7Ba%7D',
      '%',
      '%25',
      ':fence',
      '}:fence',
      'x'.repeat(10_000),
      'ключ-鍵-🔒',
      // UTF-8 writes a lone surrogate as U+FFFD: the two must still be different locks.
      '\ud83d',
      '\ufffd',
      '\udc00',
      '%uD83D',
    ].map((k) => base + k);
    hostile.push('', '{', '%');
    const owners = hostile.map(() => newOwner());
    for (const [i, k] of hostile.entries()) {
      expect(
        await store.acquire(k, owners[i]!, 30_000),
        `acquire ${JSON.stringify(k.slice(0, 40))}`,
      ).not.toBeNull();
    }
    for (const [i, k] of hostile.entries()) {
      expect((await store.inspect(k))?.owner).toBe(owners[i]);
    }
    // Every key's names carry the same hash tag, so that a Cluster puts them in one slot.
    for (const k of hostile) {
      const names = lockKeys(k);
      const tag = (name: string) => name.slice(name.indexOf('{') + 1, name.indexOf('}'));
      expect(tag(names.fence)).toBe(tag(names.lease));
      expect(tag(names.line)).toBe(tag(names.lease));
      expect(tag(names.lease).length).toBeGreaterThan(0);
      expect(names.lease.endsWith('}')).toBe(true);
    }
    for (const [i, k] of hostile.entries()) expect(await store.release(k, owners[i]!)).toBe(true);
  });

  it('runs its scripts again after the server forgot them (NOSCRIPT)', async () => {
    const k = key('noscript');
    const a = newOwner();
    expect(await store.acquire(k, a, 10_000)).not.toBeNull();
    await server.cli('SCRIPT', 'FLUSH');
    expect(await store.extend(k, a, 10_000)).toBe(true);
    expect(await store.release(k, a)).toBe(true);
    await server.cli('SCRIPT', 'FLUSH');
    expect(await store.acquire(k, a, 10_000)).not.toBeNull();
    expect(await store.inspect(k)).toMatchObject({ owner: a });
    expect(await store.release(k, a)).toBe(true);
  });

  it('an uncontended acquire and release are one command each', async () => {
    const k = key('commands');
    const a = newOwner();
    await store.acquire(k, newOwner(), 1); // load the scripts
    await server.cli('CONFIG', 'RESETSTAT');
    expect(await store.acquire(k, a, 10_000)).not.toBeNull();
    expect(await store.release(k, a)).toBe(true);
    const stats = await server.cli('INFO', 'commandstats');
    const calls = (name: string) =>
      Number(new RegExp(`cmdstat_${name}:calls=(\\d+)`).exec(stats)?.[1] ?? 0);
    expect(calls('evalsha')).toBe(2);
    expect(calls('eval')).toBe(0);
  });

  describe('the line of waiters', () => {
    it('release hands the key to the first live waiter with a new fence and says so', async () => {
      const k = key('handoff');
      const [a, b, c] = [newOwner(), newOwner(), newOwner()];
      const first = await store.acquire(k, a, 30_000);
      const heard: (Handoff | undefined)[] = [];
      const stop = store.onRelease(k, (handoff) => heard.push(handoff));
      try {
        await sleep(100);
        expect(await store.acquire(k, b, 30_000, { lineMs: 5_000 })).toBeNull();
        expect(await store.acquire(k, c, 30_000, { lineMs: 5_000 })).toBeNull();
        // Refreshing a place keeps it.
        expect(await store.acquire(k, b, 30_000, { lineMs: 5_000 })).toBeNull();
        expect(await store.release(k, a)).toBe(true);
        const afterA = await store.inspect(k);
        expect(afterA?.owner).toBe(b);
        // Refused attempts count fences too, so the hand-off's fence is larger, not next.
        expect(afterA!.fence! > first!.fence!).toBe(true);
        // The claim lease is short (at most lineMs) until b takes it up.
        expect(afterA!.ttlMs).toBeLessThanOrEqual(5_000);
        await vi_waitFor(() => heard.some((h) => h?.owner === b));
        expect(heard.find((h) => h?.owner === b)).toMatchObject({
          fence: afterA?.fence,
          ttlMs: 5_000,
        });
        // b takes it up with its full lease, keeping the fence.
        expect(await store.acquire(k, b, 30_000, { lineMs: 5_000 })).toEqual({
          fence: afterA?.fence,
        });
        expect((await store.inspect(k))!.ttlMs).toBeGreaterThan(5_000);
        expect(await store.release(k, b)).toBe(true);
        expect((await store.inspect(k))?.owner).toBe(c);
        expect(await store.release(k, c)).toBe(true);
        expect(await store.inspect(k)).toBeNull();
      } finally {
        stop();
      }
    });

    it('a waiter in the releasing process learns of its hand-off from the release reply', async () => {
      // The waiter's store subscribes on a port where no server listens, so no message can
      // reach it: what it hears comes from the reply to the release made on the other store.
      const deaf = new Redis(server.port, '127.0.0.1');
      const nowhere = await closedPort();
      deaf.duplicate = () => {
        const sub = new Redis(nowhere, '127.0.0.1', { maxRetriesPerRequest: 0 });
        sub.on('error', () => {});
        return sub;
      };
      const waiterStore = redisStore(deaf);
      const k = key('local-handoff');
      const [a, b] = [newOwner(), newOwner()];
      const heard: (Handoff | undefined)[] = [];
      const stop = waiterStore.onRelease(k, (handoff) => heard.push(handoff));
      try {
        const first = await store.acquire(k, a, 30_000);
        expect(await waiterStore.acquire(k, b, 30_000, { lineMs: 5_000 })).toBeNull();
        expect(await store.release(k, a)).toBe(true);
        const handoff = heard.find((h) => h !== undefined);
        expect(handoff).toMatchObject({ owner: b, ttlMs: 5_000 });
        expect(handoff!.fence! > first!.fence!).toBe(true);
        expect((await store.inspect(k))?.owner).toBe(b);
        expect(await waiterStore.release(k, b)).toBe(true);
      } finally {
        stop();
        await waiterStore.close();
        deaf.disconnect();
      }
    });

    it('skips a waiter whose place lapsed, and a waiter that left the line', async () => {
      const k = key('lapsed');
      const [a, dead, gone, live] = [newOwner(), newOwner(), newOwner(), newOwner()];
      await store.acquire(k, a, 30_000);
      expect(await store.acquire(k, dead, 30_000, { lineMs: 100 })).toBeNull();
      expect(await store.acquire(k, gone, 30_000, { lineMs: 10_000 })).toBeNull();
      expect(await store.acquire(k, live, 30_000, { lineMs: 10_000 })).toBeNull();
      expect(await store.release(k, gone)).toBe(false);
      await sleep(200);
      expect(await store.release(k, a)).toBe(true);
      expect((await store.inspect(k))?.owner).toBe(live);
      expect(await store.release(k, live)).toBe(true);
      expect(await store.inspect(k)).toBeNull();
      // With the line empty, its keys are gone too.
      expect(await client.exists(lockKeys(k).line, lockKeys(k).waiters)).toBe(0);
    });

    it('a waiter that died after being handed the key holds it up only for its claim', async () => {
      const k = key('claim');
      const [a, dead, next] = [newOwner(), newOwner(), newOwner()];
      await store.acquire(k, a, 30_000);
      expect(await store.acquire(k, dead, 30_000, { lineMs: 300 })).toBeNull();
      expect(await store.release(k, a)).toBe(true);
      expect((await store.inspect(k))?.owner).toBe(dead);
      await sleep(400);
      expect(await store.acquire(k, next, 30_000)).not.toBeNull();
      expect(await store.release(k, next)).toBe(true);
    });

    it('a key taken while others are in line is handed on at its release', async () => {
      // Its holder's lease ran out unreleased, so nobody handed the key to the waiter: whoever
      // takes it next must still hand it on, or the waiter finds it only by polling.
      const k = key('taken-past-line');
      const [a, waiter, c] = [newOwner(), newOwner(), newOwner()];
      await store.acquire(k, a, 200);
      expect(await store.acquire(k, waiter, 30_000, { lineMs: 10_000 })).toBeNull();
      await sleep(300);
      expect(await store.acquire(k, c, 30_000)).not.toBeNull();
      expect(await store.release(k, c)).toBe(true);
      expect((await store.inspect(k))?.owner).toBe(waiter);
      expect(await store.acquire(k, waiter, 30_000, { lineMs: 10_000 })).not.toBeNull();
      expect(await store.release(k, waiter)).toBe(true);
      expect(await client.exists(lockKeys(k).lease, lockKeys(k).line)).toBe(0);
    });

    it('a listener that comes in after a hand-off on its channel still hears it', async () => {
      const k = key('late-listener');
      const [a, b] = [newOwner(), newOwner()];
      const early: (Handoff | undefined)[] = [];
      const stopEarly = store.onRelease(k, (handoff) => early.push(handoff));
      const late: (Handoff | undefined)[] = [];
      let stopLate = () => {};
      try {
        await sleep(100); // subscribed
        early.length = 0;
        await store.acquire(k, a, 30_000);
        expect(await store.acquire(k, b, 30_000, { lineMs: 5_000 })).toBeNull();
        expect(await store.release(k, a)).toBe(true);
        // Heard twice: from the release's reply, then over the subscriber connection.
        await vi_waitFor(() => early.filter((h) => h?.owner === b).length >= 2);
        stopLate = store.onRelease(k, (handoff) => late.push(handoff));
        // Told once onRelease has returned, not from inside it.
        expect(late).toEqual([]);
        await vi_waitFor(() => late.some((h) => h?.owner === b));
        // A listener that stops itself on the missed hand-off can, with the function that
        // onRelease returns: told from inside onRelease, it could not yet reach it, and a
        // waiter written that way slept on after the key had been handed to it.
        const heard = await new Promise<Handoff | undefined>((resolve, reject) => {
          const timer = setTimeout(
            () => reject(new Error('the missed hand-off was not told')),
            5_000,
          );
          const stop = store.onRelease(k, (handoff) => {
            if (handoff?.owner !== b) return;
            clearTimeout(timer);
            stop();
            resolve(handoff);
          });
        });
        expect(heard?.owner).toBe(b);
        expect(await store.release(k, b)).toBe(true);
      } finally {
        stopEarly();
        stopLate();
      }
    });

    it('a waiter that listens only after its key was handed to it is told, and may stop listening from its listener', async () => {
      // The stress test's waiter below, driven in the order that stranded it: the hand-off
      // reaches the subscriber connection between the waiter's refused try and its listening.
      const k = key('missed-then-stopped');
      const [a, b] = [newOwner(), newOwner()];
      const stopKeep = store.onRelease(k, () => {}); // the channel stays subscribed
      try {
        await sleep(100);
        await store.acquire(k, a, 30_000);
        expect(await store.acquire(k, b, 30_000, { lineMs: 2_000 })).toBeNull();
        const seen: (Handoff | undefined)[] = [];
        const stopSeen = store.onRelease(k, (h) => seen.push(h));
        expect(await store.release(k, a)).toBe(true);
        await vi_waitFor(() => seen.filter((h) => h?.owner === b).length >= 2);
        stopSeen();
        let calls = 0;
        const wait = new Promise<string>((resolve) => {
          const timer = setTimeout(done, 1_000, 'timer');
          const stop = store.onRelease(
            k,
            (h) => (h === undefined || h.owner === b) && done('told'),
          );
          function done(by: string) {
            calls++;
            clearTimeout(timer);
            stop();
            resolve(by);
          }
        });
        // Its own timer is cleared by the first call, so a call that fails leaves it stranded.
        const stranded = sleep(5_000).then(() => 'stranded');
        expect(await Promise.race([wait, stranded])).toBe('told');
        expect(calls).toBe(1);
        expect(await store.acquire(k, b, 30_000, { lineMs: 2_000 })).not.toBeNull();
        expect(await store.release(k, b)).toBe(true);
      } finally {
        stopKeep();
      }
    });

    it('a hand-off made before the waiter was refused again is never told to it', async () => {
      // The hand-off grants the key to whoever it names: one that comes late, after its claim
      // ran out and the waiter was refused, must not pass for a grant.
      const k = key('stale-handoff');
      const [a, b, c] = [newOwner(), newOwner(), newOwner()];
      const seen: (Handoff | undefined)[] = [];
      const stopSeen = store.onRelease(k, (h) => seen.push(h));
      try {
        await sleep(100); // subscribed
        await store.acquire(k, a, 30_000);
        expect(await store.acquire(k, b, 300, { lineMs: 5_000 })).toBeNull();
        expect(await store.release(k, a)).toBe(true);
        await vi_waitFor(() => seen.filter((h) => h?.owner === b).length >= 2);
        const stale = seen.find((h) => h?.owner === b)!;
        expect(stale.ttlMs).toBeLessThanOrEqual(300);
        await sleep(400); // b's claim ran out unconfirmed
        expect(await store.acquire(k, c, 30_000)).not.toBeNull();
        expect(await store.acquire(k, b, 30_000, { lineMs: 5_000 })).toBeNull();
        // Told again to a late listener (the channel's last wake-ups): withheld now.
        const late: (Handoff | undefined)[] = [];
        const stopLate = store.onRelease(k, (h) => late.push(h));
        try {
          await sleep(100);
          expect(late.filter((h) => h?.owner === b)).toEqual([]);
          // A hand-off made after that refusal is told.
          expect(await store.release(k, c)).toBe(true);
          await vi_waitFor(() => late.some((h) => h?.owner === b));
          expect(late.find((h) => h?.owner === b)!.fence!).toBeGreaterThan(stale.fence!);
        } finally {
          stopLate();
        }
        expect(await store.release(k, b)).toBe(true);
      } finally {
        stopSeen();
      }
    });

    it('a hand-off to a waiter whose refusal this store did not see is news, not a grant', async () => {
      // Only the store that sent a waiter's refused acquire can tell a late hand-off from a
      // fresh one: any other store passes it on without its claim, so the waiter confirms.
      const k = key('unseen-refusal');
      const other = redisStore(client);
      const [a, b] = [newOwner(), newOwner()];
      const here: (Handoff | undefined)[] = [];
      const there: (Handoff | undefined)[] = [];
      const stopHere = store.onRelease(k, (h) => here.push(h));
      const stopThere = other.onRelease(k, (h) => there.push(h));
      try {
        await sleep(100); // subscribed
        await store.acquire(k, a, 30_000);
        expect(await store.acquire(k, b, 30_000, { lineMs: 5_000 })).toBeNull();
        expect(await store.release(k, a)).toBe(true);
        await vi_waitFor(
          () => here.some((h) => h?.owner === b) && there.some((h) => h?.owner === b),
        );
        const granted = here.find((h) => h?.owner === b)!;
        const news = there.find((h) => h?.owner === b)!;
        expect(granted.ttlMs).toBeGreaterThan(0);
        expect(news.ttlMs).toBeUndefined();
        expect(news.fence).toBe(granted.fence);
        expect(await store.release(k, b)).toBe(true);
      } finally {
        stopHere();
        stopThere();
        await other.close();
      }
    });

    it('holdAtLeast keeps the key held instead of handing it off', async () => {
      const k = key('keep');
      const [a, b] = [newOwner(), newOwner()];
      await store.acquire(k, a, 30_000);
      expect(await store.acquire(k, b, 30_000, { lineMs: 5_000 })).toBeNull();
      expect(await store.release(k, a, 300)).toBe(true);
      const info = await store.inspect(k);
      expect(info?.owner).toBe(a);
      expect(info!.ttlMs).toBeLessThanOrEqual(300);
      await sleep(400);
      expect(await store.acquire(k, b, 30_000, { lineMs: 5_000 })).not.toBeNull();
      expect(await store.release(k, b)).toBe(true);
    });

    it('never gives the key to two: many waiters on separate connections, counted by the holder', async () => {
      const k = key('stress');
      const clients = Array.from({ length: 6 }, () => new Redis(server.port, '127.0.0.1'));
      const stores = clients.map((c) => redisStore(c));
      let inside = 0;
      let sections = 0;
      let overlaps = 0;
      const fences: bigint[] = [];
      try {
        await Promise.all(
          stores.map(async (s, worker) => {
            for (let round = 0; round < 25; round++) {
              const owner = newOwner();
              let got = await s.acquire(k, owner, 5_000, { lineMs: 2_000 });
              while (got === null) {
                await new Promise<void>((resolve) => {
                  const timer = setTimeout(done, 20 + worker);
                  const stop = s.onRelease(
                    k,
                    (h) => (h === undefined || h.owner === owner) && done(),
                  );
                  function done() {
                    clearTimeout(timer);
                    stop();
                    resolve();
                  }
                });
                got = await s.acquire(k, owner, 5_000, { lineMs: 2_000 });
              }
              if (++inside > 1) overlaps++;
              fences.push(got.fence!);
              await sleep(Math.random() * 2);
              inside--;
              sections++;
              expect(await s.release(k, owner)).toBe(true);
            }
          }),
        );
      } finally {
        await Promise.all(stores.map((s) => s.close()));
        for (const c of clients) c.disconnect();
      }
      expect(overlaps).toBe(0);
      expect(sections).toBe(150);
      for (let i = 1; i < fences.length; i++) expect(fences[i]!).toBeGreaterThan(fences[i - 1]!);
    });
  });

  describe('push wake-ups', () => {
    it('a wake message names its key channel by length in UTF-8 bytes', () => {
      for (const channel of ['{k}', '{ключ 🔒:1}:v2:permits', '{a:b}']) {
        const bytes = Buffer.byteLength(channel);
        expect(parseWake(`${bytes}:${channel}12:3:own:er`)).toEqual([channel, '12:3:own:er']);
        expect(parseWake(`${bytes}:${channel}`)).toEqual([channel, '']);
      }
      for (const bad of ['', ':x', 'x:y', '9:short', '-1:x'])
        expect(parseWake(bad)).toBeUndefined();
    });

    it('opens one subscriber lazily and shares a channel among listeners', async () => {
      const own = new Redis(server.port, '127.0.0.1');
      const s = redisStore(own);
      const k = key('shared');
      const channel = lockKeys(k).channel;
      const clientCount = async () => (await server.cli('CLIENT', 'LIST')).split('\n').length;
      const numsub = async () =>
        Number((await server.cli('PUBSUB', 'NUMSUB', channel)).split('\n')[1]);
      try {
        await own.ping();
        const before = await clientCount();
        await s.acquire(k, newOwner(), 1_000);
        expect(await clientCount()).toBe(before);
        const calls: number[] = [0, 0];
        const stop0 = s.onRelease(k, () => calls[0]!++);
        const stop1 = s.onRelease(k, () => calls[1]!++);
        await vi_waitFor(async () => (await numsub()) === 1);
        expect(await clientCount()).toBe(before + 1);
        // Each listener is called once when the subscription becomes active.
        await vi_waitFor(() => calls[0]! >= 1 && calls[1]! >= 1);
        stop0();
        expect(await numsub()).toBe(1);
        stop1();
        await vi_waitFor(async () => (await numsub()) === 0);
      } finally {
        await s.close();
        own.disconnect();
      }
    });

    it('works with node-redis', async () => {
      const own = createClient({ url: server.url });
      await own.connect();
      const s = redisStore(own);
      const k = key('node-redis');
      const a = newOwner();
      const heard: (Handoff | undefined)[] = [];
      try {
        await s.acquire(k, a, 10_000);
        const stop = s.onRelease(k, (h) => heard.push(h));
        await vi_waitFor(() => heard.length >= 1);
        const b = newOwner();
        expect(await s.acquire(k, b, 10_000, { lineMs: 1_000 })).toBeNull();
        await s.release(k, a);
        await vi_waitFor(() => heard.some((h) => h?.owner === b));
        stop();
      } finally {
        await s.close();
        await own.close();
      }
    });
  });

  describe('store from a URL', () => {
    it('opens and ends its own client for redis:// and valkey://', async () => {
      for (const scheme of ['redis', 'valkey']) {
        const s = (await storeFromUrl(
          new URL(`${scheme}://127.0.0.1:${server.port}`),
        )) as LockStore;
        const k = key(scheme);
        const a = newOwner();
        expect(await s.acquire(k, a, 10_000)).not.toBeNull();
        expect(await s.release(k, a)).toBe(true);
        await s.close?.();
        await expect(s.acquire(k, a, 10_000)).rejects.toThrow();
      }
    });

    it('rejects within a bounded time when no server is there', async () => {
      const port = await closedPort();
      const s = await storeFromUrl(new URL(`redis://127.0.0.1:${port}`));
      const started = Date.now();
      await expect(s.acquire(key('absent'), newOwner(), 10_000)).rejects.toThrow();
      expect(Date.now() - started).toBeLessThan(6_000);
      await s.close?.();
    });
  });
});

/** Wait until `probe` is true, failing after 5 s. */
async function vi_waitFor(probe: () => boolean | Promise<boolean>): Promise<void> {
  const deadline = Date.now() + 5_000;
  while (!(await probe())) {
    if (Date.now() > deadline) throw new Error('condition not met within 5 s');
    await sleep(10);
  }
}
