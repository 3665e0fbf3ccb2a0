// MySQL/MariaDB: 4 processes contending on one key, cachelock (named-lock wake-ups, and
// polling) against the server's own session locks, GET_LOCK/RELEASE_LOCK on a connection per
// process; then a semaphore of 3 permits with 8 workers, each with a store of its own (as 8
// processes would have), with wake-ups and polling, against the same loop in one process on
// async-mutex. Runs on a throwaway MariaDB (mariadb-install-db + mariadbd on a free port), or on
// BENCH_MYSQL_URL if set; BENCH_MYSQL_ARGS adds server options to the throwaway one, such as
// --innodb-flush-log-at-trx-commit=2 (commits not flushed to disk one by one). Needs the built
// package (npm run build). BENCH_ONLY=contended or BENCH_ONLY=semaphore runs one section;
// BENCH_BASELINE=/path/to/other/dist adds that build's semaphore (with wake-ups) to the same
// interleaved rounds, to compare two versions of the store.
import { createHash } from 'node:crypto';
import { join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { Lock, Semaphore } from 'cachelock';
import { mysqlStore } from 'cachelock/mysql';
import mysql from 'mysql2/promise';
import {
  CONTENDED_MS,
  cachelockWithLock,
  contendedTable,
  isWorker,
  workerMain,
} from './contention.mjs';
import {
  fmt,
  inProcessSemaphore,
  interleaveStats,
  median,
  permitTaker,
  ratio,
  semaphoreRound,
  table,
} from './lib.mjs';
import { startMariadb } from './servers.mjs';

const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 5);
const TTL = 10_000;
const TABLE = 'cachelock_bench';
const NAMED = 'GET_LOCK/RELEASE_LOCK (session, blocking)';
const PUSH = 'cachelock (named-lock wake-ups)';
const contenders = [PUSH, 'cachelock, listen: false (polling)', NAMED];

async function main() {
  const args = (process.env.BENCH_MYSQL_ARGS ?? '').split(/\s+/).filter(Boolean);
  const server = process.env.BENCH_MYSQL_URL ? undefined : await startMariadb(args);
  const url = process.env.BENCH_MYSQL_URL ?? server.url;
  try {
    const connection = await mysql.createConnection({ uri: url });
    const [[{ version }]] = await connection.query('SELECT VERSION() AS version');
    await connection.query(`DROP TABLE IF EXISTS ${TABLE}`);
    await connection.end();
    console.log(
      `${version} (${server ? `throwaway server, ${args.length > 0 ? args.join(' ') : 'default settings'}` : 'BENCH_MYSQL_URL'}), ${ROUNDS} rounds interleaved, medians\n`,
    );
    if (wanted('contended')) await contended(url);
    if (wanted('semaphore')) await semaphore(url);
  } finally {
    server?.stop();
  }
}

const only = process.env.BENCH_ONLY?.split(',');
const wanted = (section) => only === undefined || only.includes(section);

async function contended(url) {
  const { rates } = await contendedTable({
    script: fileURLToPath(import.meta.url),
    contenders,
    rounds: ROUNDS,
    configFor: (library, run) => ({ library, url, key: `contended:${run}` }),
  });
  console.log(
    `cachelock with wake-ups runs at ${fmt(rates.get(PUSH) / rates.get(NAMED))}x the sections/s of ${NAMED}\n`,
  );
}

const PERMITS = 3;
const SEM_WORKERS = 8;
const SEM_LIMIT = `async-mutex Semaphore(${PERMITS}) in one process (the limit)`;

/** This build's mysqlStore, and another build's (BENCH_BASELINE, its dist folder). */
async function builds() {
  const found = [['', mysqlStore]];
  const baseline = process.env.BENCH_BASELINE;
  if (baseline) {
    const other = await import(pathToFileURL(join(baseline, 'mysql', 'index.js')).href);
    found.push([' (baseline build)', other.mysqlStore]);
  }
  return found;
}

