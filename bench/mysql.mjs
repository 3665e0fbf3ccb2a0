// MySQL/MariaDB: 4 processes contending on one key, cachelock (named-lock wake-ups, and
// polling) against the server's own session locks, GET_LOCK/RELEASE_LOCK on a connection per
// process. Runs on a throwaway MariaDB (mariadb-install-db + mariadbd on a free port), or on
// BENCH_MYSQL_URL if set; BENCH_MYSQL_ARGS adds server options to the throwaway one, such as
// --innodb-flush-log-at-trx-commit=2 (commits not flushed to disk one by one). Needs the built
// package (npm run build).
import { createHash } from 'node:crypto';
import { fileURLToPath } from 'node:url';
import { Lock } from 'cachelock';
import { mysqlStore } from 'cachelock/mysql';
import mysql from 'mysql2/promise';
import { cachelockWithLock, contendedTable, isWorker, workerMain } from './contention.mjs';
import { fmt } from './lib.mjs';
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
    const { rates } = await contendedTable({
      script: fileURLToPath(import.meta.url),
      contenders,
      rounds: ROUNDS,
      configFor: (library, run) => ({ library, url, key: `contended:${run}` }),
    });
    console.log(
      `cachelock with wake-ups runs at ${fmt(rates.get(PUSH) / rates.get(NAMED))}x the sections/s of ${NAMED}\n`,
    );
  } finally {
    server?.stop();
  }
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
