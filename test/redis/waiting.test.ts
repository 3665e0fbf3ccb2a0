import { closeAll, Lock } from 'cachelock';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { binaryOrSkip } from '../support/reachable.js';
import { RedisServer, sleep } from '../support/redis-server.js';

const runs = await binaryOrSkip('Redis store', 'redis-server');

describe.runIf(runs)('waiting on a Redis key (throwaway server)', () => {
  let server: RedisServer;

  beforeAll(async () => {
    server = await RedisServer.start();
  });
  afterAll(async () => {
    await closeAll();
    await server?.dispose();
  });

  it('a contended section costs three scripts however many wait: no polling while in line', async () => {
    const perSection: number[] = [];
    for (const workers of [3, 12]) {
      const key = `cachelock:test:${process.pid}:waiting:${workers}`;
      const clients = Array.from({ length: workers }, () => new Redis(server.port, '127.0.0.1'));
      const locks = clients.map((cache) => new Lock(key, { cache, ttl: '10s', wait: '30s' }));
      let inside = 0;
      let overlaps = 0;
      const run = (sections: number) =>
        Promise.all(
          locks.map(async (lock) => {
            for (let i = 0; i < sections; i++) {
              await lock.acquire();
              if (++inside > 1) overlaps++;
              await sleep(1);
              inside--;
              await lock.release();
            }
          }),
        );
      await run(2); // connected, scripts loaded, channels subscribed
      await server.cli('CONFIG', 'RESETSTAT');
      const sections = 10;
      await run(sections);
      const stats = await server.cli('INFO', 'commandstats');
      const scripts = Number(/cmdstat_evalsha:calls=(\d+)/.exec(stats)?.[1] ?? 0);
      perSection.push(scripts / (workers * sections));
      for (const c of clients) c.disconnect();
      expect(overlaps).toBe(0);
    }
    // One try that joins the line, the release that hands the key on, the confirmation.
    for (const cost of perSection) expect(cost).toBeLessThanOrEqual(3.2);
  });
});
