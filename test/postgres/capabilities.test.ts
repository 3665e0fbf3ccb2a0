import { randomBytes } from 'node:crypto';
import { type LockStore, Semaphore } from 'cachelock';
import { postgresStore } from 'cachelock/postgres';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { serverOrSkip } from '../support/reachable.js';
import { describeCapabilities } from '../support/store-capabilities.js';
import { describePrimitives } from '../support/store-primitives.js';

const URL_ = 'postgres://postgres@127.0.0.1:5432/test';
const reachable = await serverOrSkip('PostgreSQL', 5432);
const table = `cachelock_caps_${randomBytes(4).toString('hex')}`;
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

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

  it('works in a named schema: the shared table, its sequence and index beside the leases', async () => {
    const named = postgresStore(pool, { table: `${table}_s`, schema: 'public' });
    try {
      const permits = named.capabilities!.permits!;
      const first = await permits.acquire('k', 'one', 10_000, { limit: 2, weight: 1 });
      const second = await permits.acquire('k', 'two', 10_000, { limit: 2, weight: 1 });
      expect(second!.fence! > first!.fence!).toBe(true);
      const { rows } = await pool.query(
        `SELECT to_regclass('public.${table}_s_shared_expires_at') IS NOT NULL AS indexed`,
      );
      expect(rows[0].indexed).toBe(true);
      expect(await permits.release('k', 'one')).toBe(true);
      expect(await permits.release('k', 'two')).toBe(true);
    } finally {
      await named.close?.();
      await pool.query(`DROP TABLE IF EXISTS "${table}_s", "${table}_s_shared"`);
    }
  });

  it('wakes a waiting Semaphore through LISTEN soon after a release, not at its next poll', async () => {
    const key = `wake-${randomBytes(4).toString('hex')}`;
    for (let round = 0; round < 3; round++) {
      const held = await new Semaphore(key, { permits: 1, cache: store }).acquire();
      const waiting = new Semaphore(key, { permits: 1, cache: second, wait: '10s' }).acquire();
      // Long enough for the waiter's polls to back off towards a second apart.
      await sleep(1_500);
      await held.release();
      const released = performance.now();
      const permit = await waiting;
      expect(performance.now() - released).toBeLessThan(400);
      await permit.release();
    }
  }, 20_000);

  it('fences of a table made anew start above the old ones: from the server clock in µs', async () => {
    const name = `${table}_f`;
    const drop = () => pool.query(`DROP TABLE IF EXISTS "${name}", "${name}_shared"`);
    const before = BigInt(Date.now() - 60_000) * 1000n;
    let first: bigint | undefined;
    for (let round = 0; round < 2; round++) {
      const fresh = postgresStore(pool, { table: name });
      try {
        const got = await fresh.capabilities!.permits!.acquire('f', 'one', 10_000, {
          limit: 1,
          weight: 1,
        });
        expect(got!.fence! > before).toBe(true);
        if (first !== undefined) expect(got!.fence! > first).toBe(true);
        first = got!.fence;
      } finally {
        await fresh.close?.();
        await drop();
      }
    }
  });

  it('announces each key of a release of several keys, as a single release does', async () => {
    const keys = store.capabilities!.keys!;
    const owner = 'several';
    expect(await keys.acquire(['n1', 'n2'], owner, 10_000)).not.toBeNull();
    // A store of its own, so that its LISTEN starts now and calls each listener once when active.
    const listening = postgresStore(other, { table });
    const calls = new Map([
      ['n1', 0],
      ['n2', 0],
    ]);
    const stops = [...calls.keys()].map((key) =>
      listening.onRelease!(key, () => calls.set(key, calls.get(key)! + 1)),
    );
    try {
      for (let i = 0; i < 500 && [...calls.values()].some((n) => n < 1); i++) await sleep(10);
      expect([...calls.values()]).toEqual([1, 1]);
      expect(await keys.release(['n1', 'n2'], owner)).toBe(true);
      for (let i = 0; i < 100 && [...calls.values()].some((n) => n < 2); i++) await sleep(10);
      expect([...calls.values()]).toEqual([2, 2]);
    } finally {
      for (const stop of stops) stop();
      await listening.close?.();
    }
  });

  it('admits no more than the limit when the server defaults to repeatable read', async () => {
    // Such a transaction's snapshot dates from its first statement, the advisory lock's wait.
    const rr = new pg.Pool({
      connectionString: URL_,
      max: 8,
      options: '-c default_transaction_isolation=repeatable\\ read',
    });
    rr.on('error', () => {});
    const strict = postgresStore(rr, { table });
    try {
      const permits = strict.capabilities!.permits!;
      for (let round = 0; round < 5; round++) {
        const key = `rr-${round}-${randomBytes(4).toString('hex')}`;
        const grants = await Promise.all(
          Array.from({ length: 8 }, (_, i) =>
            permits.acquire(key, `o${i}`, 10_000, { limit: 1, weight: 1 }),
          ),
        );
        expect(grants.filter((grant) => grant !== null)).toHaveLength(1);
      }
    } finally {
      await strict.close?.();
      await rr.end();
    }
  });

  // Two pools and a single Client: three stores as three processes would have them.
  describeCapabilities({
    stores: () => [store, second, onClient],
    sharedRows: (key) =>
      count(`SELECT count(*)::int AS n FROM "${table}_shared" WHERE key = $1`, [key]),
    expiredSharedRows: () =>
      count(
        `SELECT count(*)::int AS n FROM "${table}_shared" WHERE expires_at <= clock_timestamp()`,
      ),
    exclusiveRows: (keys) =>
      count(`SELECT count(*)::int AS n FROM "${table}" WHERE key = ANY($1)`, [keys]),
    push: true,
  });
  describePrimitives(() => [store, second]);
});
