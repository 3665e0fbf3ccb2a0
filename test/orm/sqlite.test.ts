import 'reflect-metadata';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { MikroORM } from '@mikro-orm/better-sqlite';
import Database from 'better-sqlite3';
import { closeAll, Lock } from 'cachelock';
import { drizzle } from 'drizzle-orm/better-sqlite3';
import knex, { type Knex } from 'knex';
import { DataSource } from 'typeorm';
import { afterAll, describe, expect, it } from 'vitest';

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
const dir = mkdtempSync(join(tmpdir(), 'cachelock-orm-'));

interface App {
  cache: object;
  /** The connection the app itself uses, to look into the file through it. */
  database(): Database.Database;
  /** Connections of the app's pool checked out now (0 where it has no pool). */
  inUse(): number;
  /** cachelock opens the file on a connection of its own (the ORM's transactions span awaits). */
  ownConnection?: boolean;
  end(): Promise<void>;
}

type MakeApp = (file: string) => Promise<App>;

function knexApp(db: Knex): Pick<App, 'database' | 'inUse'> {
  const pool = db.client.pool;
  return {
    // better-sqlite3 in knex: a pool of one connection, kept open.
    database: () => pool.free[0]?.resource ?? pool.used[0]?.resource,
    inUse: () => pool.numUsed(),
  };
}

const apps: Record<string, MakeApp> = {
  knex: async (file) => {
    const db = knex({ client: 'better-sqlite3', connection: { filename: file } });
    await db.raw('SELECT 1');
    return { cache: db, ...knexApp(db), end: () => db.destroy() };
  },
  'Drizzle (better-sqlite3)': async (file) => {
    const sqlite = new Database(file);
    return {
      cache: drizzle(sqlite),
      database: () => sqlite,
      inUse: () => 0,
      end: async () => void sqlite.close(),
    };
  },
  'TypeORM DataSource': async (file) => {
    const source = new DataSource({ type: 'better-sqlite3', database: file });
    await source.initialize();
    const sqlite = (source.driver as unknown as { databaseConnection: Database.Database })
      .databaseConnection;
    return {
      cache: source,
      database: () => sqlite,
      inUse: () => 0,
      ownConnection: true,
      end: () => source.destroy(),
    };
  },
  MikroORM: async (file) => {
    const orm = await MikroORM.init({
      dbName: file,
      entities: [],
      discovery: { warnWhenNoEntities: false },
    });
    const db = orm.em.getConnection().getKnex();
    await db.raw('SELECT 1');
    return { cache: orm, ...knexApp(db as unknown as Knex), end: () => orm.close() };
  },
};

describe('an ORM as the cache, on SQLite (better-sqlite3)', () => {
  const ending: App[] = [];

  afterAll(async () => {
    await closeAll();
    for (const app of ending) await app.end();
    rmSync(dir, { recursive: true, force: true });
  });

  for (const [orm, make] of Object.entries(apps)) {
    it(`${orm}: locks on the app's connection, across two instances of the app`, async () => {
      const file = join(dir, `${orm.replace(/\W+/g, '-')}.db`);
      const a = await make(file);
      ending.push(a);
      const b = await make(file);
      ending.push(b);

      const holder = new Lock('report', { cache: a.cache, ttl: '20s', autoExtend: false });
      await holder.acquire();
      expect(holder.fence).toBeTypeOf('bigint');
      // The lease is in the file, written through the app's own connection.
      const row = a
        .database()
        .prepare('SELECT owner FROM cachelock_locks WHERE key = ?')
        .get('cachelock:report') as { owner: string } | undefined;
      expect(row?.owner).toBeTypeOf('string');
      // No connection of cachelock's own (one would have switched the file to WAL), except
      // where the ORM keeps transactions open on its one connection, which a lock would join.
      expect(a.database().pragma('journal_mode', { simple: true })).toBe(
        a.ownConnection ? 'wal' : 'delete',
      );
      expect(a.inUse()).toBe(0);
      expect(await new Lock('report', { cache: b.cache }).tryAcquire()).toBe(false);

      const waiter = new Lock('report', { cache: b.cache, wait: '10s' });
      const waiting = waiter.acquire();
      let held = 0;
      for (let i = 0; i < 20; i++) {
        held += b.inUse();
        await sleep(10);
      }
      // A poll borrows the connection for a moment; waiting holds none.
      expect(held).toBeLessThanOrEqual(2);
      expect(await holder.release()).toBe(true);
      await waiting;
      expect(waiter.fence! > holder.fence!).toBe(true);
      expect(await waiter.release()).toBe(true);
      expect(b.inUse()).toBe(0);
    });
  }

  it('TypeORM: a transaction the app rolls back takes neither a grant nor a release with it', async () => {
    const file = join(dir, 'typeorm-trx.db');
    const source = new DataSource({ type: 'better-sqlite3', database: file });
    await source.initialize();
    ending.push({
      cache: source,
      database: () => null as never,
      inUse: () => 0,
      end: () => source.destroy(),
    });
    const rollback = new Error('roll back');
    const granted = new Lock('granted-in-trx', { cache: source, ttl: '20s', autoExtend: false });
    const released = new Lock('released-in-trx', { cache: source, ttl: '20s', autoExtend: false });
    await released.acquire();
    await expect(
      source.transaction(async (manager) => {
        await manager.query('SELECT 1');
        // TypeORM keeps this transaction open on its one Database across these awaits.
        await granted.acquire();
        expect(await released.release()).toBe(true);
        throw rollback;
      }),
    ).rejects.toBe(rollback);
    // Both outcomes stand: the lock's statements never joined the app's transaction.
    const other = new Database(file);
    try {
      expect(await new Lock('granted-in-trx', { cache: other }).tryAcquire()).toBe(false);
      expect(await new Lock('released-in-trx', { cache: other }).tryAcquire()).toBe(true);
    } finally {
      other.close();
    }
    expect(await granted.release()).toBe(true);
  });

  it('TypeORM on an in-memory database is refused, naming what to pass', async () => {
    const source = new DataSource({ type: 'better-sqlite3', database: ':memory:' });
    await source.initialize();
    try {
      await expect(new Lock('in-memory', { cache: source }).acquire()).rejects.toThrow(
        /^cache: TypeORM DataSource runs on an in-memory SQLite database, which no other connection can open; give it a file, or pass 'memory:'/,
      );
    } finally {
      await source.destroy();
    }
  });

  it('knex: a lock waits for a transaction on the only connection instead of joining it', async () => {
    const db = knex({ client: 'better-sqlite3', connection: { filename: join(dir, 'trx.db') } });
    ending.push({ cache: db, ...knexApp(db), end: () => db.destroy() });
    await db.schema.createTable('things', (table) => table.integer('n'));
    let acquired = false;
    let locking: Promise<Lock> | undefined;
    await db
      .transaction(async (trx) => {
        await trx('things').insert({ n: 1 });
        locking = new Lock('in-trx', { cache: db }).acquire().then((lock) => {
          acquired = true;
          return lock;
        });
        await sleep(100);
        // knex lends its one connection to the transaction; the lock waits its turn.
        expect(acquired).toBe(false);
        throw new Error('roll back');
      })
      .catch(() => undefined);
    const lock = await locking!;
    expect(acquired).toBe(true);
    // The rollback took the insert, not the lock: it was never part of the transaction.
    expect(await db('things').count({ n: '*' })).toEqual([{ n: 0 }]);
    expect((await Lock.inspect('in-trx', { cache: db }))?.owner).toBeTypeOf('string');
    expect(await lock.release()).toBe(true);
  });
});
