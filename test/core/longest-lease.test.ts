import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { closeAll, Lock, resolveStore } from 'cachelock';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { MAX_TIMER_MS } from '../../src/duration.js';
import { MemcachedServer } from '../support/memcached-server.js';
import { serverOrSkip } from '../support/reachable.js';

// Every store takes the longest lease cachelock allows, and a holdAtLeast as long: Redis PX,
// a PostgreSQL interval, SQLite integer ms, and Memcached, which reads an expiry over 30 days
// as a Unix time.
const DAY = 86_400_000;
const redis = await serverOrSkip('Redis', 6379);
const postgres = await serverOrSkip('PostgreSQL', 5432);

describe('the longest lease on every store', () => {
  let memcached: MemcachedServer;
  const dir = mkdtempSync(join(tmpdir(), 'cachelock-longest-'));
  beforeAll(async () => {
    memcached = await MemcachedServer.start();
  });
  afterAll(async () => {
    await closeAll();
    await memcached?.kill();
    rmSync(dir, { recursive: true, force: true });
  });

  const caches: Array<[string, () => string, boolean]> = [
    ['redis', () => 'redis://127.0.0.1:6379', redis],
    ['postgres', () => 'postgres://postgres@127.0.0.1:5432/test', postgres],
    ['sqlite', () => `sqlite:${join(dir, 'locks.sqlite')}`, true],
    ['memcached', () => memcached.url, true],
  ];

  for (const [name, url, available] of caches) {
    it.skipIf(!available)(
      `${name}: a ttl and a holdAtLeast of 2^31-1 ms hold for that long`,
      async () => {
        const cache = url();
        const key = `longest-${randomBytes(4).toString('hex')}`;
        const store = await resolveStore({ cache });
        try {
          const lock = await Lock.acquire(key, {
            cache,
            ttl: MAX_TIMER_MS,
            holdAtLeast: MAX_TIMER_MS,
          });
          const held = await Lock.inspect(key, { cache });
          expect(held!.ttlMs).toBeGreaterThan(24 * DAY);
          expect(held!.ttlMs).toBeLessThanOrEqual(MAX_TIMER_MS + 2_000);
          await lock.extend();
          expect(await lock.release()).toBe(true);
          const kept = await Lock.inspect(key, { cache });
          expect(kept!.ttlMs).toBeGreaterThan(24 * DAY);
          expect(await new Lock(key, { cache }).tryAcquire()).toBe(false);
        } finally {
          const left = await store.inspect(`cachelock:${key}`);
          if (left !== null) await store.release(`cachelock:${key}`, left.owner);
        }
      },
    );
  }
});
