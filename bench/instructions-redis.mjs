// Instructions per acquire+release in the Node.js process, 256 keys in flight on one ioredis
// connection with auto-pipelining (the in-flight case of redis.mjs): the fenced floor, the Redis
// store called directly, and a new `Lock` per pair. Each case runs in its own process under
// `valgrind --tool=callgrind`, whose counters are zeroed after a warm-up and dumped once the
// measured pairs are done, so start-up and most compilation stay out; garbage collection inside
// the pairs counts. Repeatable to about 2% (wall-clock figures here move by 2x).
//
// `npm run build && node bench/instructions-redis.mjs` (BENCH_PAIRS, default 25600). Needs
// valgrind (callgrind_control) and redis-server on the PATH; a throwaway server is started.
import { execFileSync, spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { withFencedFloor } from './redis-floors.mjs';

const IN_FLIGHT = 256;
const WARM_PER_KEY = 100;
const TTL = 10_000;
const CASES = {
  'fenced floor (TIME + SET NX PX in a script + compare-and-delete)': 'fenced',
  'the Redis store, called directly': 'store',
  'cachelock `Lock`': 'lock',
};

if (process.argv[2] === 'worker') await worker(...process.argv.slice(3));
else await main();

async function worker(variant, port, sync, pairs) {
  const { Redis } = await import('ioredis');
  const { Lock } = await import('cachelock');
  const { redisStore } = await import('cachelock/redis');
  const client = new Redis(Number(port), '127.0.0.1', { enableAutoPipelining: true });
  withFencedFloor(client);
  const store = redisStore(client);
  let n = 0;
  const pair = {
    fenced: async (key) => {
      const token = `t${++n}`;
      const fence = await client.fencedAcquire(key, token, TTL);
      if (fence === null) throw new Error('held');
      BigInt(fence);
      await client.fencedRelease(key, token);
    },
    store: async (key) => {
      const owner = `o${++n}`;
      if ((await store.acquire(key, owner, TTL)) === null) throw new Error('held');
      await store.release(key, owner);
    },
    lock: async (key) => {
      const lock = new Lock(key, { cache: client, ttl: TTL });
      await lock.acquire();
      await lock.release();
    },
  }[variant];
  const inFlight = (name, perKey) =>
    Promise.all(
      Array.from({ length: IN_FLIGHT }, async (_, i) => {
        for (let j = 0; j < perKey; j++) await pair(`bench:${name}:${i}`);
      }),
    );
  await inFlight('warm', WARM_PER_KEY);
  writeFileSync(join(sync, 'ready'), '');
  while (!existsSync(join(sync, 'go'))) await sleep(20);
  await inFlight('measured', Math.ceil(Number(pairs) / IN_FLIGHT));
  writeFileSync(join(sync, 'done'), '');
  while (!existsSync(join(sync, 'exit'))) await sleep(20);
  client.disconnect();
}

async function waitFor(file) {
  while (!existsSync(file)) await sleep(100);
}

async function main() {
  const pairs = Math.ceil(Number(process.env.BENCH_PAIRS ?? 25_600) / IN_FLIGHT) * IN_FLIGHT;
  const { startRedis } = await import('./servers.mjs');
  const { fmt, table } = await import('./lib.mjs');
  const server = await startRedis();
  const rows = [];
  let floor;
  try {
    for (const [name, variant] of Object.entries(CASES)) {
      const dir = mkdtempSync(join(tmpdir(), 'cachelock-callgrind-'));
      const child = spawn(
        'valgrind',
        [
          '-q',
          '--tool=callgrind',
          `--callgrind-out-file=${join(dir, 'out')}`,
          process.execPath,
          '--single-threaded',
          fileURLToPath(import.meta.url),
          ...['worker', variant, String(server.port), dir, String(pairs)],
        ],
        { stdio: ['ignore', 'ignore', 'inherit'] },
      );
      const exited = new Promise((resolve) => child.once('exit', resolve));
      await waitFor(join(dir, 'ready'));
      execFileSync('callgrind_control', ['-z', String(child.pid)], { stdio: 'ignore' });
      writeFileSync(join(dir, 'go'), '');
      await waitFor(join(dir, 'done'));
      execFileSync('callgrind_control', ['-d', String(child.pid)], { stdio: 'ignore' });
      writeFileSync(join(dir, 'exit'), '');
      await exited;
      // The dump callgrind_control asked for is `out.1`; `out` holds what came after it.
      const dump = readdirSync(dir).find((file) => file === 'out.1');
      if (dump === undefined) throw new Error(`no callgrind dump for ${variant}`);
      const totals = /^(?:totals|summary): (\d+)/m.exec(readFileSync(join(dir, dump), 'utf8'));
      rmSync(dir, { recursive: true, force: true });
      const perPair = Number(totals[1]) / pairs;
      floor ??= perPair;
      rows.push([name, fmt(perPair, 0), `${fmt(perPair / floor)}x`]);
    }
  } finally {
    server.stop();
  }
  console.log(
    `### Instructions per acquire+release, ${IN_FLIGHT} keys in flight (callgrind, ${pairs} pairs)\n`,
  );
  console.log(table(['case', 'instructions per pair', 'vs fenced floor'], rows));
}
