import { Lock, LockLostError, type LockStore, newOwner } from 'cachelock';
import { postgresStore, storeFromUrl } from 'cachelock/postgres';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type PostgresServer, startPostgresServer } from '../support/postgres-server.js';
import { binaryOrSkip } from '../support/reachable.js';

const available =
  (await binaryOrSkip('PostgreSQL faults', 'initdb')) &&
  (await binaryOrSkip('PostgreSQL faults', 'pg_ctl'));
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

// Faults happen on a throwaway cluster of this suite's own, never on the shared server.
describe.runIf(available)('postgres store under faults (throwaway cluster)', () => {
  let server: PostgresServer;
  let admin: pg.Pool;

  beforeAll(async () => {
    server = await startPostgresServer();
    admin = new pg.Pool({
      connectionString: server.url,
      max: 2,
      application_name: 'cachelock-admin',
    });
    admin.on('error', () => {});
  });

  afterAll(async () => {
    await admin?.end().catch(() => undefined);
    await server?.destroy();
  });

  /** End every session but the admin's own: the store's pool and its LISTEN connection. */
  async function terminateOthers(): Promise<number> {
    const { rows } = await admin.query(
      `SELECT count(*) FILTER (WHERE pg_terminate_backend(pid))::int AS n FROM pg_stat_activity
       WHERE pid <> pg_backend_pid() AND backend_type = 'client backend'
         AND application_name <> 'cachelock-admin'`,
    );
    return rows[0].n;
  }

  /** Retry `operation` until the store answers again, proving recovery. */
  async function recovered<T>(operation: () => Promise<T>, ms = 15_000): Promise<T> {
    const deadline = Date.now() + ms;
    for (;;) {
      try {
        return await operation();
      } catch (error) {
        if (Date.now() > deadline) throw error;
        await sleep(100);
      }
    }
  }

  it('connections killed mid-hold: no second holder, and the store works on', async () => {
    const store = await storeFromUrl(new URL(server.url));
    try {
      const [a, b] = [newOwner(), newOwner()];
      expect(await store.acquire('held', a, 30_000)).not.toBeNull();
      expect(await terminateOthers()).toBeGreaterThan(0);
      // The lease is a row: killing connections neither frees nor grants it.
      const taken = await store.acquire('held', b, 30_000).catch((error: Error) => error);
      expect(taken === null || taken instanceof Error).toBe(true);
      expect(await recovered(() => store.acquire('held', b, 30_000))).toBeNull();
      expect(await recovered(() => store.extend('held', a, 30_000))).toBe(true);
      expect(await store.release('held', a)).toBe(true);
      expect(await store.acquire('held', b, 30_000)).not.toBeNull();
    } finally {
      await store.close?.();
    }
  });

  it('an acquire whose connection is killed while it waits rejects and grants nothing', async () => {
    const store = await storeFromUrl(new URL(server.url));
    const blocker = await admin.connect();
    try {
      await store.inspect('warm');
      await blocker.query('BEGIN');
      await blocker.query('LOCK TABLE cachelock_locks IN ACCESS EXCLUSIVE MODE');
      const owner = newOwner();
      const attempt = store.acquire('blocked', owner, 30_000);
      const settled = attempt.then(
        (value) => ({ value }),
        (error: Error) => ({ error }),
      );
      await sleep(200);
      const { rows } = await admin.query(
        `SELECT count(*) FILTER (WHERE pg_terminate_backend(pid))::int AS n FROM pg_stat_activity
         WHERE wait_event_type = 'Lock' AND pid <> pg_backend_pid()`,
      );
      expect(rows[0].n).toBe(1);
      const outcome = await settled;
      expect('error' in outcome).toBe(true);
      await blocker.query('ROLLBACK');
      expect(await recovered(() => store.inspect('blocked'))).toBeNull();
      expect(await store.acquire('blocked', newOwner(), 30_000)).not.toBeNull();
    } finally {
      await blocker.query('ROLLBACK').catch(() => undefined);
      blocker.release();
      await store.close?.();
    }
  });

  it('a server restart: operations reject while it is down, none is granted, leases survive', async () => {
    const store = await storeFromUrl(new URL(server.url));
    try {
      const [a, b] = [newOwner(), newOwner()];
      expect(await store.acquire('restart', a, 60_000)).not.toBeNull();
      await server.stop('immediate');
      await expect(store.acquire('restart', b, 60_000)).rejects.toThrow();
      await expect(store.acquire('other', b, 60_000)).rejects.toThrow();
      await expect(store.extend('restart', a, 60_000)).rejects.toThrow();
      await server.start();
      // Committed leases are durable: the holder still holds, the other is still refused.
      expect(await recovered(() => store.acquire('restart', b, 60_000))).toBeNull();
      expect(await store.extend('restart', a, 60_000)).toBe(true);
      expect(await store.release('restart', a)).toBe(true);
      expect(await store.acquire('restart', b, 60_000)).not.toBeNull();
    } finally {
      await store.close?.();
    }
  });

  it('a Client store rejects once its connection is killed, never grants', async () => {
    const client = new pg.Client(server.url);
    client.on('error', () => {});
    await client.connect();
    const store: LockStore = postgresStore(client);
    try {
      const owner = newOwner();
      expect(await store.acquire('client', owner, 30_000)).not.toBeNull();
      await terminateOthers();
      await sleep(100);
      await expect(store.acquire('client-2', newOwner(), 30_000)).rejects.toThrow();
      await expect(store.release('client', owner)).rejects.toThrow();
    } finally {
      await store.close?.();
      await client.end().catch(() => undefined);
    }
  });

  it('a Lock held through killed connections and a restart is never held twice', async () => {
    const holderStore = await storeFromUrl(new URL(server.url));
    const rivalStore = await storeFromUrl(new URL(server.url));
    const lost: LockLostError[] = [];
    const holder = new Lock('watched', {
      cache: holderStore,
      ttl: 600,
      onLost: (error) => lost.push(error),
    });
    const rival = new Lock('watched', { cache: rivalStore, ttl: 600 });
    let rivalWon = false;
    let stop = false;
    let probing: Promise<void> | undefined;
    try {
      await holder.acquire();
      // Every 20 ms the rival tries; whenever it wins, the holder must already know it lost.
      probing = (async () => {
        while (!stop && !rivalWon) {
          const won = await rival.tryAcquire().catch(() => false);
          if (won) {
            rivalWon = true;
            expect(holder.held, 'the rival won while the holder still believed it held').toBe(
              false,
            );
          }
          await sleep(20);
        }
      })();
      for (let i = 0; i < 5; i++) {
        await terminateOthers();
        await sleep(150);
      }
      // Killed connections cost nothing: the pool reconnects and the watchdog keeps extending.
      expect(holder.held).toBe(true);
      expect(rivalWon).toBe(false);
      // Down for longer than the lease: the holder cannot extend and must learn that it lost.
      await server.stop('immediate');
      await sleep(1_500);
      await server.start();
      await waitFor(() => rivalWon, 'the rival takes the key once the server is back', 15_000);
      expect(lost).toHaveLength(1);
      expect(lost[0]).toBeInstanceOf(LockLostError);
      expect(holder.held).toBe(false);
      expect(await holder.release()).toBe(false);
      expect(await recovered(() => rival.release())).toBe(true);
    } finally {
      stop = true;
      await probing;
      await holderStore.close?.();
      await rivalStore.close?.();
    }
  });

  it('the LISTEN connection is re-established after it is killed and after a restart', async () => {
    const store = await storeFromUrl(new URL(server.url));
    const other = await storeFromUrl(new URL(server.url));
    try {
      const holder = newOwner();
      await store.acquire('wake', holder, 60_000);
      let calls = 0;
      const unsubscribe = other.onRelease!('wake', () => calls++);
      await waitFor(() => calls === 1, 'listening');

      await terminateOthers();
      // Re-subscribed: the waiter is called once more, so it retries and misses nothing.
      await waitFor(() => calls === 2, 'listening again after pg_terminate_backend');

      await server.restart('fast');
      await waitFor(() => calls === 3, 'listening again after a restart', 15_000);
      expect(await recovered(() => store.release('wake', holder))).toBe(true);
      await waitFor(() => calls === 4, 'woken by a release after the restart');
      unsubscribe();
    } finally {
      await store.close?.();
      await other.close?.();
    }
  });
});

async function waitFor(condition: () => boolean, what: string, ms = 5_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`${what}: not within ${ms} ms`);
    await sleep(10);
  }
}
