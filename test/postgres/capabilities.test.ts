import { randomBytes } from 'node:crypto';
import type { LockStore } from 'cachelock';
import { postgresStore } from 'cachelock/postgres';
import pg from 'pg';
import { afterAll, beforeAll, describe } from 'vitest';
import { serverOrSkip } from '../support/reachable.js';
import { describeCapabilities } from '../support/store-capabilities.js';

const URL_ = 'postgres://postgres@127.0.0.1:5432/test';
const reachable = await serverOrSkip('PostgreSQL', 5432);
const table = `cachelock_caps_${randomBytes(4).toString('hex')}`;

describe.runIf(reachable)('postgres store capabilities', () => {
  let pool: pg.Pool;
  let other: pg.Pool;
  let client: pg.Client;
  let store: LockStore;
  let second: LockStore;
  let onClient: LockStore;

  beforeAll(async () => {
    pool = new pg.Pool({ connectionString: URL_, max: 8 });
    other = new pg.Pool({ connectionString: URL_, max: 8 });
    pool.on('error', () => {});
    other.on('error', () => {});
    client = new pg.Client({ connectionString: URL_ });
    await client.connect();
    store = postgresStore(pool, { table });
    second = postgresStore(other, { table });
    onClient = postgresStore(client, { table });
  });

  afterAll(async () => {
    for (const s of [store, second, onClient]) await s.close?.();
    await pool.query(`DROP TABLE IF EXISTS "${table}", "${table}_shared"`);
    await client.end();
    await pool.end();
    await other.end();
  });

  const count = async (sql: string, values: unknown[] = []): Promise<number> =>
    ((await pool.query(sql, values)).rows[0] as { n: number }).n;

  // Two pools and a single Client: three stores as three processes would have them.
  describeCapabilities({
    stores: () => [store, second, onClient],
    sharedRows: (key) =>
      count(`SELECT count(*)::int AS n FROM "${table}_shared" WHERE key = $1`, [key]),
    allSharedRows: () => count(`SELECT count(*)::int AS n FROM "${table}_shared"`),
    exclusiveRows: (keys) =>
      count(`SELECT count(*)::int AS n FROM "${table}" WHERE key = ANY($1)`, [keys]),
    push: true,
  });
});
