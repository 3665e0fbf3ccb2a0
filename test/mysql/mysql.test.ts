import { randomBytes } from 'node:crypto';
import { Lock, newOwner, resolveStore } from 'cachelock';
import { mysqlStore, storeFromUrl } from 'cachelock/mysql';
import mariadb from 'mariadb';
import mysql from 'mysql2';
import mysqlPromise from 'mysql2/promise';
import { afterAll, describe, expect, it } from 'vitest';
import { closedPort, serverOrSkip } from '../support/reachable.js';

const reachable = await serverOrSkip('MariaDB', 3306);
const settings = { host: '127.0.0.1', port: 3306, user: 'root', database: 'test' };
const table = `cachelock_mysql_${randomBytes(4).toString('hex')}`;
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

describe.runIf(reachable)('mysql store', () => {
  const pool = mysqlPromise.createPool({ ...settings, connectionLimit: 4 });
  const callbackPool = mysql.createPool({ ...settings, connectionLimit: 2 });
  const mariaPool = mariadb.createPool({ ...settings, connectionLimit: 4 });

  afterAll(async () => {
    await pool.query(`DROP TABLE IF EXISTS \`${table}\``);
    await pool.query('DROP TABLE IF EXISTS cachelock_locks_recognised');
    await pool.end();
    await new Promise((resolve) => callbackPool.end(resolve));
    await mariaPool.end();
  });

  it('recognises mysql2 and mariadb pools given as cache', async () => {
    for (const client of [pool, callbackPool, mariaPool]) {
      const store = await resolveStore({ cache: client });
      expect(store.kind).toBe('mysql');
      const lock = new Lock(`recognised:${randomBytes(4).toString('hex')}`, { cache: client });
      await lock.acquire();
      expect(typeof lock.fence).toBe('bigint');
      expect(await lock.release()).toBe(true);
    }
  });

  it('validates its options, naming the option and the value', async () => {
    expect(() => mysqlStore(pool, { table: 'no-dashes' })).toThrow(
      /table must be an identifier.*"no-dashes"/,
    );
    expect(() => mysqlStore(pool, { database: 'a b' })).toThrow(/database must be an identifier/);
    expect(() => mysqlStore({} as never)).toThrow(/expected a mysql2 Pool or Connection/);
    await expect(storeFromUrl(new URL('mysql://root@127.0.0.1/test?driver=pg'))).rejects.toThrow(
      /driver must be mysql2 or mariadb, got "pg"/,
    );
    const store = mysqlStore(pool, { table });
    await expect(store.acquire('long owner', 'x'.repeat(1_025), 1_000)).rejects.toThrow(
      /owner must be at most 1024 bytes/,
    );
    await store.close?.();
  });

  it('never shows the password of a URL in its errors', async () => {
    const secret = `pw${randomBytes(6).toString('hex')}`;
    for (const scheme of ['mysql', 'mariadb']) {
      const lock = new Lock('secret', {
        cache: `${scheme}://root:${secret}@127.0.0.1:3306/test?table=${table}`,
        wait: 0,
      });
      const error = (await lock.acquire().catch((e: Error) => e)) as Error;
      expect(error).toBeInstanceOf(Error);
      const shown = `${error.message}\n${error.stack}\n${String((error as { cause?: unknown }).cause)}`;
      expect(shown).not.toContain(secret);
    }
  });

  it('rejects, never grants, when the server cannot be reached', async () => {
    const port = await closedPort();
    for (const driver of ['mysql2', 'mariadb']) {
      const store = await storeFromUrl(
        new URL(`mysql://root@127.0.0.1:${port}/test?driver=${driver}`),
      );
      await expect(store.acquire('nowhere', newOwner(), 1_000)).rejects.toThrow();
      await store.close?.();
    }
  });

  it('wakes a waiter on another store within milliseconds of a release, for each driver', async () => {
    const pairs = [
      [mysqlStore(pool, { table }), mysqlStore(pool, { table })],
      [
        mysqlStore(mariaPool, { table, connection: settings }),
        mysqlStore(mariaPool, { table, connection: settings }),
      ],
    ];
    const delays: number[] = [];
    for (const [holderStore, waiterStore] of pairs) {
      for (let round = 0; round < 5; round++) {
        const key = `wake:${randomBytes(4).toString('hex')}`;
        const holder = newOwner();
        expect(await holderStore!.acquire(key, holder, 30_000)).not.toBeNull();
        // The holder takes the key's named lock just after its acquire; a waiter that looks
        // before that finds no holder to wait on and falls back to polling.
        await sleep(500);
        let heardAt = 0;
        const stop = waiterStore!.onRelease!(key, () => {
          heardAt = performance.now();
        });
        // As the core does: a refused attempt arms the wait; spurious calls before are allowed.
        expect(await waiterStore!.acquire(key, newOwner(), 30_000, { lineMs: 3_000 })).toBeNull();
        await sleep(200);
        heardAt = 0;
        const releasedAt = performance.now();
        expect(await holderStore!.release(key, holder)).toBe(true);
        while (heardAt === 0 && performance.now() - releasedAt < 2_000) await sleep(1);
        stop();
        expect(heardAt, 'the waiter was woken').toBeGreaterThan(0);
        delays.push(heardAt - releasedAt);
      }
      await holderStore!.close?.();
      await waiterStore!.close?.();
    }
    delays.sort((a, b) => a - b);
    console.log(
      `wake-up after release: median ${delays[5]!.toFixed(1)} ms, worst ${delays.at(-1)!.toFixed(1)} ms`,
    );
    // Far below the core's 1 s poll: a push, not a poll.
    expect(delays.at(-1)).toBeLessThan(250);
  });

  it('on a single connection, a statement tried again after a deadlock waits out a transaction begun meanwhile', async () => {
    const connection = await mysqlPromise.createConnection(settings);
    const store = mysqlStore(connection, { table });
    try {
      const [x, y, z] = ['x', 'y', 'z'].map((k) => `retry:${randomBytes(4).toString('hex')}:${k}`);
      expect(await store.acquire(x!, 'a', 60_000)).not.toBeNull();
      expect(await store.acquire(y!, 'b', 60_000)).not.toBeNull();
      // The server answers the release's DELETE with a deadlock, once, after a transaction has
      // begun behind it on the same connection: the DELETE must not be tried again inside it.
      type Callback = (error: Error | null, result?: unknown) => void;
      const core = (
        connection as unknown as { connection: { query: (...args: unknown[]) => void } }
      ).connection;
      const query = core.query.bind(core);
      let deadlock: Callback | undefined;
      let held: () => void = () => {};
      const caught = new Promise<void>((resolve) => (held = resolve));
      core.query = (sql: unknown, ...rest: unknown[]) => {
        const callback = rest.at(-1) as Callback;
        if (deadlock === undefined && /^\s*DELETE/.test(String(sql))) {
          deadlock = callback;
          held();
          return;
        }
        if (sql === 'BEGIN' && deadlock !== undefined) {
          const answer = deadlock;
          query(sql, (error: Error | null, result: unknown) => {
            callback(error, result);
            answer(
              Object.assign(new Error('Deadlock found when trying to get lock'), { errno: 1213 }),
            );
          });
          return;
        }
        query(sql, ...rest);
      };
      const released = store.release(x!, 'a');
      await caught;
      // Meets the held y (before or after taking z): rolled back whole.
      expect(await store.capabilities!.keys!.acquire([z!, y!], 'c', 60_000)).toBeNull();
      expect(await released).toBe(true);
      expect(await store.inspect(x!)).toBeNull();
      expect(await store.inspect(z!)).toBeNull();
    } finally {
      await store.close?.();
      await connection.end();
    }
  });

  it('a lease that runs out without a release rings its waiters too', async () => {
    const holderPool = mysqlPromise.createPool({ ...settings, connectionLimit: 1 });
    const holderStore = mysqlStore(holderPool, { table });
    const waiterStore = mysqlStore(pool, { table });
    try {
      const key = `dies:${randomBytes(4).toString('hex')}`;
      const ttl = 1_500;
      const acquiredAt = performance.now();
      expect(await holderStore.acquire(key, newOwner(), ttl)).not.toBeNull();
      // As the core does: each wake-up makes the waiter try again, and a refusal arms the next
      // wait. A wake-up before the holder has taken its named lock is spurious and allowed.
      const waiter = newOwner();
      let grantedAt = 0;
      const attempt = async () => {
        const lease = await waiterStore.acquire(key, waiter, 30_000, { lineMs: 3_000 });
        if (lease !== null && grantedAt === 0) grantedAt = performance.now();
      };
      const stop = waiterStore.onRelease!(key, () => void attempt());
      await attempt();
      expect(grantedAt, 'the key is held').toBe(0);
      // The lease runs out without a release: the holder's process lets its named lock go then.
      // Without that push nothing here tries again: the wait would only time out and re-arm.
      while (grantedAt === 0 && performance.now() - acquiredAt < ttl + 3_000) await sleep(5);
      stop();
      expect(grantedAt, 'the waiter was woken and took the key').toBeGreaterThan(0);
      expect(grantedAt - (acquiredAt + ttl)).toBeLessThan(1_000);
    } finally {
      await holderStore.close?.();
      await waiterStore.close?.();
      await holderPool.end();
    }
  });
});
