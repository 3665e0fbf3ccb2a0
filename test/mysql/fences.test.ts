import { randomBytes } from 'node:crypto';
import { type LockStore, newOwner } from 'cachelock';
import { mysqlStore } from 'cachelock/mysql';
import mysql from 'mysql2/promise';
import { afterAll, afterEach, beforeEach, describe, expect, it } from 'vitest';
import { keyId } from '../../src/mysql/names.js';
import { serverOrSkip } from '../support/reachable.js';

const reachable = await serverOrSkip('MariaDB', 3306);
const run = randomBytes(4).toString('hex');
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
const KEYS = 1_000;

/** Run `task` over `items`, `width` at a time. */
async function inParallel<T>(items: T[], width: number, task: (item: T) => Promise<void>) {
  let next = 0;
  const lanes = Array.from({ length: width }, async () => {
    while (next < items.length) await task(items[next++]!);
  });
  await Promise.all(lanes);
}

describe.runIf(reachable)('mysql store: nothing left behind, fences that rise', () => {
  const pool = mysql.createPool({
    host: '127.0.0.1',
    user: 'root',
    database: 'test',
    connectionLimit: 8,
  });
  let table: string;
  let store: LockStore;
  let tables = 0;
  const made: string[] = [];

  // A table of its own per case, so that one case's leftovers cannot mask another's.
  beforeEach(() => {
    table = `cachelock_fences_${run}_${++tables}`;
    made.push(table);
    store = mysqlStore(pool, { table, listen: false });
  });

  afterEach(async () => {
    await store.close?.();
  });

  afterAll(async () => {
    for (const name of made) await pool.query(`DROP TABLE IF EXISTS \`${name}\``);
    await pool.end();
  });

  const rows = async () => {
    const [result] = (await pool.query(`SELECT count(*) AS n FROM \`${table}\``)) as [
      { n: number }[],
      unknown,
    ];
    return Number(result[0]!.n);
  };

  it('keeps no row for keys locked once: released, held at least, or left to expire', async () => {
    const keys = (variant: string) => Array.from({ length: KEYS }, (_, i) => `${variant}:${i}`);
    const fences: bigint[] = [];
    await inParallel(keys('released'), 8, async (key) => {
      const owner = newOwner();
      fences.push((await store.acquire(key, owner, 1_000))!.fence!);
      expect(await store.release(key, owner)).toBe(true);
    });
    await inParallel(keys('held-at-least'), 8, async (key) => {
      const owner = newOwner();
      fences.push((await store.acquire(key, owner, 1_000))!.fence!);
      expect(await store.release(key, owner, 200)).toBe(true);
    });
    await inParallel(keys('expired'), 8, async (key) => {
      fences.push((await store.acquire(key, newOwner(), 1_000))!.fence!);
    });
    expect(new Set(fences).size).toBeGreaterThan(0);
    expect(await rows()).toBeGreaterThan(0);
    await sleep(1_200);
    // Nobody touches those keys again: the sweeps that ride on other acquisitions remove them.
    let pairs = 0;
    while ((await rows()) > 0 && pairs < 1_000) {
      for (let i = 0; i < 50; i++, pairs++) {
        const owner = newOwner();
        await store.acquire('busy', owner, 10_000);
        await store.release('busy', owner);
      }
    }
    expect(await rows()).toBe(0);
  }, 120_000);

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
    const [left] = (await pool.query(`SELECT \`key\` FROM \`${table}\` ORDER BY \`key\``)) as [
      { key: string }[],
      unknown,
    ];
    expect(left.map((row) => row.key)).toEqual(['held-through-sweeps']);
    expect(await store.inspect('held-through-sweeps')).toMatchObject({
      owner: holder,
      fence: held!.fence,
    });
  });

  it('fences rise across releases, takeovers and two stores racing on one key', async () => {
    const other = mysqlStore(pool, { table, listen: false });
    try {
      let last = 0n;
      for (let i = 0; i < 300; i++) {
        const owner = newOwner();
        const one = i % 2 === 0 ? store : other;
        const acquired = await one.acquire('climb', owner, i % 3 === 0 ? 1 : 10_000);
        expect(acquired, `round ${i}`).not.toBeNull();
        expect(acquired!.fence! > last, `round ${i}: ${acquired!.fence} after ${last}`).toBe(true);
        last = acquired!.fence!;
        if (i % 3 === 0)
          await sleep(2); // left to expire: the next one takes it over
        else expect(await one.release('climb', owner)).toBe(true);
      }
    } finally {
      await other.close?.();
    }
  });

  it('a fence ahead of the clock is kept past its release, so the next one still rises', async () => {
    const a = newOwner();
    expect(await store.acquire('ahead', a, 10_000)).not.toBeNull();
    // As after takeovers within one microsecond, or a server clock that stepped back.
    await pool.query(`UPDATE \`${table}\` SET fence = fence + 10000000 WHERE \`key\` = 'ahead'`);
    const ahead = (await store.inspect('ahead'))!.fence!;
    expect(await store.release('ahead', a)).toBe(true);
    expect(await store.inspect('ahead')).toBeNull();
    const next = await store.acquire('ahead', newOwner(), 10_000);
    expect(next!.fence! > ahead).toBe(true);
  });

  it("a fence-checking resource refuses a paused holder's write once another holder has the key", async () => {
    // What a resource does with fences: remember the highest it has seen, refuse anything lower.
    let highest = 0n;
    const write = (fence: bigint) => {
      if (fence < highest) return false;
      highest = fence;
      return true;
    };
    const paused = newOwner();
    const first = await store.acquire('resource', paused, 200);
    expect(write(first!.fence!)).toBe(true);
    await sleep(300); // the holder stalls past its lease (a GC pause, SIGSTOP)
    const next = newOwner();
    const second = await store.acquire('resource', next, 10_000);
    expect(second).not.toBeNull();
    expect(write(second!.fence!)).toBe(true);
    // The stalled holder wakes up and writes with the fence it had: refused.
    expect(write(first!.fence!)).toBe(false);
    expect(await store.extend('resource', paused, 10_000)).toBe(false);
    expect(await store.release('resource', paused)).toBe(false);
    expect(await store.release('resource', next)).toBe(true);
  });

  /** Resolves once a statement that mentions `text` waits in `state`, as the server lists it. */
  const waitingIn = async (state: string, text: string) => {
    for (let i = 0; i < 500; i++) {
      const [found] = (await pool.query(
        'SELECT COUNT(*) AS n FROM information_schema.PROCESSLIST WHERE STATE = ? AND INFO LIKE ?',
        [state, `%${text}%`],
      )) as [{ n: number }[], unknown];
      if (Number(found[0]!.n) > 0) return;
      await sleep(10);
    }
    throw new Error(`no statement with ${text} waits in ${state}`);
  };

  it('a fresh acquisition delayed after its values were evaluated still rises above a holder that came and went meanwhile', async () => {
    // A trigger stands for whatever delays a statement between the evaluation of its values and
    // its row reaching the index (its thread descheduled, or woken late from a lock wait with
    // others): the paused owner's INSERT waits there on a named lock the test holds. A trigger
    // also hides LAST_INSERT_ID set before it from the statement's reply, so the fences are read
    // back from the table.
    const paused = newOwner();
    const gate = `cachelock_fences_gate_${run}_${tables}`;
    await store.inspect('delayed'); // creates the table
    await pool.query(
      `CREATE TRIGGER \`${table}_pause\` BEFORE INSERT ON \`${table}\` FOR EACH ROW
       IF NEW.owner = ${pool.escape(paused)} THEN
         SET @gate = GET_LOCK(${pool.escape(gate)}, 30), @gate = RELEASE_LOCK(${pool.escape(gate)});
       END IF`,
    );
    const holder = await pool.getConnection();
    let late: Promise<unknown> | undefined;
    try {
      await holder.query('SELECT GET_LOCK(?, 0)', [gate]);
      late = store.acquire('delayed', paused, 10_000);
      await waitingIn('User lock', gate);
      // Meanwhile another owner takes the key, runs and releases it.
      const quick = newOwner();
      await store.acquire('delayed', quick, 10_000);
      const between = await store.inspect('delayed');
      expect(between?.owner).toBe(quick);
      expect(await store.release('delayed', quick)).toBe(true);
      await holder.query('SELECT RELEASE_LOCK(?)', [gate]);
      await late;
      const granted = await store.inspect('delayed');
      expect(granted?.owner).toBe(paused);
      expect(granted!.fence! > between!.fence!, `${granted!.fence} after ${between!.fence}`).toBe(
        true,
      );
    } finally {
      await holder.query('SELECT RELEASE_LOCK(?)', [gate]);
      holder.release();
      await late?.catch(() => undefined);
    }
  });

  // The key alone, or first of several keys taken in one transaction (keys are taken in the
  // order of their ids: the first statement is the one that waits for the table).
  const takers = {
    'a fresh acquisition': (key: string) =>
      store.acquire(key, newOwner(), 10_000).then((got) => got?.fence),
    'a fresh acquisition of several keys': (key: string) => {
      const other = `${key}:other`;
      expect(Buffer.compare(keyId(key), keyId(other))).toBeLessThan(0);
      return store
        .capabilities!.keys!.acquire([key, other], newOwner(), 10_000)
        .then((got) => got?.fences[0]);
    },
  };

  it.each(Object.entries(takers))(
    '%s that waited for a table lock still rises above a holder that came and went meanwhile',
    async (_, take) => {
      // A statement waiting for a metadata lock (LOCK TABLES, an ALTER, a backup's read lock)
      // began before the wait. Here the connection that holds the table lock is itself a
      // store's, and takes and releases the key while the other statement waits.
      await store.inspect('table-locked'); // creates the table
      const locker = await mysql.createConnection({
        host: '127.0.0.1',
        user: 'root',
        database: 'test',
      });
      const inside = mysqlStore(locker, { table, listen: false });
      let late: Promise<bigint | undefined> | undefined;
      try {
        await inside.inspect('table-locked');
        await locker.query(`LOCK TABLES \`${table}\` WRITE`);
        late = take('table-locked');
        await waitingIn('Waiting for table metadata lock', table);
        const quick = newOwner();
        const between = await inside.acquire('table-locked', quick, 10_000);
        expect(between).not.toBeNull();
        expect(await inside.release('table-locked', quick)).toBe(true);
        await locker.query('UNLOCK TABLES');
        const granted = await late;
        expect(granted).toBeDefined();
        expect(granted! > between!.fence!, `${granted} after ${between!.fence}`).toBe(true);
      } finally {
        await inside.close?.();
        await locker.end();
        await late?.catch(() => undefined);
      }
    },
  );
});
