import { randomBytes } from 'node:crypto';
import { type LockStore, newOwner } from 'cachelock';
import { mysqlStore } from 'cachelock/mysql';
import mysql from 'mysql2/promise';
import { afterAll, afterEach, beforeEach, describe, expect, it } from 'vitest';
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
});
