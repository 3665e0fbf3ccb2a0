// The physical floor under a table-based lock on MySQL/MariaDB: what one round trip, one
// GET_LOCK/RELEASE_LOCK pair and one durable commit (an autocommit UPDATE of one row, flushed
// per commit with innodb_flush_log_at_trx_commit=1) each cost on one connection, on a throwaway
// MariaDB started with default settings and again with --innodb-flush-log-at-trx-commit=2.
// An acquire-release cycle of the lock table needs at least two durable commits.
import mysql from 'mysql2/promise';
import { fmt, perCall } from './lib.mjs';
import { startMariadb } from './servers.mjs';

const N = Number(process.env.BENCH_CALLS ?? 500);

async function measure(args) {
  const server = await startMariadb(args);
  try {
    const c = await mysql.createConnection({ uri: server.url });
    await c.query('CREATE TABLE t (id INT PRIMARY KEY, v BIGINT) ENGINE=InnoDB');
    await c.query('INSERT INTO t VALUES (1, 0)');
    const cases = {
      'SELECT 1 (a round trip)': () => c.query('SELECT 1'),
      'GET_LOCK + RELEASE_LOCK (two round trips)': async () => {
        await c.query("SELECT GET_LOCK('x', 1)");
        await c.query("SELECT RELEASE_LOCK('x')");
      },
      'UPDATE one row, autocommit (one commit)': () =>
        c.query('UPDATE t SET v = v + 1 WHERE id = 1'),
    };
    const out = {};
    for (let round = 0; round < 3; round++) {
      for (const [name, fn] of Object.entries(cases)) {
        const us = await perCall(fn, N);
        (out[name] ??= []).push(us);
      }
    }
    await c.end();
    return out;
  } finally {
    server.stop();
  }
}

for (const args of [[], ['--innodb-flush-log-at-trx-commit=2']]) {
  const out = await measure(args);
  console.log(args.length ? args.join(' ') : 'default settings (flush per commit)');
  for (const [name, values] of Object.entries(out)) {
    const sorted = [...values].sort((a, b) => a - b);
    console.log(
      `  ${name}: ${fmt(sorted[1])} us per call (range ${fmt(sorted[0])}-${fmt(sorted[2])})`,
    );
  }
}
