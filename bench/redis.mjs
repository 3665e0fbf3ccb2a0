// Redis: cachelock against the floor (SET NX PX + a compare-and-delete script through ioredis,
// no library) and its peers, interleaved in one run on a throwaway redis-server. Needs the
// built package (npm run build) and `redis-server` on the PATH.
import { setTimeout as sleep } from 'node:timers/promises';
import { Redlock } from '@sesamecare-oss/redlock';
import * as cachelock from 'cachelock';
import { redisStore } from 'cachelock/redis';
import { Redis } from 'ioredis';
import { Semaphore as PeerSemaphore, Mutex as SemaphoreMutex } from 'redis-semaphore';

const { closeAll, Lock, newOwner } = cachelock;

import {
  asyncMutex,
  fmt,
  interleaveStats,
  median,
  perCall,
  permitTaker,
  ratio,
  semaphoreRound,
  table,
} from './lib.mjs';
import { withFencedFloor, withFloor, withPushFloor } from './redis-floors.mjs';
import { startRedis } from './servers.mjs';

const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 5);
const PAIRS = Number(process.env.BENCH_PAIRS ?? 2_000);
const CONTENDED_MS = Number(process.env.BENCH_CONTENDED_MS ?? 2_000);
const INFLIGHT_MS = Number(process.env.BENCH_INFLIGHT_MS ?? 1_000);
const TTL = Number(process.env.BENCH_TTL ?? 10_000);

const server = await startRedis();
const connect = (options = {}) => {
  const client = new Redis(server.port, '127.0.0.1', options);
  client.on('error', () => {});
  return client;
};
let run = 0;
const freshKey = (name) => `bench:${name}:${++run}`;

/**
 * The server's own count: scripts run (EVAL/EVALSHA) and its CPU (user + system, us) so far,
 * read from INFO, so that a case can report the server's cost per operation beside ours.
 */
async function serverCost(client) {
  const info = await client.info('all');
  let scripts = 0;
  for (const m of info.matchAll(/^cmdstat_(?:eval|evalsha|eval_ro|evalsha_ro):calls=(\d+)/gm))
    scripts += Number(m[1]);
  const cpu = (name) => Number(new RegExp(`^${name}:([\\d.]+)`, 'm').exec(info)?.[1] ?? 0);
  return { scripts, cpuUs: (cpu('used_cpu_user') + cpu('used_cpu_sys')) * 1e6 };
}
const costSince = (before, after, n) => ({
  scripts: (after.scripts - before.scripts) / n,
  cpuUs: (after.cpuUs - before.cpuUs) / n,
});

// Each library's uncontended acquire+release of `key` on `client`.
const libraries = [
  {
    name: 'floor (SET NX PX + EVALSHA del)',
    make(client) {
      withFloor(client);
      let n = 0;
      return async (key) => {
        const token = `t${++n}`;
        if ((await client.set(key, token, 'PX', TTL, 'NX')) !== 'OK') throw new Error('held');
        await client.floorRelease(key, token);
      };
    },
  },
  {
    name: 'fenced floor (TIME + SET NX PX in a script + compare-and-delete)',
    make(client) {
      withFencedFloor(client);
      let n = 0;
      return async (key) => {
        const token = `t${++n}`;
        const fence = await client.fencedAcquire(key, token, TTL);
        if (fence === null) throw new Error('held');
        BigInt(fence);
        await client.fencedRelease(key, token);
      };
    },
  },
  {
    name: 'cachelock',
    make(client) {
      return async (key) => {
        const lock = new Lock(key, { cache: client, ttl: TTL });
        await lock.acquire();
        await lock.release();
      };
    },
  },
  {
    name: '@sesamecare-oss/redlock',
    make(client) {
      const redlock = new Redlock([client], { retryCount: 0 });
      return async (key) => {
        const lock = await redlock.acquire([key], TTL);
        await lock.release();
      };
    },
  },
  {
    name: 'redis-semaphore Mutex',
    make(client) {
      return async (key) => {
        const mutex = new SemaphoreMutex(client, key, {
          lockTimeout: TTL,
          acquireAttemptsLimit: 1,
        });
        await mutex.acquire();
        await mutex.release();
      };
    },
  },
];

