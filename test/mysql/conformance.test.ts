import { randomBytes } from 'node:crypto';
import type { LockStore } from 'cachelock';
import { mysqlStore, storeFromUrl } from 'cachelock/mysql';
import { runConformance } from 'cachelock/testing';
import mariadb from 'mariadb';
import mysql from 'mysql2';
import mysqlPromise from 'mysql2/promise';
import { afterAll, describe, it } from 'vitest';
import { serverOrSkip } from '../support/reachable.js';

// The shared server: a table unique to this run, dropped at the end.
const reachable = await serverOrSkip('MariaDB', 3306);
const settings = { host: '127.0.0.1', port: 3306, user: 'root', database: 'test' };
const url = 'mysql://root@127.0.0.1:3306/test';
const table = `cachelock_conformance_${randomBytes(4).toString('hex')}`;

describe.runIf(reachable)('mysql store on the shared server', () => {
  const promisePool = mysqlPromise.createPool({ ...settings, connectionLimit: 10 });
  const callbackPool = mysql.createPool({ ...settings, connectionLimit: 4 });
  const mariaPool = mariadb.createPool({ ...settings, connectionLimit: 10 });
  // A store on a single connection ends it as the case closes the store: kept to the end, the
  // connections of every case (and peer) added up to most of the server's 151.
  const connectionOf = new Map<LockStore, { end(): Promise<void> | void }>();
  const closeWithConnection = async (store: LockStore) => {
    await store.close?.();
    const connection = connectionOf.get(store);
    connectionOf.delete(store);
    await connection?.end();
  };

  afterAll(async () => {
    await promisePool.query(`DROP TABLE IF EXISTS \`${table}\`, \`${table}_shared\``);
    await promisePool.end();
    await new Promise((resolve) => callbackPool.end(resolve));
    await mariaPool.end();
    for (const connection of connectionOf.values()) await connection.end();
  });

  runConformance({
    name: 'on a mysql2 promise Pool',
    describe,
    it,
    makeStore: () => mysqlStore(promisePool, { table }),
  });
  runConformance({
    name: 'on a mysql2 callback Pool',
    describe,
    it,
    makeStore: () => mysqlStore(callbackPool, { table }),
  });
  runConformance({
    name: 'on a single mysql2 Connection',
    describe,
    it,
    makeStore: async () => {
      const connection = await mysqlPromise.createConnection(settings);
      const store = mysqlStore(connection, { table });
      connectionOf.set(store, connection);
      return store;
    },
    closeStore: closeWithConnection,
  });
  runConformance({
    name: 'on a mariadb Pool',
    describe,
    it,
    makeStore: () => mysqlStore(mariaPool, { table, connection: settings }),
  });
  runConformance({
    name: 'on a single mariadb Connection',
    describe,
    it,
    makeStore: async () => {
      const connection = await mariadb.createConnection(settings);
      const store = mysqlStore(connection, { table, connection: settings });
      connectionOf.set(store, connection);
      return store;
    },
    closeStore: closeWithConnection,
  });
  runConformance({
    name: 'on a mysql:// URL (the store owns its mysql2 pool)',
    describe,
    it,
    makeStore: () => storeFromUrl(new URL(`${url}?table=${table}`)),
  });
  runConformance({
    name: 'on a mariadb:// URL (the store owns its mariadb pool)',
    describe,
    it,
    makeStore: () => storeFromUrl(new URL(`mariadb://root@127.0.0.1:3306/test?table=${table}`)),
  });
  runConformance({
    name: 'on a mysql2 Pool, without wake-ups (polling)',
    describe,
    it,
    makeStore: () => mysqlStore(promisePool, { table, listen: false }),
  });
});
