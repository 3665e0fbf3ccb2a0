import { newOwner } from 'cachelock';
import { redlockStore } from 'cachelock/redlock';
import { Redis } from 'ioredis';
import { describe, expect, it } from 'vitest';
import { binaryOrSkip } from '../support/reachable.js';
import { RedisServer, sleep } from '../support/redis-server.js';

// A key nobody holds leaves nothing behind: once a lease (and its holdAtLeast) is over, no
// server of the quorum keeps anything for it.

const runs = await binaryOrSkip('Redlock leftovers', 'redis-server');
const KEYS = 5_000;
const TTL_MS = 1_000;

describe.runIf(runs)('redlock store: nothing left behind', () => {
  it('keeps no key on any server for 5,000 keys locked once: released, held at least, or left to expire', async () => {
    const servers = await Promise.all([0, 1, 2].map(() => RedisServer.start()));
    const clients = servers.map((s) => new Redis(s.port, '127.0.0.1'));
    try {
      const store = redlockStore(clients);
      const lockOnce = async (i: number) => {
        const owner = newOwner();
        const key = `cachelock:leftover:${i}`;
        if ((await store.acquire(key, owner, TTL_MS)) === null) return false;
        // A third released, a third held at least a while, a third left to expire.
        if (i % 3 === 0) return store.release(key, owner);
        if (i % 3 === 1) return store.release(key, owner, 300);
        return true;
      };
      const taken: boolean[] = [];
      // In batches, so that every grant comes well within its lease on a busy machine.
      for (let i = 0; i < KEYS; i += 250) {
        const batch = Array.from({ length: 250 }, (_, j) => lockOnce(i + j));
        taken.push(...(await Promise.all(batch)));
      }
      expect(taken.every(Boolean)).toBe(true);
      const sizes = async () => Promise.all(clients.map((c) => c.dbsize()));
      expect((await sizes()).every((n) => n > 0)).toBe(true);
      // Past every lease, plus the drift margin each server adds to it.
      await sleep(TTL_MS * 1.2);
      // Redis reclaims expired keys a sample at a time, so DBSIZE may lag a little; a key with
      // no expiry, or one that outlives every lease, would never go.
      const deadline = Date.now() + 5_000;
      while ((await sizes()).some((n) => n > 0) && Date.now() < deadline) await sleep(100);
      const left = await Promise.all(
        clients.map(async (c) => {
          const keys = await c.keys('*');
          return Promise.all(keys.map(async (k) => `${k} pttl=${await c.pttl(k)}`));
        }),
      );
      expect(left).toEqual([[], [], []]);
    } finally {
      for (const c of clients) c.disconnect();
      await Promise.all(servers.map((s) => s.dispose()));
    }
  }, 60_000);
});