async function uncontended() {
  const client = connect();
  const admin = connect();
  const pairs = new Map(libraries.map((lib) => [lib.name, lib.make(client)]));
  for (const [, pair] of pairs) for (let i = 0; i < 200; i++) await pair(freshKey('warm'));
  const results = await interleaveStats(libraries, ROUNDS, async (lib) => {
    const pair = pairs.get(lib.name);
    const key = freshKey('uncontended');
    const before = await serverCost(admin);
    const cpuBefore = process.cpuUsage();
    const value = await perCall(() => pair(key), PAIRS);
    const cpu = process.cpuUsage(cpuBefore);
    const server = costSince(before, await serverCost(admin), PAIRS);
    return { value, cpuUs: (cpu.user + cpu.system) / PAIRS, serverUs: server.cpuUs };
  });
  console.log('### Uncontended acquire+release, one connection\n');
  console.log(pairTable(results, 'us per acquire+release', 1));
  console.log(
    '\n(goal: cachelock within 1.05x of the floor; each ratio is the median of the per-round ratios, with their range. The CPU columns move far less than the clock here.)\n',
  );
  client.disconnect();
  admin.disconnect();
}

/**
 * One row per library: its median, its ratios to the floor and to the fenced floor (medians of
 * the per-round ratios, with their range), and the CPU each pair cost this process and Redis.
 */
function pairTable(results, unit, digits) {
  const floor = results.get(libraries[0].name);
  const fenced = results.get(libraries[1].name);
  const cpu = (name) => median(results.get(name).cpus);
  return table(
    [
      'library',
      unit,
      'vs floor (range)',
      'vs fenced floor (range)',
      'CPU us per pair (this process)',
      'Redis CPU us per pair',
    ],
    libraries.map((lib) => {
      const stats = results.get(lib.name);
      return [
        lib.name,
        fmt(stats.median, digits),
        ratio(stats, floor),
        ratio(stats, fenced),
        `${fmt(cpu(lib.name), 1)} (${fmt(cpu(lib.name) / cpu(libraries[1].name))}x fenced)`,
        fmt(median(stats.servers), 1),
      ];
    }),
  );
}

async function commandCounts() {
  const client = connect();
  const monitorClient = connect();
  const monitor = await monitorClient.monitor();
  const seen = { client: 0, script: 0 };
  let marker;
  monitor.on('monitor', (_time, args, source) => {
    if (String(args[0]).toLowerCase() === 'echo' && args[1] === marker) marker = undefined;
    else if (source === 'lua') seen.script++;
    else seen.client++;
  });
  const rows = [];
  const N = 100;
  for (const lib of libraries) {
    const pair = lib.make(client);
    await pair(freshKey('load')); // scripts loaded, clients set up
    await flush();
    seen.client = 0;
    seen.script = 0;
    for (let i = 0; i < N; i++) await pair(freshKey('count'));
    await flush();
    rows.push([lib.name, fmt(seen.client / N, 2), fmt(seen.script / N, 2)]);
  }
  console.log('### Commands per uncontended acquire+release (MONITOR)\n');
  console.log(table(['library', 'commands sent', 'commands run inside scripts'], rows));
  console.log('\n(goal: exactly 2 sent)\n');
  monitor.disconnect();
  monitorClient.disconnect();
  client.disconnect();

  async function flush() {
    marker = `flush-${Math.random()}`;
    await client.echo(marker);
    while (marker !== undefined) await sleep(5);
  }
}

// 4 workers, each on its own connection, one key, 1 ms hold, 0-2 ms between sections.
const WORKERS = 4;
/**
 * A contender with one connection per worker: `take(client, key)` gives the function that
 * acquires the lock and resolves its release.
 */
function perConnection(take) {
  return async (key) => {
    const clients = Array.from({ length: WORKERS }, () => connect());
    return {
      workers: clients.map((client) => {
        const acquire = take(client, key);
        return async (fn) => {
          const release = await acquire();
          try {
            await fn();
          } finally {
            await release();
          }
        };
      }),
      close: () => {
        for (const c of clients) c.disconnect();
      },
    };
  };
}