// A semaphore of 3 permits, 8 workers each with a store (and a pool of 2) of its own, 1 ms hold,
// 0-2 ms between sections.
async function semaphore(url) {
  let n = 0;
  const stored = (name, makeStore, listen) => ({
    name,
    open: () => {
      const key = `bench:semaphore:${process.pid}:${n++}`;
      const pools = Array.from({ length: SEM_WORKERS }, () =>
        mysql.createPool({ uri: url, connectionLimit: 2 }),
      );
      const stores = pools.map((pool) => makeStore(pool, { table: TABLE, listen }));
      return {
        takers: stores.map((cache) => {
          const semaphore = new Semaphore(key, {
            cache,
            permits: PERMITS,
            ttl: TTL,
            wait: '30s',
          });
          return permitTaker(semaphore);
        }),
        close: async () => {
          await Promise.all(stores.map((store) => store.close()));
          await Promise.all(pools.map((pool) => pool.end()));
        },
      };
    },
  });
  const contenders = [
    {
      name: SEM_LIMIT,
      open: () => inProcessSemaphore(PERMITS, SEM_WORKERS),
    },
  ];
  for (const [suffix, makeStore] of await builds()) {
    contenders.push(stored(`cachelock Semaphore (named-lock wake-ups)${suffix}`, makeStore, true));
  }
  contenders.push(stored('cachelock Semaphore, listen: false (polling)', mysqlStore, false));
  const worst = new Map(contenders.map((c) => [c.name, []]));
  const rates = await interleaveStats(contenders, ROUNDS, async (contender) => {
    const { takers, close } = contender.open();
    // Tables, pools and wake-up sessions set up before the clock starts.
    for (const take of takers) await (await take())();
    const { sections, worstWait, cpuUs } = await semaphoreRound(
      contender.name,
      takers,
      PERMITS,
      CONTENDED_MS,
    );
    await close();
    worst.get(contender.name).push(worstWait);
    return { value: sections / (CONTENDED_MS / 1000), cpuUs };
  });
  const limit = rates.get(SEM_LIMIT);
  console.log(
    `### Semaphore of ${PERMITS} permits, ${SEM_WORKERS} workers each with its own store, 1 ms hold, 0-2 ms between sections\n`,
  );
  console.log(
    table(
      [
        'library',
        'sections/s (range)',
        'vs in-process limit (range)',
        'CPU us per section',
        'worst wait (ms, median of rounds, range)',
      ],
      contenders.map((c) => {
        const r = rates.get(c.name);
        const w = worst.get(c.name);
        return [
          c.name,
          `${fmt(r.median, 0)} (${fmt(r.min, 0)}-${fmt(r.max, 0)})`,
          ratio(r, limit),
          fmt(r.cpuUs, 1),
          `${fmt(median(w), 1)} (${fmt(Math.min(...w), 1)}-${fmt(Math.max(...w), 1)})`,
        ];
      }),
    ),
  );
  console.log(
    `\n(CPU: this process's user + system time per section, all 8 workers and their drivers)\n`,
  );
  const push = rates.get(contenders[1].name);
  for (const other of contenders.slice(2)) {
    console.log(
      `${contenders[1].name} vs ${other.name}: sections/s ${ratio(push, rates.get(other.name))} (median of per-round ratios, range)`,
    );
  }
  console.log('');
}

async function makeLock({ library, url, key }) {
  if (library.startsWith('cachelock')) {
    const pool = mysql.createPool({ uri: url, connectionLimit: 2 });
    const store = mysqlStore(pool, { table: TABLE, listen: !library.includes('listen: false') });
    await store.inspect(key);
    return {
      withLock: cachelockWithLock(Lock, key, { cache: store, ttl: TTL }),
      close: async () => {
        await store.close();
        await pool.end();
      },
    };
  }
  const connection = await mysql.createConnection({ uri: url });
  const name = `bench:${createHash('sha256').update(key).digest('hex').slice(0, 32)}`;
  return {
    withLock: async (fn) => {
      await connection.query('SELECT GET_LOCK(?, 30)', [name]);
      try {
        await fn();
      } finally {
        await connection.query('SELECT RELEASE_LOCK(?)', [name]);
      }
    },
    close: () => connection.end(),
  };
}

// Last, so that every constant above is initialised before a top-level await runs.
if (isWorker()) await workerMain(makeLock);
else await main();
