import 'reflect-metadata';
import { randomBytes } from 'node:crypto';
import { MikroORM as MariaDbMikroORM } from '@mikro-orm/mariadb';
import { MikroORM as MySqlMikroORM } from '@mikro-orm/mysql';
import { closeAll, Lock } from 'cachelock';
import { drizzle } from 'drizzle-orm/mysql2';
import knex from 'knex';
import mysql from 'mysql2/promise';
import { Sequelize } from 'sequelize';
import { DataSource } from 'typeorm';
import { afterAll, describe, expect, it } from 'vitest';
import { keyId, lockName, tableName } from '../../src/mysql/names.js';
import { waitsOffThePool } from '../support/pooled-wait.js';
import { serverOrSkip } from '../support/reachable.js';

const settings = { host: '127.0.0.1', port: 3306, user: 'root', database: 'test' };
const URL_ = 'mysql://root@127.0.0.1:3306/test';
const reachable = await serverOrSkip('MariaDB', 3306);
const run = randomBytes(4).toString('hex');
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

interface App {
  cache: object;
  /** Connections of the app's pool checked out now. */
  inUse(): number;
  end(): Promise<void>;
}

type Mysql2Pool = { _allConnections: { length: number }; _freeConnections: { length: number } };
const mysql2InUse = (pool: Mysql2Pool) => () =>
  pool._allConnections.length - pool._freeConnections.length;

type KnexPool = { numUsed(): number };

const mikroOrmOptions = {
  clientUrl: URL_,
  entities: [],
  discovery: { warnWhenNoEntities: false },
  pool: { min: 0, max: 2 },
};

/** MikroORM 6 on its knex: the app's EntityManager (a fork) as the cache. */
function mikroOrmApp(orm: {
  em: { fork(): object; getConnection(): object };
  close(): Promise<void>;
}): App {
  const connection = orm.em.getConnection() as { getKnex(): { client: { pool: KnexPool } } };
  const pool = connection.getKnex().client.pool;
  return { cache: orm.em.fork(), inUse: () => pool.numUsed(), end: () => orm.close() };
}

function sequelizeApp(sequelize: Sequelize): App {
  const pool = (sequelize.connectionManager as unknown as { pool: { using: number } }).pool;
  return { cache: sequelize, inUse: () => pool.using, end: () => sequelize.close() };
}

const apps: Record<string, () => Promise<App>> = {
  'knex (mysql2)': async () => {
    const db = knex({ client: 'mysql2', connection: settings, pool: { min: 0, max: 2 } });
    return { cache: db, inUse: () => db.client.pool.numUsed(), end: () => db.destroy() };
  },
  'Drizzle (mysql2)': async () => {
    const pool = mysql.createPool({ ...settings, connectionLimit: 2 });
    const core = (pool as unknown as { pool: Mysql2Pool }).pool;
    return { cache: drizzle(pool), inUse: mysql2InUse(core), end: () => pool.end() };
  },
  'TypeORM DataSource (mysql)': async () => {
    const source = new DataSource({ type: 'mysql', url: URL_, poolSize: 2 });
    await source.initialize();
    const pool = (source.driver as unknown as { pool: Mysql2Pool }).pool;
    return { cache: source, inUse: mysql2InUse(pool), end: () => source.destroy() };
  },
  'TypeORM DataSource (mariadb)': async () => {
    const source = new DataSource({ type: 'mariadb', url: URL_, poolSize: 2 });
    await source.initialize();
    const pool = (source.driver as unknown as { pool: Mysql2Pool }).pool;
    return { cache: source, inUse: mysql2InUse(pool), end: () => source.destroy() };
  },
  'Sequelize (mysql)': async () =>
    sequelizeApp(new Sequelize(URL_, { logging: false, pool: { min: 0, max: 2 } })),
  'Sequelize (mariadb)': async () =>
    sequelizeApp(
      new Sequelize(URL_.replace('mysql:', 'mariadb:'), {
        dialect: 'mariadb',
        logging: false,
        pool: { min: 0, max: 2 },
      }),
    ),
  'MikroORM (@mikro-orm/mysql, mysql2)': async () =>
    mikroOrmApp(await MySqlMikroORM.init(mikroOrmOptions)),
  'MikroORM (@mikro-orm/mariadb, mariadb)': async () =>
    mikroOrmApp(await MariaDbMikroORM.init(mikroOrmOptions)),
};

describe.runIf(reachable)('an ORM as the cache, on MariaDB', () => {
  const ending: App[] = [];
  const admin = mysql.createPool({ ...settings, connectionLimit: 1 });

  afterAll(async () => {
    await closeAll();
    for (const app of ending) await app.end();
    await admin.end();
  });

  /** The connection that holds the store's named lock for `key`, if any. */
  async function namedLockHolder(key: string): Promise<number | null> {
    const name = lockName(tableName('cachelock_locks', undefined), keyId(`cachelock:${key}`));
    const [rows] = await admin.query('SELECT IS_USED_LOCK(?) AS holder', [name]);
    const holder = (rows as { holder: number | null }[])[0]?.holder;
    return holder === null || holder === undefined ? null : Number(holder);
  }

  for (const [orm, make] of Object.entries(apps)) {
    it(`${orm}: locks through the app's pool and waits on a connection of its own`, async () => {
      const a = await make();
      ending.push(a);
      const b = await make();
      ending.push(b);
      const key = `orm-${run}-${orm.replace(/\W+/g, '-')}`;

      const holder = new Lock(key, { cache: a.cache, ttl: '20s', autoExtend: false });
      await holder.acquire();
      expect(holder.fence).toBeTypeOf('bigint');
      expect(await new Lock(key, { cache: b.cache }).tryAcquire()).toBe(false);
      // The holder's named lock, which wakes waiters when it goes, lives on a connection of the
      // store's own: the app's pool has none checked out.
      for (let i = 0; i < 50 && (await namedLockHolder(key)) === null; i++) await sleep(20);
      expect(await namedLockHolder(key)).not.toBeNull();
      for (let i = 0; i < 50 && a.inUse() > 0; i++) await sleep(20);
      expect(a.inUse()).toBe(0);

      const waiter = new Lock(key, { cache: b.cache, wait: '15s' });
      await waitsOffThePool(holder, waiter, b.inUse);
      for (let i = 0; i < 50 && (a.inUse() > 0 || b.inUse() > 0); i++) await sleep(20);
      expect(a.inUse()).toBe(0);
      expect(b.inUse()).toBe(0);
    });
  }
});