const PUSH_FLOOR = 'floor: push hand-off (take or join, release hands on and publishes)';
const contenders = [
  {
    name: 'async-mutex (in-process limit)',
    async setup() {
      const mutex = new asyncMutex.Mutex();
      return {
        workers: Array.from({ length: WORKERS }, () => (fn) => mutex.runExclusive(fn)),
        close() {},
      };
    },
  },
  {
    // The least a lock arbitrated by Redis pays between two holders: one round trip, where the
    // releaser records the next holder, then the turn passes in this process at no cost.
    name: 'floor: one write per hand-over (SET, then async-mutex)',
    async setup(key) {
      const mutex = new asyncMutex.Mutex();
      let turn = 0;
      const { workers, close } = await perConnection((client) => async () => {
        const release = await mutex.acquire();
        return async () => {
          await client.set(key, `holder ${++turn}`, 'PX', TTL);
          release();
        };
      })(key);
      return { workers, close };
    },
  },
  {
    // The least a lock pays when its waiters are in other processes (here: on other
    // connections): each waiter's try joins the key's line, and the release hands the key to the
    // first in line and tells it on its own channel (redis-floors.mjs).
    name: PUSH_FLOOR,
    async setup(key) {
      const line = `${key}:line`;
      let next = 0;
      const subscribers = [];
      const { workers, close } = await perConnection((client) => {
        withPushFloor(client);
        const owner = `w${++next}`;
        const subscriber = connect();
        subscribers.push(subscriber);
        let handed = () => {};
        subscriber.on('message', () => handed());
        const subscribed = subscriber.subscribe(`handed:${owner}`);
        return async () => {
          await subscribed;
          const told = new Promise((resolve) => (handed = resolve));
          if ((await client.takeOrJoin(key, line, owner, TTL)) !== 1) await told;
          return () => client.handOn(key, line, owner, TTL);
        };
      })(key);
      return {
        workers,
        close() {
          close();
          for (const s of subscribers) s.disconnect();
        },
      };
    },
  },
  {
    name: 'cachelock',
    setup: perConnection((client, key) => async () => {
      const lock = new Lock(key, { cache: client, ttl: TTL, wait: '30s' });
      await lock.acquire();
      return () => lock.release();
    }),
  },
  {
    name: '@sesamecare-oss/redlock (retryDelay 10, jitter 10)',
    setup: perConnection((client, key) => {
      const redlock = new Redlock([client], {
        retryCount: 10_000,
        retryDelay: 10,
        retryJitter: 10,
      });
      return async () => {
        const lock = await redlock.acquire([key], TTL);
        return () => lock.release();
      };
    }),
  },
  {
    name: 'redis-semaphore Mutex (retryInterval 10)',
    setup: perConnection((client, key) => async () => {
      const mutex = new SemaphoreMutex(client, key, { lockTimeout: TTL, acquireTimeout: 30_000 });
      await mutex.acquire();
      return () => mutex.release();
    }),
  },
];

