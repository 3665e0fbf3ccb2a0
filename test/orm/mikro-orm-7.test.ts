import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import Database from 'better-sqlite3';
import { closeAll, Lock, resolveStore } from 'cachelock';
import mysql from 'mysql2/promise';
import pg from 'pg';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { keyId, lockName, tableName } from '../../src/mysql/names.js';
import { waitsOffThePool } from '../support/pooled-wait.js';
import { fixtureOrSkip, serverOrSkip } from '../support/reachable.js';

// MikroORM 7's drivers pin @mikro-orm/core exactly, so it lives in a package of its own beside
// the root's MikroORM 6, installed by .ci/run; it is imported from there by path.
const fixture = fileURLToPath(new URL('./fixtures/mikro7/', import.meta.url));
const installed = fixtureOrSkip('MikroORM 7', fixture);
const mariadb = await serverOrSkip('MariaDB', 3306);
const postgres = await serverOrSkip('PostgreSQL', 5432);
const fromFixture = createRequire(join(fixture, 'package.json'));
const load = async (name: string) => import(pathToFileURL(fromFixture.resolve(name)).href);

const MYSQL_URL = 'mysql://root@127.0.0.1:3306/test';
const PG_URL = 'postgres://postgres@127.0.0.1:5432/test';
const run = randomBytes(4).toString('hex');
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** The part of MikroORM 7 these tests touch. */
interface Connection7 {
  getNativeClient(): Promise<any>;
  execute(sql: string, params?: unknown[], method?: 'all', ctx?: unknown): Promise<unknown[]>;
}
interface EntityManager7 {
  fork(): EntityManager7;
  getConnection(type?: 'read' | 'write'): Connection7;
  transactional<T>(work: (em: EntityManager7) => Promise<T>): Promise<T>;
}
interface MikroORM7 {
  em: EntityManager7;
  driver: object;
  close(): Promise<void>;
}
type Init = (options: object) => Promise<MikroORM7>;

const ormOptions = (clientUrl: string, more: object = {}) => ({
  clientUrl,
  entities: [],
  discovery: { warnWhenNoEntities: false },
  pool: { min: 0, max: 2 },
  ...more,
});

/** mysql2's pool, as far as these tests look into it. */
interface Mysql2Pool {
  _allConnections: { length: number; get(i: number): { threadId: number } };
  _freeConnections: { length: number };
  on(event: 'acquire', listener: () => void): void;
  query(sql: string, callback: (error: Error | null, rows: unknown) => void): void;
}
const inUse = (pool: Mysql2Pool) => pool._allConnections.length - pool._freeConnections.length;
const threadIds = (pool: Mysql2Pool) =>
  Array.from(
    { length: pool._allConnections.length },
    (_, i) => pool._allConnections.get(i).threadId,
  );

// Both run on mysql2 in MikroORM 7.
const drivers = ['@mikro-orm/mysql', '@mikro-orm/mariadb'];

