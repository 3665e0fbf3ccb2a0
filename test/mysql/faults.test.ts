import { Lock, type LockLostError, type LockStore, newOwner } from 'cachelock';
import { storeFromUrl } from 'cachelock/mysql';
import mysql from 'mysql2/promise';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  type MariadbServer,
  mariadbBinaries,
  startMariadbServer,
} from '../support/mariadb-server.js';

const available = await mariadbBinaries();
if (!available && process.env.CI === 'true') {
  throw new Error(
    'mariadb-install-db or /usr/sbin/mariadbd is missing (CI=true: MySQL fault tests must run)',
  );
}
if (!available)
  console.warn('\n!!! SKIPPING MySQL fault tests: no mariadb-install-db/mariadbd !!!\n');
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

// Faults happen on a throwaway server of this suite's own, never on the shared one.
describe.runIf(available)('mysql store under faults (throwaway MariaDB server)', () => {
  let server: MariadbServer;
  let admin: mysql.Connection | undefined;

  beforeAll(async () => {
    server = await startMariadbServer();
  }, 90_000);

  afterAll(async () => {
    await admin?.end().catch(() => undefined);
    await server?.destroy();
  });

  async function adminConnection(): Promise<mysql.Connection> {
    if (admin === undefined) {
      admin = await mysql.createConnection({ host: '127.0.0.1', port: server.port, user: 'root' });
      admin.on('error', () => {
        admin = undefined;
      });
    }
    return admin;
  }

  /** KILL every session but the admin's own: the stores' pools and their wake-up sessions. */
  async function killOthers(): Promise<number> {
    const connection = await adminConnection();
    const [rows] = (await connection.query(
      `SELECT id FROM information_schema.PROCESSLIST
       WHERE id <> CONNECTION_ID() AND user = 'root' AND command <> 'Daemon'`,
    )) as [{ id: number }[], unknown];
    for (const { id } of rows) await connection.query(`KILL ${Number(id)}`).catch(() => undefined);
    return rows.length;
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

  for (const driver of ['mysql2', 'mariadb'] as const) {
    const open = () => storeFromUrl(new URL(`${server.url}?driver=${driver}`));

    it(`${driver}: connections killed mid-hold: no second holder, and the store works on`, async () => {
      const store = await open();
      try {
        const [a, b] = [newOwner(), newOwner()];
        expect(await store.acquire('held', a, 30_000)).not.toBeNull();
        expect(await killOthers()).toBeGreaterThan(0);
        // The lease is a row: killing connections neither frees nor grants it.
        const taken = await store.acquire('held', b, 30_000).catch((error: Error) => error);
        expect(taken === null || taken instanceof Error).toBe(true);
        expect(await recovered(() => store.acquire('held', b, 30_000))).toBeNull();
        expect(await recovered(() => store.extend('held', a, 30_000))).toBe(true);
        expect(await store.release('held', a)).toBe(true);
        expect(await store.acquire('held', b, 30_000)).not.toBeNull();
        expect(await store.release('held', b)).toBe(true);
      } finally {
        await store.close?.();
      }
    });

    it(`${driver}: a server restart: operations reject while it is down, leases survive, fences rise`, async () => {
      const store = await open();
      try {
        const [a, b] = [newOwner(), newOwner()];
        const first = await store.acquire('restart', a, 60_000);
        expect(first?.fence).toBeDefined();
        server.kill();
        await expect(store.acquire('restart', b, 60_000)).rejects.toThrow();
        await expect(store.extend('restart', a, 60_000)).rejects.toThrow();
        await server.start();
        // Committed leases are durable: the holder still holds, the other is still refused.
        expect(await recovered(() => store.acquire('restart', b, 60_000))).toBeNull();
        expect(await store.extend('restart', a, 60_000)).toBe(true);
        expect(await store.release('restart', a)).toBe(true);
        // Released, the key leaves no row; its next fence still rises above the last one.
        const second = await store.acquire('restart', b, 60_000);
        expect(second!.fence! > first!.fence!).toBe(true);
        expect(await store.release('restart', b)).toBe(true);
        server.kill();
        await server.start();
        const third = await recovered(() => store.acquire('restart', a, 60_000));
        expect(third!.fence! > second!.fence!).toBe(true);
        expect(await store.release('restart', a)).toBe(true);
      } finally {
        await store.close?.();
      }
    }, 60_000);

    it(`${driver}: a Lock held through killed connections and a restart is never held twice`, async () => {
      const holderStore = await open();
      const rivalStore = await open();
      const lost: LockLostError[] = [];
      const holder = new Lock(`watched-${driver}`, {
        cache: holderStore,
        ttl: 600,
        onLost: (error) => lost.push(error),
      });
      // A lease long enough to outlive the pool's stale connections failing once each after the
      // restart: only the holder's lease must be shorter than the outage.
      const rival = new Lock(`watched-${driver}`, { cache: rivalStore, ttl: 5_000 });
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
          await killOthers();
          await sleep(150);
        }
        // Killed connections cost nothing: the pool reconnects and the watchdog keeps extending.
        expect(holder.held).toBe(true);
        expect(rivalWon).toBe(false);
        // Down for longer than the lease: the holder cannot extend and must learn that it lost.
        server.kill();
        admin = undefined;
        await sleep(1_500);
        await server.start();
        await waitFor(() => rivalWon, 'the rival takes the key once the server is back', 20_000);
        expect(lost).toHaveLength(1);
        expect(holder.held).toBe(false);
        expect(await holder.release()).toBe(false);
        expect(await recovered(() => rival.release())).toBe(true);
      } finally {
        stop = true;
        await probing;
        await holderStore.close?.();
        await rivalStore.close?.();
      }
    }, 60_000);

    it(`${driver}: waiters are woken after their wake-up sessions are killed and after a restart`, async () => {
      const key = `wake-${driver}`;
      const store: LockStore = await open();
      const other: LockStore = await open();
      try {
        const holder = newOwner();
        expect(await store.acquire(key, holder, 60_000)).not.toBeNull();
        let calls = 0;
        const unsubscribe = other.onRelease!(key, () => calls++);
        await sleep(300);
        const settled = calls;

        await killOthers();
        // The store answers again after its sessions were killed, and the lease is still held.
        // (Whether the waiter hears of the kill at once depends on when its wake-up session
        // notices; the core polls meanwhile, so it is not asserted here.)
        expect(await recovered(() => other.acquire(key, newOwner(), 60_000))).toBeNull();
        expect(calls).toBeGreaterThanOrEqual(settled);
        await sleep(300);

        server.kill();
        admin = undefined;
        await server.start();
        expect(await recovered(() => other.acquire(key, newOwner(), 60_000))).toBeNull();
        // The lease survived; once the store holds its named lock again, a release rings.
        expect(await recovered(() => store.extend(key, holder, 60_000))).toBe(true);
        await sleep(500);
        expect(await other.acquire(key, newOwner(), 60_000)).toBeNull();
        await sleep(200);
        const before = calls;
        const releasedAt = performance.now();
        expect(await store.release(key, holder)).toBe(true);
        await waitFor(() => calls > before, 'woken by a release after the restart');
        expect(performance.now() - releasedAt).toBeLessThan(2_000);
        unsubscribe();
      } finally {
        await store.close?.();
        await other.close?.();
      }
    }, 60_000);
  }
});

async function waitFor(condition: () => boolean, what: string, ms = 5_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`${what}: not within ${ms} ms`);
    await sleep(10);
  }
}