async function contended() {
  const worst = new Map(contenders.map((c) => [c.name, []]));
  const server = new Map(contenders.map((c) => [c.name, []]));
  const admin = connect();
  const rates = await interleaveStats(contenders, ROUNDS, async (contender) => {
    const key = freshKey('contended');
    const { workers, close } = await contender.setup(key);
    const before = await serverCost(admin);
    const cpuBefore = process.cpuUsage();
    let sections = 0;
    let worstWait = 0;
    let inside = 0;
    const stopAt = performance.now() + CONTENDED_MS;
    await Promise.all(
      workers.map(async (withLock) => {
        while (performance.now() < stopAt) {
          const asked = performance.now();
          await withLock(async () => {
            worstWait = Math.max(worstWait, performance.now() - asked);
            if (++inside > 1) throw new Error(`${contender.name}: two holders at once`);
            await sleep(1);
            inside--;
          });
          sections++;
          await sleep(Math.random() * 2);
        }
      }),
    );
    const cpu = process.cpuUsage(cpuBefore);
    server.get(contender.name).push(costSince(before, await serverCost(admin), sections));
    await close();
    worst.get(contender.name).push(worstWait);
    return { value: sections / (CONTENDED_MS / 1000), cpuUs: (cpu.user + cpu.system) / sections };
  });
  admin.disconnect();
  const limit = rates.get(contenders[0].name);
  const pushFloor = rates.get(PUSH_FLOOR);
  console.log(
    '### 4 workers on separate connections, one key, 1 ms hold, 0-2 ms between sections\n',
  );
  console.log(
    table(
      [
        'library',
        'sections/s',
        '% of in-process limit (range)',
        'vs push hand-off floor (range)',
        'CPU us per section (this process)',
        'Redis CPU us / scripts per section',
        'worst wait (ms, median of rounds)',
      ],
      contenders.map((c) => [
        c.name,
        fmt(rates.get(c.name).median, 0),
        percentOf(rates.get(c.name), limit),
        ratio(rates.get(c.name), pushFloor),
        fmt(rates.get(c.name).cpuUs, 0),
        serverColumn(server.get(c.name)),
        fmt(median(worst.get(c.name)), 1),
      ]),
    ),
  );
  console.log(
    '\n(goals: cachelock at least 90% of the limit; worst wait at most 10 hold times. The push hand-off floor is the least a lock pays whose waiters are in other processes: two scripts and a message per contended section, with no fence and no lease on a place in line)\n',
  );
}

/** `49% (40-55%)`: the median of the per-round percentages of `limit`, and their range. */
function percentOf(stats, limit) {
  const p = stats.values.map((value, round) => (value / limit.values[round]) * 100);
  return `${fmt(median(p), 0)}% (${fmt(Math.min(...p), 0)}-${fmt(Math.max(...p), 0)}%)`;
}

const serverColumn = (costs) =>
  `${fmt(median(costs.map((c) => c.cpuUs)), 0)} / ${fmt(median(costs.map((c) => c.scripts)), 2)}`;

// Many waiters on one key, each on its own connection (its own store): what one hand-off costs
// the server as the crowd grows. 1 ms hold, 0-2 ms between sections.
async function waiters() {
  const counts = (process.env.BENCH_WAITERS ?? '4,16,64').split(',').map(Number);
  const admin = connect();
  const rows = [];
  for (const count of counts) {
    const samples = [];
    for (let round = 0; round < Math.max(1, Math.min(ROUNDS, 3)); round++) {
      const key = freshKey('waiters');
      const clients = Array.from({ length: count }, () => connect());
      const locks = clients.map(
        (client) => new Lock(key, { cache: client, ttl: TTL, wait: '60s' }),
      );
      for (const lock of locks) await lock.run(async () => {}); // connected, scripts loaded
      let sections = 0;
      let worstWait = 0;
      const before = await serverCost(admin);
      const cpuBefore = process.cpuUsage();
      const stopAt = performance.now() + CONTENDED_MS;
      await Promise.all(
        locks.map(async (lock) => {
          while (performance.now() < stopAt) {
            const asked = performance.now();
            await lock.acquire();
            worstWait = Math.max(worstWait, performance.now() - asked);
            await sleep(1);
            await lock.release();
            sections++;
            await sleep(Math.random() * 2);
          }
        }),
      );
      const cpu = process.cpuUsage(cpuBefore);
      const cost = costSince(before, await serverCost(admin), sections);
      samples.push({
        rate: sections / (CONTENDED_MS / 1000),
        cpuUs: (cpu.user + cpu.system) / sections,
        serverUs: cost.cpuUs,
        scripts: cost.scripts,
        worstWait,
      });
      for (const c of clients) c.disconnect();
    }
    const m = (f) => median(samples.map(f));
    const scripts = samples.map((s) => s.scripts);
    rows.push([
      count,
      fmt(
        m((s) => s.rate),
        0,
      ),
      `${fmt(median(scripts), 2)} (${fmt(Math.min(...scripts), 2)}-${fmt(Math.max(...scripts), 2)})`,
      fmt(
        m((s) => s.cpuUs),
        0,
      ),
      fmt(
        m((s) => s.serverUs),
        0,
      ),
      fmt(
        m((s) => s.worstWait),
        0,
      ),
    ]);
  }
  admin.disconnect();
  console.log('### cachelock Lock: waiters on one key, one connection each, 1 ms hold\n');
  console.log(
    table(
      [
        'waiters',
        'sections/s',
        'scripts per section (range)',
        'CPU us per section (this process)',
        'Redis CPU us per section',
        'worst wait (ms)',
      ],
      rows,
    ),
  );
  console.log('\n(goals: at most 2.5 scripts per section at any count; Redis CPU flat)\n');
}

