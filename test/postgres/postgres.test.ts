import { randomBytes } from 'node:crypto';
import { isLockStore, type LockStore, newOwner } from 'cachelock';
import { postgresStore, storeFromClient, storeFromUrl } from 'cachelock/postgres';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { serverOrSkip } from '../support/reachable.js';

const URL_ = 'postgres://postgres@127.0.0.1:5432/test';
const reachable = await serverOrSkip('PostgreSQL', 5432);
const run = randomBytes(4).toString('hex');
const table = `cachelock_test_${run}`;

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

describe.runIf(reachable)('postgres store (shared server)', () => {
  let pool: pg.Pool;
  let store: LockStore;
  const tables = new Set<string>([table]);
  const closing: LockStore[] = [];

  beforeAll(() => {
    pool = new pg.Pool({ connectionString: URL_, max: 8 });
    pool.on('error', () => {});
    store = postgresStore(pool, { table });
    closing.push(store);
  });

  afterAll(async () => {
    for (const s of closing) await s.close?.();
    for (const name of tables) await pool.query(`DROP TABLE IF EXISTS "${name}"`);
    await pool.end();
  });

  it('takes, refuses, refreshes, extends and releases a key, owner-checked', async () => {
    expect(isLockStore(store)).toBe(true);
    expect(store.kind).toBe('postgres');
    const [a, b] = [newOwner(), newOwner()];
    const first = await store.acquire('k', a, 10_000);
    expect(first?.fence).toBeTypeOf('bigint');
    expect(await store.acquire('k', b, 10_000)).toBeNull();
    expect(await store.acquire('k', a, 20_000)).toEqual(first);
    const info = await store.inspect('k');
    expect(info).toMatchObject({ owner: a, fence: first!.fence });
    expect(info!.ttlMs).toBeGreaterThan(10_000);
    expect(await store.release('k', b)).toBe(false);
    expect(await store.extend('k', b, 1_000)).toBe(false);
    expect(await store.extend('k', a, 1_000)).toBe(true);
    expect((await store.inspect('k'))!.ttlMs).toBeLessThanOrEqual(1_000);
    expect(await store.release('k', a)).toBe(true);
    expect(await store.release('k', a)).toBe(false);
    expect(await store.inspect('k')).toBeNull();
    // Released rows are deleted: the table holds held keys only.
    const { rows } = await pool.query(`SELECT count(*)::int AS n FROM "${table}" WHERE key = 'k'`);
    expect(rows[0].n).toBe(0);
  });

  it('fences strictly increase per key although released rows are deleted', async () => {
    const fences: bigint[] = [];
    for (let i = 0; i < 5; i++) {
      const owner = newOwner();
      fences.push((await store.acquire('fenced', owner, 10_000))!.fence!);
      // A refused attempt in between must not disturb the order.
      expect(await store.acquire('fenced', newOwner(), 10_000)).toBeNull();
      expect(await store.release('fenced', owner)).toBe(true);
    }
    for (let i = 1; i < fences.length; i++) expect(fences[i]! > fences[i - 1]!).toBe(true);
  });

  it('judges expiry by the database clock: an expired lease goes to the next owner', async () => {
    const [a, b] = [newOwner(), newOwner()];
    const first = await store.acquire('short', a, 50);
    await sleep(120);
    expect(await store.inspect('short')).toBeNull();
    const second = await store.acquire('short', b, 10_000);
    expect(second!.fence! > first!.fence!).toBe(true);
    expect(await store.extend('short', a, 10_000)).toBe(false);
    expect(await store.release('short', a)).toBe(false);
    expect((await store.inspect('short'))?.owner).toBe(b);
  });

  it('with keepMs shortens the lease instead of deleting, never lengthens it', async () => {
    const a = newOwner();
    await store.acquire('kept', a, 10_000);
    expect(await store.release('kept', a, 2_000)).toBe(true);
    expect((await store.inspect('kept'))!.ttlMs).toBeLessThanOrEqual(2_000);
    expect(await store.release('kept', a, 5_000)).toBe(true);
    expect((await store.inspect('kept'))!.ttlMs).toBeLessThanOrEqual(2_000);
    expect(await store.acquire('kept', newOwner(), 1_000)).toBeNull();
  });

  it('keeps hostile keys apart, verbatim: quotes, semicolons, backslashes, NUL, 10 kB', async () => {
    const long = randomBytes(7_680).toString('base64'); // 10 kB that does not compress
    const keys = [
      `it's`,
      `'); DROP TABLE "${table}"; --`,
      'a"b',
      'back\\slash',
      '\\x00',
      'nul\0byte',
      'nul\uFFFDbyte',
      'nul',
      '\0',
      'é🔒',
      'lone\uD800',
      long,
      `${long}!`,
      '$1',
    ];
    const owners = keys.map(() => newOwner());
    for (const [i, key] of keys.entries()) {
      expect(
        await store.acquire(key, owners[i]!, 10_000),
        JSON.stringify(key.slice(0, 20)),
      ).not.toBeNull();
    }
    for (const [i, key] of keys.entries())
      expect((await store.inspect(key))?.owner).toBe(owners[i]);
    const { rows } = await pool.query(`SELECT key FROM "${table}" WHERE key = $1`, [`it's`]);
    expect(rows).toEqual([{ key: `it's` }]);
    for (const [i, key] of keys.entries()) expect(await store.release(key, owners[i]!)).toBe(true);
  });

  it('grants a key to exactly one of many concurrent attempts', async () => {
    for (let round = 0; round < 5; round++) {
      const key = `race-${round}`;
      const results = await Promise.all(
        Array.from({ length: 24 }, () => store.acquire(key, newOwner(), 10_000)),
      );
      expect(results.filter((r) => r !== null)).toHaveLength(1);
    }
  });

  it('creates its table once when many stores start at once', async () => {
    const name = `cachelock_race_${run}`;
    tables.add(name);
    const pools = Array.from({ length: 6 }, () => {
      const p = new pg.Pool({ connectionString: URL_, max: 1 });
      p.on('error', () => {});
      return p;
    });
    try {
      const stores = pools.map((p) => postgresStore(p, { table: name }));
      const results = await Promise.all(stores.map((s) => s.acquire('first', newOwner(), 10_000)));
      expect(results.filter((r) => r !== null)).toHaveLength(1);
    } finally {
      await Promise.all(pools.map((p) => p.end()));
    }
  });

  it('validates table and schema names', () => {
    for (const bad of ['x; drop', 'a"b', '1abc', '', 'a'.repeat(64), 'tab le']) {
      expect(() => postgresStore(pool, { table: bad })).toThrow(TypeError);
      expect(() => postgresStore(pool, { schema: bad })).toThrow(TypeError);
    }
    expect(() => postgresStore({} as never)).toThrow(TypeError);
  });

  it('puts the table in the schema asked for and recreates it if dropped', async () => {
    const schemaName = `cachelock_schema_${run}`;
    await pool.query(`CREATE SCHEMA "${schemaName}"`);
    try {
      const scoped = postgresStore(pool, { table: 'locks', schema: schemaName });
      const owner = newOwner();
      expect(await scoped.acquire('s', owner, 10_000)).not.toBeNull();
      const { rows } = await pool.query(`SELECT owner FROM "${schemaName}".locks`);
      expect(rows).toEqual([{ owner }]);
      await pool.query(`DROP TABLE "${schemaName}".locks`);
      await expect(scoped.inspect('s')).rejects.toThrow(/does not exist/);
      expect(await scoped.acquire('s', owner, 10_000)).not.toBeNull();
      await scoped.close?.();
    } finally {
      await pool.query(`DROP SCHEMA "${schemaName}" CASCADE`);
    }
  });

  it('wakes a waiter with LISTEN/NOTIFY: once when subscribed, again on release', async () => {
    const other = postgresStore(pool, { table });
    closing.push(other);
    const holder = newOwner();
    await other.acquire('wake', holder, 10_000);
    let calls = 0;
    const unsubscribe = store.onRelease!('wake', () => calls++);
    await waitFor(() => calls === 1, 'the subscription is announced once active');
    await store.acquire('wake-other-key', newOwner(), 10_000);
    expect(await other.release('wake', holder)).toBe(true);
    await waitFor(() => calls === 2, 'a release wakes the waiter');
    // A release of another key, or a keepMs release, does not.
    const o = newOwner();
    await other.acquire('wake', o, 10_000);
    await other.release('wake', o, 5_000);
    await sleep(200);
    expect(calls).toBe(2);
    unsubscribe();
  });

  it('works with a single Client, with wake-ups on a sibling connection', async () => {
    const client = new pg.Client(URL_);
    client.on('error', () => {});
    await client.connect();
    try {
      expect(storeFromClient(client).kind).toBe('postgres');
      const wrapped = postgresStore(client, { table });
      const owner = newOwner();
      const acquired = await wrapped.acquire('client-key', owner, 10_000);
      expect(acquired).not.toBeNull();
      expect(await store.acquire('client-key', newOwner(), 10_000)).toBeNull();
      let calls = 0;
      const unsubscribe = wrapped.onRelease!('client-key', () => calls++);
      await waitFor(() => calls === 1, 'the Client store listens');
      expect(await wrapped.release('client-key', owner)).toBe(true);
      await waitFor(() => calls === 2, 'the Client store is woken');
      unsubscribe();
      await wrapped.close?.();
      // close() leaves the user's client open.
      expect((await client.query('SELECT 1 AS one')).rows).toEqual([{ one: 1 }]);
    } finally {
      await client.end();
    }
  });

  it('opens postgres:// and postgresql:// URLs, owns the pool and ends it on close', async () => {
    for (const scheme of ['postgres', 'postgresql']) {
      const owned = await storeFromUrl(
        new URL(`${scheme}://postgres@127.0.0.1:5432/test?table=${table}`),
      );
      const owner = newOwner();
      expect(await owned.acquire(`url-${scheme}`, owner, 10_000)).not.toBeNull();
      expect((await store.inspect(`url-${scheme}`))?.owner).toBe(owner);
      await owned.close?.();
      await expect(owned.acquire('after-close', owner, 10_000)).rejects.toThrow(/closed/);
    }
    await expect(storeFromUrl(new URL(`${URL_}?table=bad;name`))).rejects.toThrow(TypeError);
  });

  it('rejects, never grants, when the server cannot be reached', async () => {
    const nowhere = await storeFromUrl(new URL('postgres://postgres@127.0.0.1:1/test'));
    await expect(nowhere.acquire('x', newOwner(), 1_000)).rejects.toThrow();
    await nowhere.close?.();
  });
});

async function waitFor(condition: () => boolean, what: string, ms = 5_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`${what}: not within ${ms} ms`);
    await sleep(10);
  }
}
