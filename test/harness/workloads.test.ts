import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { MemcachedServer } from '../support/memcached-server.js';
import { binaryOrSkip, builtOrSkip, serverOrSkip } from '../support/reachable.js';
import { RedisServer } from '../support/redis-server.js';
import { replay, runWorkload, type WorkloadEvent, type WorkloadOptions } from './workloads.js';

// Real OS processes on each backend with the capability; memory lives in one process, so it has
// no place here. Each case is a few seconds: 8 processes, a handful of short sections each.

const event = (kind: 'enter' | 'leave', at: number, role?: 'reader' | 'writer'): WorkloadEvent => ({
  process: 0,
  section: 0,
  event: kind,
  at: BigInt(at),
  role,
});

describe('workload log replay', () => {
  it('counts who is inside at once, a leave before an enter at the same instant', () => {
    const events = [event('enter', 0), event('enter', 1), event('leave', 5), event('enter', 5)];
    expect(replay(events).most).toBe(2);
    expect(replay([...events, event('enter', 3)]).most).toBe(3);
  });

  it('finds a writer inside with a reader, or a reader inside with a writer', () => {
    const clean = [
      event('enter', 0, 'reader'),
      event('enter', 1, 'reader'),
      event('leave', 2, 'reader'),
      event('leave', 3, 'reader'),
      event('enter', 3, 'writer'),
      event('leave', 4, 'writer'),
    ];
    expect(replay(clean).writerWithOthers).toBe(0);
    expect(replay([...clean, event('enter', 3, 'reader')]).writerWithOthers).toBe(1);
    expect(
      replay([event('enter', 0, 'reader'), event('enter', 1, 'writer')]).writerWithOthers,
    ).toBe(1);
  });
});

describe.runIf(builtOrSkip('multi-process workloads', ['index.js', 'sqlite/index.js']))(
  'the workload checks can fail',
  () => {
    it('the replay sees more than 3 inside when the processes share 8 permits', async () => {
      const result = await runWorkload({
        cache: `sqlite:${join(temp, 'loose.sqlite')}`,
        workload: 'semaphore',
        permits: 8,
        sectionsPerProcess: 3,
        holdMs: 100,
      });
      expect(replay(result.events).most).toBeGreaterThan(3);
    }, 90_000);
  },
);

interface Backend {
  name: string;
  runs: boolean;
  cache: () => string;
  register?: 'redlock';
  /** Only the several-keys workload, through the core's fixed-order fallback. */
  locksOnly?: boolean;
  setup?: () => Promise<void>;
  teardown?: () => Promise<void>;
}

const built = builtOrSkip('multi-process workloads', ['index.js']);
const temp = mkdtempSync(join(tmpdir(), 'cachelock-workloads-'));
afterAll(() => rmSync(temp, { recursive: true, force: true }));

let memcached: MemcachedServer | undefined;
const redlockServers: RedisServer[] = [];
const hasMemcached = await binaryOrSkip('memcached', 'memcached');
const hasRedisServer = await binaryOrSkip('redis-server', 'redis-server');

const backends: Backend[] = [
  {
    name: 'Redis (ioredis)',
    runs: await serverOrSkip('Redis', 6379),
    cache: () => 'redis://127.0.0.1:6379',
  },
  {
    name: 'PostgreSQL',
    runs: await serverOrSkip('PostgreSQL', 5432),
    cache: () => 'postgres://postgres@127.0.0.1:5432/test',
  },
  { name: 'SQLite', runs: true, cache: () => `sqlite:${join(temp, 'locks.sqlite')}` },
  {
    name: 'MariaDB',
    runs: await serverOrSkip('MariaDB', 3306),
    locksOnly: true,
    cache: () => 'mysql://root@127.0.0.1:3306/test',
  },
  {
    name: 'Memcached',
    runs: hasMemcached,
    locksOnly: true,
    cache: () => memcached!.url,
    setup: async () => {
      memcached = await MemcachedServer.start();
    },
    teardown: async () => {
      await memcached?.kill();
    },
  },
  {
    name: 'Redlock over 3 servers',
    runs: hasRedisServer,
    locksOnly: true,
    register: 'redlock',
    cache: () =>
      `redlock:?${redlockServers.map((server) => `server=${encodeURIComponent(server.url)}`).join('&')}`,
    setup: async () => {
      for (let i = 0; i < 3; i++) redlockServers.push(await RedisServer.start());
    },
    teardown: async () => {
      for (const server of redlockServers.splice(0)) await server.kill();
    },
  },
];

for (const backend of backends) {
  describe.runIf(built && backend.runs)(`${backend.name} across processes`, () => {
    beforeAll(async () => backend.setup?.(), 60_000);
    afterAll(async () => backend.teardown?.(), 60_000);
    const run = (options: Omit<WorkloadOptions, 'cache'>) =>
      runWorkload({ ...options, cache: backend.cache(), register: backend.register });

    it.skipIf(backend.locksOnly)(
      '8 processes share a semaphore of 3: never more than 3 inside, every process finishes',
      async () => {
        const result = await run({ workload: 'semaphore', permits: 3, sectionsPerProcess: 6 });
        const enters = result.events.filter((e) => e.event === 'enter');
        expect(enters).toHaveLength(result.expectedSections);
        expect(result.events.filter((e) => e.event === 'leave')).toHaveLength(
          result.expectedSections,
        );
        expect(replay(result.events).most).toBeLessThanOrEqual(3);
        // Contended enough that the limit was reached, not merely never approached.
        expect(replay(result.events).most).toBeGreaterThanOrEqual(2);
      },
      90_000,
    );

    it.skipIf(backend.locksOnly)(
      'readers and writers: no writer with anyone inside, as each sees it and in the replay',
      async () => {
        const result = await run({ workload: 'rw', sectionsPerProcess: 8, holdMs: 8 });
        expect(result.events.filter((e) => e.event === 'violation')).toEqual([]);
        expect(result.events.filter((e) => e.event === 'enter')).toHaveLength(
          result.expectedSections,
        );
        expect(replay(result.events).writerWithOthers).toBe(0);
      },
      90_000,
    );

    it('transfers between random pairs of 10 accounts under two-key locks keep the total, without deadlock', async () => {
      const result = await run({
        workload: 'transfer',
        accounts: 10,
        sectionsPerProcess: 10,
        holdMs: 3,
        // Bounded: a deadlock ends the run here (each wait also gives up after 30 s).
        timeoutMs: 45_000,
      });
      const transfers = result.events.filter((e) => e.event === 'transfer');
      const audits = result.events.filter((e) => e.event === 'audit');
      expect(transfers.length + audits.length).toBe(result.expectedSections);
      expect(audits.map((a) => a.total)).toEqual(audits.map(() => 1000));
      expect(result.balances.reduce((sum, b) => sum + b, 0)).toBe(1000);
      // Money moved: the transfers changed the balances.
      expect(result.balances.some((b) => b !== 100)).toBe(true);
    }, 90_000);
  });
}