// 256 keys in flight on one connection with auto-pipelining.
async function inFlight() {
  const client = connect({ enableAutoPipelining: true });
  const admin = connect();
  const pairs = new Map(libraries.map((lib) => [lib.name, lib.make(client)]));
  const results = await interleaveStats(libraries, ROUNDS, async (lib) => {
    const pair = pairs.get(lib.name);
    const base = freshKey('inflight');
    let done = 0;
    const before = await serverCost(admin);
    const cpuBefore = process.cpuUsage();
    const stopAt = performance.now() + INFLIGHT_MS;
    const started = performance.now();
    await Promise.all(
      Array.from({ length: 256 }, async (_, i) => {
        while (performance.now() < stopAt) {
          await pair(`${base}:${i}`);
          done++;
        }
      }),
    );
    const value = done / ((performance.now() - started) / 1000);
    const cpu = process.cpuUsage(cpuBefore);
    const server = costSince(before, await serverCost(admin), done);
    return { value, cpuUs: (cpu.user + cpu.system) / done, serverUs: server.cpuUs };
  });
  console.log('### 256 keys in flight on one connection (auto-pipelining on)\n');
  console.log(pairTable(results, 'acquire+release pairs/s', 0));
  console.log('\n(goal: cachelock at least 0.9x the floor)\n');
  client.disconnect();
  admin.disconnect();
}

// What keys locked once and never again leave behind once their leases are over (the first
// release left a fence counter per key, about 106 bytes, forever).
async function leftBehind() {
  const client = connect({ enableAutoPipelining: true });
  const KEYS = 100_000;
  const LEASE_MS = 1_000;
  await client.flushall();
  const used = async () => Number(/used_memory:(\d+)/.exec(await client.info('memory'))[1]);
  const before = await used();
  const base = `job:${'x'.repeat(20)}`;
  for (let i = 0; i < KEYS; i += 1_000) {
    await Promise.all(
      Array.from({ length: 1_000 }, async (_, j) => {
        // Every tenth key is held at least its whole lease, so that some expire rather than go.
        const holdAtLeast = j % 10 === 0 ? LEASE_MS : 0;
        const lock = new Lock(`${base}:${i + j}`, { cache: client, ttl: LEASE_MS, holdAtLeast });
        await lock.acquire();
        await lock.release();
      }),
    );
  }
  await sleep(LEASE_MS + 200);
  const after = await used();
  console.log('### Server state left by keys locked once and released, after their leases\n');
  console.log(
    table(
      ['keys', 'keys left per lock', 'used_memory per lock (bytes)'],
      [[KEYS, fmt((await client.dbsize()) / KEYS, 2), fmt(Math.max(0, after - before) / KEYS, 1)]],
    ),
  );
  console.log('');
  client.disconnect();
}

// A key's fence before and after a restart of a server that keeps nothing on disk (the first
// release's counter restarted at 1).
async function fencesAfterRestart() {
  const rows = [];
  let last;
  for (const moment of ['before the restart', 'after the restart']) {
    const own = await startRedis();
    const client = new Redis(own.port, '127.0.0.1');
    client.on('error', () => {});
    const lock = await Lock.acquire('restart', { cache: client, ttl: TTL });
    await lock.release();
    rows.push([moment, String(lock.fence), last === undefined ? '' : String(lock.fence > last)]);
    last = lock.fence;
    client.disconnect();
    await closeAll();
    own.stop();
  }
  console.log('### Fences across a restart with no persistence (a fresh, empty server)\n');
  console.log(table(['moment', 'fence', 'above the one before'], rows));
  console.log('');
}

