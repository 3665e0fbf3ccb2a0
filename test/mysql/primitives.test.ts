import { randomBytes } from 'node:crypto';
import { mysqlStore } from 'cachelock/mysql';
import mariadb from 'mariadb';
import mysqlPromise from 'mysql2/promise';
import { afterAll, describe } from 'vitest';
import { serverOrSkip } from '../support/reachable.js';
import { describePrimitives } from '../support/store-primitives.js';

const reachable = await serverOrSkip('MariaDB', 3306);
const settings = { host: '127.0.0.1', port: 3306, user: 'root', database: 'test' };
const table = `cachelock_prim_${randomBytes(4).toString('hex')}`;

describe.runIf(reachable)('mysql store: the primitives over two stores, one per driver', () => {
  const pool = mysqlPromise.createPool({ ...settings, connectionLimit: 4 });
  const mariaPool = mariadb.createPool({ ...settings, connectionLimit: 4 });
  const stores = [
    mysqlStore(pool, { table }),
    mysqlStore(mariaPool, { table, connection: settings }),
  ] as const;

  afterAll(async () => {
    for (const store of stores) await store.close?.();
    await pool.query(`DROP TABLE IF EXISTS \`${table}\``);
    await pool.query(`DROP TABLE IF EXISTS \`${table}_shared\``);
    await pool.end();
    await mariaPool.end();
  });

  describePrimitives(() => [stores[0], stores[1]]);
});