describe.runIf(installed && mariadb)('MikroORM 7 as the cache, on MariaDB', () => {
  const ending: MikroORM7[] = [];
  const admin = mysql.createPool({ host: '127.0.0.1', user: 'root', database: 'test' });

  afterEach(() => closeAll());
  afterAll(async () => {
    for (const orm of ending) await orm.close();
    await admin.end();
  });

  /** The connection that holds the store's named lock for `key`, if any. */
  async function namedLockHolder(key: string): Promise<number | null> {
    const name = lockName(tableName('cachelock_locks', undefined), keyId(`cachelock:${key}`));
    const [rows] = await admin.query('SELECT IS_USED_LOCK(?) AS holder', [name]);
    const holder = (rows as { holder: number | null }[])[0]?.holder;
    return holder === null || holder === undefined ? null : Number(holder);
  }

  for (const driver of drivers) {
    const init: () => Promise<MikroORM7> = async () => {
      const { MikroORM } = (await load(driver)) as { MikroORM: { init: Init } };
      const orm = await MikroORM.init(ormOptions(MYSQL_URL));
      ending.push(orm);
      return orm;
    };

    it(`${driver}: the MikroORM, its em, a fork, its driver and its connection share one store on the pool they hold`, async () => {
      const orm = await init();
      const store = await resolveStore({ cache: orm });
      expect(store.kind).toBe('mysql');
      const fork = orm.em.fork();
      for (const cache of [orm.em, fork, fork.fork(), orm.driver, fork.getConnection()]) {
        expect(await resolveStore({ cache })).toBe(store);
      }
      // The pool they hold, passed itself, is the same store; and so the other way round.
      const pool = await orm.em.getConnection().getNativeClient();
      expect(await resolveStore({ cache: pool })).toBe(store);
      const other = await init();
      const otherPool = await other.em.getConnection().getNativeClient();
      const byPool = await resolveStore({ cache: otherPool });
      expect(byPool).not.toBe(store);
      expect(await resolveStore({ cache: other.em.fork() })).toBe(byPool);
    });

    it(`${driver}: locks through the app's pool and wakes a waiter on a connection of its own`, async () => {
      const [a, b] = [await init(), await init()];
      const poolA: Mysql2Pool = await a.em.getConnection().getNativeClient();
      const poolB: Mysql2Pool = await b.em.getConnection().getNativeClient();
      let borrowed = 0;
      poolA.on('acquire', () => borrowed++);
      const key = `orm7-${run}-${driver.replace(/\W+/g, '-')}`;

      const holder = new Lock(key, { cache: a.em.fork(), ttl: '20s', autoExtend: false });
      await holder.acquire();
      expect(holder.fence).toBeTypeOf('bigint');
      // The lock's statements ran on the app's pool, which has them all back.
      expect(borrowed).toBeGreaterThan(0);
      expect(await new Lock(key, { cache: b.em.fork() }).tryAcquire()).toBe(false);
      // The named lock that wakes waiters when the holder goes is on a connection of the
      // store's own, none of the app's pool.
      let named: number | null = null;
      for (let i = 0; i < 50 && (named = await namedLockHolder(key)) === null; i++) await sleep(20);
      expect(named).not.toBeNull();
      expect(threadIds(poolA)).not.toContain(named);
      expect(threadIds(poolB)).not.toContain(named);
      for (let i = 0; i < 50 && inUse(poolA) > 0; i++) await sleep(20);
      expect(inUse(poolA)).toBe(0);

      const waiter = new Lock(key, { cache: b.em, wait: '15s' });
      await waitsOffThePool(holder, waiter, () => inUse(poolB));
      for (let i = 0; i < 50 && (inUse(poolA) > 0 || inUse(poolB) > 0); i++) await sleep(20);
      expect(inUse(poolA)).toBe(0);
      expect(inUse(poolB)).toBe(0);
    });

    it(`${driver}: closing the store leaves the app's pool and ORM working`, async () => {
      const orm = await init();
      const fork = orm.em.fork();
      const lock = new Lock(`orm7-close-${run}-${driver.replace(/\W+/g, '-')}`, { cache: fork });
      await lock.acquire();
      expect(await lock.release()).toBe(true);
      await closeAll();
      const pool = (await fork.getConnection().getNativeClient()) as Mysql2Pool;
      const rows = await new Promise((resolve, reject) =>
        pool.query('SELECT 1 AS one', (error, result) => (error ? reject(error) : resolve(result))),
      );
      expect(rows).toEqual([{ one: 1 }]);
      expect(await fork.getConnection().execute('SELECT 2 AS two')).toEqual([{ two: 2 }]);
      // And a lock made after closeAll opens a fresh store on the same pool.
      const after = new Lock(`orm7-close-${run}-${driver.replace(/\W+/g, '-')}`, { cache: fork });
      await after.acquire();
      expect(await after.release()).toBe(true);
    });
  }

  it('closeAll while an ORM is handing over its pool: the pool passed afterwards gets a fresh store', async () => {
    const { MikroORM } = (await load('@mikro-orm/mysql')) as { MikroORM: { init: Init } };
    const orm = await MikroORM.init(ormOptions(MYSQL_URL));
    ending.push(orm);
    const opening = resolveStore({ cache: orm.em.fork() });
    await closeAll();
    const closed = await opening;
    const pool = await orm.em.getConnection().getNativeClient();
    const fresh = await resolveStore({ cache: pool });
    expect(fresh).not.toBe(closed);
    const lock = new Lock(`orm7-reopen-${run}`, { cache: pool });
    await lock.acquire();
    expect(await lock.release()).toBe(true);
  });

  it('a MikroORM 7 on a Kysely given as driverOptions is refused, saying what to pass', async () => {
    const { MikroORM } = (await load('@mikro-orm/mysql')) as { MikroORM: { init: Init } };
    const { Kysely, MysqlDialect } = await load('kysely');
    const { createPool } = await load('mysql2');
    const pool = createPool({ host: '127.0.0.1', user: 'root', database: 'test' });
    const kysely = new Kysely({ dialect: new MysqlDialect({ pool }) });
    const orm = await MikroORM.init(ormOptions(MYSQL_URL, { driverOptions: kysely }));
    try {
      expect(() => new Lock('k', { cache: orm.em.fork() })).toThrow(
        /^cache: this MikroORM runs on a Kysely instance or dialect given as driverOptions, .*pass the pg Pool or mysql2 pool you gave that dialect/,
      );
    } finally {
      await orm.close();
    }
  });
});