// Two keys taken together and released, uncontended, one connection: cachelock's one script per
// operation against @sesamecare-oss/redlock's acquire([a, b]) on the same single server.
async function manyKeys() {
  const client = connect();
  const multi = [
    {
      name: 'cachelock Lock([a, b])',
      make: () => async (a, b) => {
        const lock = new Lock([a, b], { cache: client, ttl: TTL });
        await lock.acquire();
        await lock.release();
      },
    },
    {
      // The store's part alone, without the core's lease (timers, signal, events).
      name: 'cachelock store keys (direct)',
      make: () => {
        const many = redisStore(client).capabilities.keys;
        return async (a, b) => {
          const owner = newOwner();
          if ((await many.acquire([a, b], owner, TTL)) === null) throw new Error('held');
          await many.release([a, b], owner);
        };
      },
    },
    {
      name: '@sesamecare-oss/redlock acquire([a, b])',
      make: () => {
        const redlock = new Redlock([client], { retryCount: 0 });
        return async (a, b) => {
          const lock = await redlock.acquire([a, b], TTL);
          await lock.release();
        };
      },
    },
  ];
  const pairs = new Map(multi.map((lib) => [lib.name, lib.make()]));
  const tagged = (name) => {
    const tag = `{${freshKey(name)}}`;
    return [`${tag}:a`, `${tag}:b`];
  };
  for (const [, pair] of pairs) for (let i = 0; i < 200; i++) await pair(...tagged('warm'));
  const results = await interleaveStats(multi, ROUNDS, async (lib) => {
    const pair = pairs.get(lib.name);
    const keys = tagged('many');
    const cpuBefore = process.cpuUsage();
    const value = await perCall(() => pair(...keys), PAIRS);
    const cpu = process.cpuUsage(cpuBefore);
    return { value, cpuUs: (cpu.user + cpu.system) / PAIRS };
  });
  // Commands per pair, as the server saw them (MONITOR).
  const monitorClient = connect();
  const monitor = await monitorClient.monitor();
  let sent = 0;
  let marker;
  monitor.on('monitor', (_time, args, source) => {
    if (String(args[0]).toLowerCase() === 'echo' && args[1] === marker) marker = undefined;
    else if (source !== 'lua') sent++;
  });
  const flush = async () => {
    marker = `flush-${Math.random()}`;
    await client.echo(marker);
    while (marker !== undefined) await sleep(5);
  };
  const commands = new Map();
  for (const lib of multi) {
    const pair = pairs.get(lib.name);
    await flush();
    sent = 0;
    for (let i = 0; i < 100; i++) await pair(...tagged('count'));
    await flush();
    commands.set(lib.name, sent / 100);
  }
  monitor.disconnect();
  monitorClient.disconnect();
  const peer = results.get(multi[2].name);
  console.log('### Two keys, uncontended acquire+release, one connection\n');
  console.log(
    table(
      [
        'library',
        'us per acquire+release',
        'vs redlock (range)',
        'CPU us per pair',
        'commands sent',
      ],
      multi.map((lib) => [
        lib.name,
        fmt(results.get(lib.name).median, 1),
        ratio(results.get(lib.name), peer),
        fmt(results.get(lib.name).cpuUs, 1),
        fmt(commands.get(lib.name), 2),
      ]),
    ),
  );
  console.log('\n(goals: cachelock at most the peer time, 2 commands)\n');
  client.disconnect();
}

// A semaphore of 3 permits, 8 workers each on its own connection, 1 ms hold, 0-2 ms between.
const PERMITS = 3;
const SEM_WORKERS = 8;
/**
 * The core's `Semaphore` where the build has it; else the Redis store's permits driven
 * directly (join the line, wait for a wake-up or 50 ms, try again), said so in the table.
 */
