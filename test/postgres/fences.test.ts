import { createHash, randomBytes } from 'node:crypto';
import { type LockStore, newOwner } from 'cachelock';
import { postgresStore } from 'cachelock/postgres';
import pg from 'pg';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { type PostgresServer, startPostgresServer } from '../support/postgres-server.js';
import { binaryOrSkip } from '../support/reachable.js';

const available =
  (await binaryOrSkip('PostgreSQL fences', 'initdb')) &&
  (await binaryOrSkip('PostgreSQL fences', 'pg_ctl'));
const run = randomBytes(4).toString('hex');
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
const KEYS = 5_000;

/** Run `task` over `items`, `width` at a time. */
async function inParallel<T>(items: T[], width: number, task: (item: T) => Promise<void>) {
  let next = 0;
  const lanes = Array.from({ length: width }, async () => {
    while (next < items.length) await task(items[next++]!);
  });
  await Promise.all(lanes);
}

// A throwaway cluster (fsync off, so 15,000 commits take seconds), which the last cases restart.
describe.runIf(available)('postgres store: nothing left behind, fences that rise', () => {
  let server: PostgresServer;
  let pool: pg.Pool;
  let table: string;
  let store: LockStore;
  let tables = 0;

  beforeAll(async () => {
    server = await startPostgresServer();
    pool = new pg.Pool({ connectionString: server.url, max: 16 });
    pool.on('error', () => {});
  });

  // A table of its own per case, so that one case's leftovers cannot mask another's.
  beforeEach(() => {
    table = `cachelock_fences_${run}_${++tables}`;
    store = postgresStore(pool, { table, listen: false });
  });

  afterEach(async () => {
    await store.close?.();
  });

  afterAll(async () => {
    await pool?.end().catch(() => undefined);
    await server?.destroy();
  });

  const rows = async () =>
    (await pool.query(`SELECT count(*)::int AS n FROM "${table}"`)).rows[0].n as number;

  it('keeps no row for 15,000 keys locked once: released, held at least, or left to expire', async () => {
    const keys = (variant: string) => Array.from({ length: KEYS }, (_, i) => `${variant}:${i}`);
    const fences: bigint[] = [];
    await inParallel(keys('released'), 16, async (key) => {
      const owner = newOwner();
      fences.push((await store.acquire(key, owner, 1_000))!.fence!);
      expect(await store.release(key, owner)).toBe(true);
    });
    await inParallel(keys('held-at-least'), 16, async (key) => {
      const owner = newOwner();
      fences.push((await store.acquire(key, owner, 1_000))!.fence!);
      expect(await store.release(key, owner, 200)).toBe(true);
    });
    await inParallel(keys('expired'), 16, async (key) => {
      fences.push((await store.acquire(key, newOwner(), 1_000))!.fence!);
    });
    expect(new Set(fences).size).toBe(3 * KEYS);
    expect(await rows()).toBeGreaterThan(0);
    await sleep(1_200);
    // Nobody touches those keys again: the sweeps that ride on other acquisitions remove them,
    // a bounded batch each, so a steady trickle of work clears any backlog.
    let pairs = 0;
    while ((await rows()) > 0 && pairs < 2_000) {
      for (let i = 0; i < 100; i++, pairs++) {
        const owner = newOwner();
        await store.acquire('busy', owner, 10_000);
        await store.release('busy', owner);
      }
      await sleep(20);
    }
    expect(await rows()).toBe(0);
    expect(pairs).toBeLessThanOrEqual(2_000);
  }, 120_000);

  it("keeps no place in a key's line: handed the key, granted it, left, or lapsed", async () => {
    // Waiters keep places only where they are told of hand-offs: a store whose LISTEN is active.
    const listening = postgresStore(pool, { table });
    let active: () => void = () => {};
    const subscribed = new Promise<void>((resolve) => (active = resolve));
    const stopListening = listening.onRelease!('keeps the store listening', () => active());
    await subscribed;
    const many = listening.capabilities!.keys!;
    const places = async () =>
      (await pool.query(`SELECT count(*)::int AS n FROM "${table}_line"`)).rows[0].n as number;
    const join = async (key: string, lineMs = 3_000) => {
      const waiter = newOwner();
      expect(await listening.acquire(key, waiter, 10_000, { lineMs })).toBeNull();
      return waiter;
    };
    try {
      await inParallel(
        Array.from({ length: 200 }, (_, i) => i),
        16,
        async (i) => {
          const holder = newOwner();
          const key = `line:${i}`;
          expect(await listening.acquire(key, holder, 10_000)).not.toBeNull();
          const waiter = await join(key, i % 6 === 3 ? 200 : 3_000);
          if (i % 6 === 0) {
            // Handed the key by the release, then released in turn.
            expect(await listening.release(key, holder)).toBe(true);
            expect((await listening.inspect(key))?.owner).toBe(waiter);
            expect(await listening.release(key, waiter)).toBe(true);
          } else if (i % 6 === 1) {
            // Freed without a hand-off (a release of several keys), then taken by the waiter.
            expect(await many.release([key], holder)).toBe(true);
            expect(await listening.acquire(key, waiter, 10_000, { lineMs: 3_000 })).not.toBeNull();
            expect(await listening.release(key, waiter)).toBe(true);
          } else if (i % 6 === 2) {
            // The waiter gave up: its release leaves the line.
            expect(await listening.release(key, waiter)).toBe(false);
            expect(await listening.release(key, holder)).toBe(true);
          } else if (i % 6 === 3) {
            // Waiters whose places lapse while the key is held, and nobody releases it.
            await join(key, 50);
          } else if (i % 6 === 4) {
            // A lock on several keys that waited in this key's line takes them all at once.
            expect(await many.release([key], holder)).toBe(true);
            expect(await many.acquire([key, `${key}:b`], waiter, 10_000)).not.toBeNull();
            expect(await many.release([key, `${key}:b`], waiter)).toBe(true);
          } else {
            // A lock on several keys that waited in this key's line gives up.
            expect(await many.release([key, `${key}:b`], waiter)).toBe(false);
            expect(await listening.release(key, holder)).toBe(true);
          }
        },
      );
      // Only waiters still waiting keep places: in the lines of keys whose holder kept them.
      const done = Array.from({ length: 200 }, (_, i) => i)
        .filter((i) => i % 6 !== 3)
        .map((i) => createHash('sha256').update(`line:${i}`, 'utf16le').digest());
      const { rows: left } = await pool.query(
        `SELECT count(*)::int AS n FROM "${table}_line" WHERE id = ANY($1::bytea[])`,
        [done],
      );
      expect(left[0].n).toBe(0);
      await sleep(250);
      // A release, even a stranger's, takes the key's lapsed places; the sweeps take the rest.
      for (let i = 3; i < 200; i += 12) {
        expect(await listening.release(`line:${i}`, 'nobody')).toBe(false);
      }
      let pairs = 0;
      while ((await places()) > 0 && pairs < 1_000) {
        for (let i = 0; i < 50; i++, pairs++) {
          const owner = newOwner();
          await listening.acquire('busy', owner, 10_000);
          await listening.release('busy', owner);
        }
      }
      expect(await places()).toBe(0);
    } finally {
      stopListening();
      await listening.close?.();
    }
  }, 60_000);

  it('a waiter joins the line only while its store hears hand-offs', async () => {
    const listening = postgresStore(pool, { table });
    const places = async () =>
      (await pool.query(`SELECT owner FROM "${table}_line"`)).rows.map((row) => row.owner);
    const key = 'deaf-waiter';
    try {
      expect(await listening.acquire(key, newOwner(), 10_000)).not.toBeNull();
      // Nobody waits yet, so the store does not LISTEN: a waiter handed the key would not hear it.
      const early = newOwner();
      expect(await listening.acquire(key, early, 10_000, { lineMs: 3_000 })).toBeNull();
      expect(await places()).toEqual([]);
      // Once its LISTEN is active (the subscription says so), the waiter's try joins the line.
      let active: () => void = () => {};
      const subscribed = new Promise<void>((resolve) => (active = resolve));
      const stop = listening.onRelease!(key, () => active());
      try {
        await subscribed;
        expect(await listening.acquire(key, early, 10_000, { lineMs: 3_000 })).toBeNull();
        expect(await places()).toEqual([early]);
      } finally {
        stop();
      }
    } finally {
      await listening.close?.();
    }
  });

  it('a release that waits for its row acts on the row as it is once free: a hand-off just made to it', async () => {
    const key = 'given-while-releasing';
    const holder = newOwner();
    const waiter = newOwner();
    expect(await store.acquire(key, holder, 10_000)).not.toBeNull();
    // The key is being handed to the waiter (uncommitted) as the waiter gives up and releases.
    const other = await pool.connect();
    try {
      await other.query('BEGIN');
      await other.query(`UPDATE "${table}" SET owner = $1 WHERE key = $2`, [waiter, key]);
      const releasing = store.release(key, waiter);
      await sleep(200);
      await other.query('COMMIT');
      expect(await releasing).toBe(true);
    } finally {
      other.release();
    }
    expect(await store.inspect(key)).toBeNull();
  });

  it('sweeps only leases that ran out, never a held one', async () => {
    const holder = newOwner();
    const held = await store.acquire('held-through-sweeps', holder, 30_000);
    await store.acquire('gone-soon', newOwner(), 50);
    await sleep(100);
    for (let i = 0; i < 40; i++) {
      const owner = newOwner();
      await store.acquire('sweeper', owner, 10_000);
      await store.release('sweeper', owner);
    }
    await sleep(50);
    const { rows: left } = await pool.query(`SELECT key FROM "${table}" ORDER BY key`);
    expect(left.map((row) => row.key)).toEqual(['held-through-sweeps']);
    expect(await store.inspect('held-through-sweeps')).toMatchObject({
      owner: holder,
      fence: held!.fence,
    });
  });

  it('names the index <table>_expires_at, or by a hash when that would be too long', async () => {
    const long = `t${run}`.padEnd(63, 'x');
    for (const [name, schema] of [
      [`short_${run}`, undefined],
      [long, 'public'],
    ] as const) {
      const named = postgresStore(pool, { table: name, schema, listen: false });
      const owner = newOwner();
      expect(await named.acquire('k', owner, 1_000)).not.toBeNull();
      expect(await named.release('k', owner)).toBe(true);
      await named.close?.();
      const { rows: index } = await pool.query(
        `SELECT indexname FROM pg_indexes WHERE tablename = $1 AND indexdef LIKE '%expires_at%'`,
        [name],
      );
      expect(index.map((row) => row.indexname)).toEqual([
        name === long
          ? expect.stringMatching(/^cachelock_expiry_[0-9a-f]{12}$/)
          : `${name}_expires_at`,
      ]);
      // A second store on the same table finds the index and leaves it be.
      const again = postgresStore(pool, { table: name, schema, listen: false });
      expect(await again.inspect('k')).toBeNull();
      await again.close?.();
    }
  });

  it('migrates a first-release table in place: adds the index, keeps its rows and its fences', async () => {
    const old = `cachelock_first_${run}`;
    {
      // The first release's layout, with a lease of its own still held and one long expired.
      await pool.query(`CREATE TABLE "${old}" (id bytea PRIMARY KEY, key text NOT NULL,
        owner text NOT NULL, expires_at timestamptz NOT NULL,
        fence bigint GENERATED BY DEFAULT AS IDENTITY)`);
      const { createHash } = await import('node:crypto');
      const id = (key: string) => createHash('sha256').update(key, 'utf16le').digest();
      await pool.query(
        `INSERT INTO "${old}" (id, key, owner, expires_at) VALUES
           ($1, 'held', 'h:1:r:1', now() + interval '1 minute'),
           ($2, 'stale', 'h:1:r:2', now() - interval '1 day')`,
        [id('held'), id('stale')],
      );
      const upgraded = postgresStore(pool, { table: old, listen: false });
      expect(await upgraded.acquire('held', newOwner(), 1_000)).toBeNull();
      const { rows: index } = await pool.query(
        `SELECT indexdef FROM pg_indexes WHERE tablename = $1 AND indexdef LIKE '%expires_at%'`,
        [old],
      );
      expect(index).toHaveLength(1);
      const taken = await upgraded.acquire('next', newOwner(), 1_000);
      expect(taken!.fence! > 2n).toBe(true);
      await sleep(50);
      const { rows: left } = await pool.query(`SELECT key FROM "${old}" ORDER BY key`);
      expect(left.map((row) => row.key)).toEqual(['held', 'next']);
      await upgraded.close?.();
    }
  });

  // A statement that waits for a key's row (here behind a sweep's uncommitted DELETE of an expired
  // lease) and whose backend is then paused must not come back with a fence drawn before its
  // wait while another owner held the key meanwhile: fences rise in the order the key is granted.
  for (const shape of ['one key', 'several keys'] as const) {
    it(`a paused acquisition never comes back with a fence below one granted meanwhile (${shape})`, async () => {
      const key = `paused-${shape === 'one key' ? 'one' : 'many'}`;
      const keys = shape === 'one key' ? [key] : [`${key}:other`, key];
      const lone = new pg.Pool({ connectionString: server.url, max: 1 });
      lone.on('error', () => {});
      const paused = postgresStore(lone, { table, listen: false });
      const pid = (await lone.query('SELECT pg_backend_pid() AS pid')).rows[0].pid as number;
      const take = (from: LockStore, owner: string) =>
        shape === 'one key'
          ? from.acquire(key, owner, 10_000).then((got) => (got ? [got.fence!] : null))
          : from
              .capabilities!.keys!.acquire(keys, owner, 10_000)
              .then((got) => (got ? got.fences.map((fence) => fence!) : null));
      const give = (from: LockStore, owner: string) =>
        shape === 'one key'
          ? from.release(key, owner)
          : from.capabilities!.keys!.release(keys, owner);
      const sweep = await pool.connect();
      const granted: { who: string; fences: bigint[] }[] = [];
      try {
        // The key's lease has run out; a sweep (or a release) has deleted it but not committed.
        // (A store's own background sweep may get there first: then the lease is made again.)
        for (let attempt = 0; ; attempt++) {
          await take(store, newOwner());
          await pool.query(`UPDATE "${table}" SET expires_at = now() - interval '1 second'`);
          await sweep.query('BEGIN');
          const deleted = await sweep.query(`DELETE FROM "${table}" WHERE key = $1`, [key]);
          if (deleted.rowCount === 1) break;
          await sweep.query('ROLLBACK');
          if (attempt > 5) throw new Error('the expired lease kept going before the test could');
        }
        const a = newOwner();
        const first = take(paused, a);
        for (let i = 0; ; i++) {
          const { rows } = await pool.query(
            'SELECT wait_event_type FROM pg_stat_activity WHERE pid = $1',
            [pid],
          );
          if (rows[0]?.wait_event_type === 'Lock') break;
          if (i > 1_000) throw new Error('the acquisition never waited for the row');
          await sleep(10);
        }
        process.kill(pid, 'SIGSTOP');
        await sweep.query('COMMIT');
        // Another owner asks while the first statement is paused after its wait.
        const c = newOwner();
        const second = take(store, c);
        const early = await Promise.race([second, sleep(1_000).then(() => 'pending' as const)]);
        if (early !== 'pending' && early !== null) {
          granted.push({ who: 'second', fences: early });
          await give(store, c);
        }
        process.kill(pid, 'SIGCONT');
        const got = await first;
        if (got) granted.push({ who: 'first', fences: got });
        await give(paused, a);
        if (early === 'pending') {
          // Refused while the first held the key, or granted once it gave the key back.
          granted.push({ who: 'second', fences: ((await second) ?? (await take(store, c)))! });
          await give(store, c);
        }
      } finally {
        try {
          process.kill(pid, 'SIGCONT');
        } catch {
          // The backend is gone.
        }
        sweep.release();
        await paused.close?.();
        await lone.end().catch(() => undefined);
      }
      expect(granted.map((grant) => grant.who)).toContain('first');
      for (const [i, grant] of granted.entries()) {
        if (i === 0) continue;
        for (const [k, fence] of grant.fences.entries()) {
          expect(
            fence > granted[i - 1]!.fences[k]!,
            `${grant.who} after ${granted[i - 1]!.who}`,
          ).toBe(true);
        }
      }
    }, 30_000);
  }

  /** Acquire once the server answers again (the pool's old connections die with the restart). */
  async function acquireSoon(key: string, owner: string, ttlMs: number) {
    for (let attempt = 0; ; attempt++) {
      try {
        return await store.acquire(key, owner, ttlMs);
      } catch (error) {
        if (attempt >= 50) throw error;
        await sleep(100);
      }
    }
  }

  for (const mode of ['fast', 'immediate'] as const) {
    it(`the fence after a ${mode} restart is above the one before`, async () => {
      const key = `restart-${mode}-${run}`;
      const first = newOwner();
      const before = await acquireSoon(key, first, 10_000);
      expect(await store.release(key, first)).toBe(true);
      // A lease still held across the restart, left to expire afterwards.
      const held = await acquireSoon(`${key}:held`, newOwner(), 300);
      await server.restart(mode);
      const after = await acquireSoon(key, newOwner(), 10_000);
      expect(after!.fence! > before!.fence!).toBe(true);
      expect(after!.fence! > held!.fence!).toBe(true);
      await sleep(400);
      const retaken = await acquireSoon(`${key}:held`, newOwner(), 10_000);
      expect(retaken!.fence! > after!.fence!).toBe(true);
    }, 90_000);
  }
});