describe.runIf(installed && postgres)('MikroORM 7 as the cache, on PostgreSQL', () => {
  const admin = new pg.Pool({ connectionString: PG_URL, max: 1 });
  const ending: MikroORM7[] = [];

  afterAll(async () => {
    await closeAll();
    for (const orm of ending) await orm.close();
    await admin.end();
  });

  async function listeners(name: string): Promise<number> {
    const { rows } = await admin.query(
      "SELECT count(*)::int AS n FROM pg_stat_activity WHERE application_name = $1 AND query LIKE 'LISTEN %'",
      [name],
    );
    return rows[0].n;
  }

  it("@mikro-orm/postgresql: locks through the app's pg Pool and waits on a LISTEN of its own", async () => {
    const { MikroORM } = (await load('@mikro-orm/postgresql')) as { MikroORM: { init: Init } };
    const make = async (name: string) => {
      const orm = await MikroORM.init(
        ormOptions(PG_URL, { driverOptions: { application_name: name } }),
      );
      ending.push(orm);
      return { orm, pool: (await orm.em.getConnection().getNativeClient()) as pg.Pool };
    };
    const nameB = `cl7-${run}-b`;
    const [a, b] = [await make(`cl7-${run}-a`), await make(nameB)];
    const busy = (pool: pg.Pool) => pool.totalCount - pool.idleCount;

    const store = await resolveStore({ cache: a.orm.em.fork() });
    expect(store.kind).toBe('postgres');
    expect(await resolveStore({ cache: a.pool })).toBe(store);

    const key = `orm7-${run}-pg`;
    const holder = new Lock(key, { cache: a.orm.em.fork(), ttl: '20s', autoExtend: false });
    await holder.acquire();
    expect(a.pool.totalCount).toBeGreaterThan(0);
    const waiter = new Lock(key, { cache: b.orm.em.fork(), wait: '15s' });
    await waitsOffThePool(
      holder,
      waiter,
      () => busy(b.pool),
      async () => {
        for (let i = 0; i < 100 && (await listeners(nameB)) === 0; i++) await sleep(50);
        expect(await listeners(nameB)).toBe(1);
      },
    );
    await closeAll();
    const { rows } = await b.pool.query('SELECT 1 AS one');
    expect(rows).toEqual([{ one: 1 }]);
  });
});

describe.runIf(installed)('MikroORM 7 on SQLite', () => {
  const dir = mkdtempSync(join(tmpdir(), 'cachelock-mikro-orm-7-'));
  const file = join(dir, 'app.db');
  // The fixture's better-sqlite3 is the root's version, not compiled: it loads the root's addon.
  const root = dirname(createRequire(import.meta.url).resolve('better-sqlite3/package.json'));
  const nativeBinding = join(root, 'build/Release/better_sqlite3.node');
  const ending: MikroORM7[] = [];

  afterAll(async () => {
    await closeAll();
    for (const orm of ending) await orm.close();
    rmSync(dir, { recursive: true, force: true });
  });

  async function init(): Promise<MikroORM7> {
    const versions = [root, join(fixture, 'node_modules/better-sqlite3')].map(
      (at) => fromFixture(join(at, 'package.json')).version,
    );
    expect(versions[1], 'the fixture overrides better-sqlite3 to the root version').toBe(
      versions[0],
    );
    const { MikroORM } = (await load('@mikro-orm/sqlite')) as { MikroORM: { init: Init } };
    const orm = await MikroORM.init({
      ...ormOptions(''),
      dbName: file,
      driverOptions: { nativeBinding },
    });
    ending.push(orm);
    return orm;
  }

  /** Release `lock` inside a transaction of `orm` that then rolls back. */
  async function releaseInRolledBack(orm: MikroORM7, lock: Lock): Promise<void> {
    const rollback = new Error('rollback');
    await expect(
      orm.em.fork().transactional(async (em) => {
        const native = (await em.getConnection().getNativeClient()) as { inTransaction: boolean };
        expect(native.inTransaction).toBe(true);
        expect(await lock.release()).toBe(true);
        throw rollback;
      }),
    ).rejects.toBe(rollback);
  }

  it('locks on a connection of its own to the same file: a release inside a transaction the ORM rolls back stays released', async () => {
    const orm = await init();
    const key = `orm7-sqlite-own-${run}`;
    const lock = new Lock(key, { cache: orm.em.fork(), ttl: '20s', autoExtend: false });
    await lock.acquire();
    await releaseInRolledBack(orm, lock);
    const other = new Database(file);
    try {
      expect(await new Lock(key, { cache: other }).tryAcquire()).toBe(true);
    } finally {
      other.close();
    }
    expect(await orm.em.getConnection().execute('SELECT 1 AS one')).toEqual([{ one: 1 }]);
  });

  it('the file passed instead: a release inside a transaction the ORM rolls back stays released', async () => {
    const orm = await init();
    const key = `orm7-sqlite-url-${run}`;
    // Through the app's library: two copies of SQLite in one process miss each other's locks.
    const url = `sqlite:${file}?driver=better-sqlite3`;
    const lock = new Lock(key, { cache: url, ttl: '20s', autoExtend: false });
    await lock.acquire();
    await releaseInRolledBack(orm, lock);
    // Another store on the file (a Database of its own) finds the key free.
    const other = new Database(file);
    try {
      expect(await new Lock(key, { cache: other }).tryAcquire()).toBe(true);
    } finally {
      await closeAll();
      other.close();
    }
  });
});