function cachelockSemaphore() {
  if (typeof cachelock.Semaphore === 'function') {
    return {
      name: 'cachelock Semaphore',
      take: (client, key) => {
        const semaphore = new cachelock.Semaphore(key, {
          cache: client,
          permits: PERMITS,
          ttl: TTL,
          wait: '30s',
        });
        return permitTaker(semaphore);
      },
    };
  }
  return {
    name: 'cachelock store permits (direct, no core Semaphore in this build)',
    take: (client, key) => {
      const permits = redisStore(client).capabilities.permits;
      const request = { limit: PERMITS, weight: 1, lineMs: 3_000 };
      return async () => {
        const owner = newOwner();
        for (;;) {
          let wake;
          const woken = new Promise((resolve) => (wake = resolve));
          const stop = permits.onRelease(key, () => wake());
          try {
            if (await permits.acquire(key, owner, TTL, request)) break;
            await Promise.race([woken, sleep(50)]);
          } finally {
            stop();
          }
        }
        return () => permits.release(key, owner);
      };
    },
  };
}

async function semaphore() {
  const ours = cachelockSemaphore();
  const contendersOf = [
    { name: ours.name, take: ours.take },
    {
      name: 'redis-semaphore Semaphore (retryInterval 10)',
      take: (client, key) => async () => {
        const peer = new PeerSemaphore(client, key, PERMITS, {
          lockTimeout: TTL,
          acquireTimeout: 30_000,
        });
        await peer.acquire();
        return () => peer.release();
      },
    },
  ];
  const worst = new Map(contendersOf.map((c) => [c.name, []]));
  const server = new Map(contendersOf.map((c) => [c.name, []]));
  const admin = connect();
  const rates = await interleaveStats(contendersOf, ROUNDS, async (contender) => {
    const key = freshKey('semaphore');
    const clients = Array.from({ length: SEM_WORKERS }, () => connect());
    const acquires = clients.map((client) => contender.take(client, key));
    // Connections up and scripts loaded before the clock starts, for both alike.
    for (const acquire of acquires) await (await acquire())();
    const before = await serverCost(admin);
    const { sections, worstWait, cpuUs } = await semaphoreRound(
      contender.name,
      acquires,
      PERMITS,
      CONTENDED_MS,
    );
    server.get(contender.name).push(costSince(before, await serverCost(admin), sections));
    for (const c of clients) c.disconnect();
    worst.get(contender.name).push(worstWait);
    return { value: sections / (CONTENDED_MS / 1000), cpuUs };
  });
  admin.disconnect();
  const peer = rates.get(contendersOf[1].name);
  console.log(
    `### Semaphore of ${PERMITS} permits, ${SEM_WORKERS} workers on separate connections, 1 ms hold, 0-2 ms between sections\n`,
  );
  console.log(
    table(
      [
        'library',
        'sections/s',
        'vs redis-semaphore (range)',
        'CPU us per section (this process)',
        'Redis CPU us / scripts per section',
        'worst wait (ms, median of rounds)',
      ],
      contendersOf.map((c) => [
        c.name,
        fmt(rates.get(c.name).median, 0),
        ratio(rates.get(c.name), peer),
        fmt(rates.get(c.name).cpuUs, 0),
        serverColumn(server.get(c.name)),
        fmt(median(worst.get(c.name)), 1),
      ]),
    ),
  );
  console.log('\n(goals: cachelock at least 1.5x the peer; worst wait at most 10 hold times)\n');
}

async function serverVersion() {
  const client = connect();
  const info = await client.info('server');
  client.disconnect();
  return /redis_version:(\S+)/.exec(info)?.[1] ?? '?';
}

try {
  console.log(
    `redis-server ${await serverVersion()} (throwaway, port ${server.port}), ${ROUNDS} rounds interleaved, medians\n`,
  );
  const only = process.env.BENCH_ONLY?.split(',');
  const cases = {
    uncontended,
    commandCounts,
    contended,
    waiters,
    inFlight,
    leftBehind,
    fencesAfterRestart,
    manyKeys,
    semaphore,
  };
  for (const [name, measure] of Object.entries(cases))
    if (!only || only.includes(name)) await measure();
} finally {
  await closeAll();
  server.stop();
}
