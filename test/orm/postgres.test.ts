import 'reflect-metadata';
import { randomBytes } from 'node:crypto';
import { MikroORM } from '@mikro-orm/postgresql';
import { closeAll, Lock } from 'cachelock';
import { drizzle } from 'drizzle-orm/node-postgres';
import knex from 'knex';
import pg from 'pg';
import { Sequelize } from 'sequelize';
import { DataSource } from 'typeorm';
import { afterAll, describe, expect, it } from 'vitest';
import { serverOrSkip } from '../support/reachable.js';

const URL_ = 'postgres://postgres@127.0.0.1:5432/test';
const reachable = await serverOrSkip('PostgreSQL', 5432);
const run = randomBytes(4).toString('hex');
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** One app's ORM, as a lock's `cache`, and a look into its pool. */
interface App {
  cache: object;
  /** Connections of the app's pool checked out now. */
  inUse(): number;
  /** Connections the app's pool has open now. */
  open(): number;
  end(): Promise<void>;
}

/** Makes an app whose connections all carry `name` as their application_name. */
type MakeApp = (name: string) => Promise<App>;

const apps: Record<string, MakeApp> = {
  knex: async (name) => {
    const db = knex({
      client: 'pg',
      connection: { connectionString: URL_, application_name: name },
      pool: { min: 0, max: 2 },
    });
    const pool = db.client.pool;
    return {
      cache: db,
      inUse: () => pool.numUsed(),
      open: () => pool.numUsed() + pool.numFree(),
      end: () => db.destroy(),
    };
  },
  'Drizzle (node-postgres)': async (name) => {
    const pool = new pg.Pool({ connectionString: URL_, application_name: name, max: 2 });
    return { cache: drizzle(pool), ...pgPool(pool), end: () => pool.end() };
  },
  'TypeORM DataSource': async (name) => {
    const source = new DataSource({
      type: 'postgres',
      url: URL_,
      applicationName: name,
      poolSize: 2,
    });
    await source.initialize();
    const pool = (source.driver as unknown as { master: pg.Pool }).master;
    return { cache: source, ...pgPool(pool), end: () => source.destroy() };
  },
  Sequelize: async (name) => {
    const sequelize = new Sequelize(URL_, {
      logging: false,
      pool: { min: 0, max: 2 },
      dialectOptions: { application_name: name },
    });
    const pool = (
      sequelize.connectionManager as unknown as { pool: { using: number; size: number } }
    ).pool;
    return {
      cache: sequelize,
      inUse: () => pool.using,
      open: () => pool.size,
      end: () => sequelize.close(),
    };
  },
  MikroORM: async (name) => {
    const orm = await MikroORM.init({
      clientUrl: URL_,
      entities: [],
      discovery: { warnWhenNoEntities: false },
      pool: { min: 0, max: 2 },
      driverOptions: { connection: { application_name: name } },
    });
    const pool = orm.em.getConnection().getKnex().client.pool;
    return {
      // The EntityManager the app works with: it leads to the same pool as the MikroORM.
      cache: orm.em.fork(),
      inUse: () => pool.numUsed(),
      open: () => pool.numUsed() + pool.numFree(),
      end: () => orm.close(),
    };
  },
};

async function until(condition: () => boolean, ms = 1_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!condition() && Date.now() < deadline) await sleep(10);
}

function pgPool(pool: pg.Pool): Pick<App, 'inUse' | 'open'> {
  return { inUse: () => pool.totalCount - pool.idleCount, open: () => pool.totalCount };
}

describe.runIf(reachable)('an ORM as the cache, on PostgreSQL', () => {
  const admin = new pg.Pool({ connectionString: URL_, max: 1 });
  const ending: App[] = [];

  afterAll(async () => {
    await closeAll();
    for (const app of ending) await app.end();
    await admin.end();
  });

  /** The server's view of the connections named `name`: what each last ran. */
  async function backends(name: string): Promise<{ state: string; query: string }[]> {
    const { rows } = await admin.query(
      'SELECT state, query FROM pg_stat_activity WHERE application_name = $1',
      [name],
    );
    return rows;
  }

  for (const [orm, make] of Object.entries(apps)) {
    it(`${orm}: locks through the app's pool and waits on a connection of its own`, async () => {
      const tag = orm.replace(/\W+/g, '-').toLowerCase();
      const [nameA, nameB] = [`cl-${run}-${tag}-a`, `cl-${run}-${tag}-b`];
      const a = await make(nameA);
      ending.push(a);
      const b = await make(nameB);
      ending.push(b);
      const key = `orm-${run}-${tag}`;

      const holder = new Lock(key, { cache: a.cache, ttl: '20s', autoExtend: false });
      await holder.acquire();
      expect(holder.fence).toBeTypeOf('bigint');
      // The statements ran on a connection of the app's pool, which went back at once.
      // (The first acquisition also sweeps expired rows, in the background: let it finish.)
      const quiet = async () =>
        a.inUse() === 0 &&
        (await backends(nameA)).every((row) => row.state === 'idle') &&
        a.inUse() === 0;
      for (let calm = 0, i = 0; calm < 3 && i < 200; i++) {
        calm = (await quiet()) ? calm + 1 : 0;
        await sleep(20);
      }
      const ranOnA = await backends(nameA);
      expect(a.inUse()).toBe(0);
      expect(a.open()).toBeGreaterThan(0);
      expect(ranOnA.some((row) => /cachelock_locks/.test(row.query) && row.state === 'idle')).toBe(
        true,
      );
      expect(await new Lock(key, { cache: b.cache }).tryAcquire()).toBe(false);

      // A second instance waits: on a LISTEN connection of its own, holding none of the pool's.
      const waiter = new Lock(key, { cache: b.cache, wait: '15s' });
      const waiting = waiter.acquire();
      let listening: { state: string; query: string }[] = [];
      for (let i = 0; i < 100 && listening.length === 0; i++) {
        await sleep(50);
        listening = (await backends(nameB)).filter((row) => /^LISTEN /.test(row.query));
      }
      expect(listening).toHaveLength(1);
      let held = 0;
      const samples = 40;
      for (let i = 0; i < samples; i++) {
        held += b.inUse();
        await sleep(25);
      }
      // A poll borrows a connection for a moment; a held one would show in every sample.
      expect(held).toBeLessThanOrEqual(samples / 10);
      const onServer = await backends(nameB);
      expect(onServer.length).toBe(b.open() + 1);

      const released = Date.now();
      expect(await holder.release()).toBe(true);
      await waiting;
      // Woken by the release, not by a poll (which runs at most once a second here).
      expect(Date.now() - released).toBeLessThan(900);
      expect(waiter.held).toBe(true);
      expect(waiter.fence! > holder.fence!).toBe(true);
      expect(await waiter.release()).toBe(true);
      await until(() => b.inUse() === 0);
      expect(b.inUse()).toBe(0);

      // Idle: the listener goes soon after the last waiter, and only the pool's own remain.
      for (let i = 0; i < 80; i++) {
        if ((await backends(nameB)).every((row) => !/^LISTEN /.test(row.query))) break;
        await sleep(50);
      }
      expect((await backends(nameB)).filter((row) => /^LISTEN /.test(row.query))).toHaveLength(0);
      expect(b.inUse()).toBe(0);
    });
  }
});
