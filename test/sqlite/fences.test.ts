import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { type LockStore, newOwner } from 'cachelock';
import { sqliteStore } from 'cachelock/sqlite';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

const KEYS = 5_000;
// This file reads and writes the tables on connections of its own, through better-sqlite3; the
// stores use it too, since two copies of SQLite in one process do not see each other's locks.
const driver = 'better-sqlite3';
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

let dir: string;
let counter = 0;
const stores: LockStore[] = [];

function freshPath(): string {
  const folder = join(dir, `db-${++counter}`);
  mkdirSync(folder, { mode: 0o700 });
  return join(folder, 'locks.sqlite');
}

function open(path: string): LockStore {
  const store = sqliteStore(path, { driver });
  stores.push(store);
  return store;
}

/** The rows of the leases table, read on a connection of the test's own. */
function rows(path: string, table = 'cachelock_locks'): number {
  const db = new Database(path, { readonly: true });
  try {
    return Number((db.prepare(`SELECT count(*) AS n FROM "${table}"`).get() as { n: number }).n);
  } finally {
    db.close();
  }
}

beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'cachelock-sqlite-fences-'));
});

afterAll(async () => {
  for (const store of stores) await store.close?.();
  rmSync(dir, { recursive: true, force: true });
});

describe('sqlite store: nothing left behind', () => {
  it('keeps no row for 15,000 keys locked once: released, held at least, or left to expire', async () => {
    const path = freshPath();
    const store = open(path);
    const fences: bigint[] = [];
    for (let i = 0; i < KEYS; i++) {
      const owner = newOwner();
      fences.push((await store.acquire(`released:${i}`, owner, 1_000))!.fence!);
      expect(await store.release(`released:${i}`, owner)).toBe(true);
    }
    for (let i = 0; i < KEYS; i++) {
      const owner = newOwner();
      fences.push((await store.acquire(`held-at-least:${i}`, owner, 1_000))!.fence!);
      expect(await store.release(`held-at-least:${i}`, owner, 200)).toBe(true);
    }
    for (let i = 0; i < KEYS; i++) {
      fences.push((await store.acquire(`expired:${i}`, newOwner(), 1_000))!.fence!);
    }
    for (let i = 1; i < fences.length; i++) expect(fences[i]! > fences[i - 1]!).toBe(true);
    expect(rows(path)).toBeGreaterThan(0);
    await sleep(1_100);
    // Nobody touches those keys again: the sweeps that ride on other acquisitions remove them,
    // a bounded batch each, so a steady trickle of work clears any backlog.
    let pairs = 0;
    while (rows(path) > 0 && pairs < 4_000) {
      for (let i = 0; i < 100; i++, pairs++) {
        const owner = newOwner();
        await store.acquire('busy', owner, 10_000);
        await store.release('busy', owner);
      }
    }
    expect(rows(path)).toBe(0);
  }, 60_000);

  it('sweeps only leases that ran out, never a held one', async () => {
    const path = freshPath();
    const store = open(path);
    const holder = newOwner();
    const held = await store.acquire('held-through-sweeps', holder, 30_000);
    await store.acquire('gone-soon', newOwner(), 30);
    await sleep(60);
    for (let i = 0; i < 40; i++) {
      const owner = newOwner();
      await store.acquire('sweeper', owner, 10_000);
      await store.release('sweeper', owner);
    }
    expect(rows(path)).toBe(1);
    expect(await store.inspect('held-through-sweeps')).toMatchObject({
      owner: holder,
      fence: held!.fence,
    });
  });
  it('is carried on by short-lived processes, each acquiring once, through the whole table', async () => {
    const path = freshPath();
    const first = open(path);
    for (let i = 0; i < 1_000; i++) await first.acquire(`left:${i}`, newOwner(), 20);
    await sleep(50);
    // Each a new store, as each `cachelock run` is a new process: the sweep resumes where the
    // last one stopped (kept in the file), rather than going over the first rows again.
    for (let i = 0; i < 40; i++) {
      const once = sqliteStore(path, { driver });
      const owner = newOwner();
      await once.acquire('cli', owner, 10_000);
      await once.release('cli', owner);
      await once.close?.();
    }
    expect(rows(path)).toBe(0);
  });
});

describe('sqlite store: fences that only rise', () => {
  it('across a closed and reopened store, and a file deleted and made anew', async () => {
    const path = freshPath();
    const first = sqliteStore(path, { driver });
    const owner = newOwner();
    const before = (await first.acquire('k', owner, 10_000))!.fence!;
    await first.release('k', owner);
    await first.close?.();
    const reopened = sqliteStore(path, { driver });
    const again = (await reopened.acquire('k', newOwner(), 10_000))!.fence!;
    expect(again > before).toBe(true);
    await reopened.close?.();
    // The file is lost (a tmpfs emptied by a reboot): the next fence still counts from above.
    rmSync(path);
    rmSync(`${path}-wal`, { force: true });
    rmSync(`${path}-shm`, { force: true });
    const anew = open(path);
    const after = (await anew.acquire('k', newOwner(), 10_000))!.fence!;
    expect(after > again).toBe(true);
  });

  it('migrates a first-release file in place: adds the sweep column, keeps its leases and its count', async () => {
    const path = freshPath();
    // The first release's tables, with a lease still held, one long expired, and its counter.
    const old = new Database(path);
    old.exec(`
      CREATE TABLE "cachelock_locks" (key TEXT PRIMARY KEY NOT NULL, owner TEXT NOT NULL,
        expires_at INTEGER NOT NULL, fence INTEGER NOT NULL) WITHOUT ROWID;
      CREATE TABLE "cachelock_locks_fence" (id INTEGER PRIMARY KEY CHECK (id = 1),
        value INTEGER NOT NULL);
      INSERT INTO "cachelock_locks_fence" VALUES (1, 7);`);
    const now = Date.now();
    old
      .prepare('INSERT INTO "cachelock_locks" VALUES (?, ?, ?, ?), (?, ?, ?, ?)')
      .run('held', 'h:1:r:1', now + 60_000, 6, 'stale', 'h:1:r:2', now - 86_400_000, 7);
    const store = open(path);
    expect(await store.acquire('held', newOwner(), 1_000)).toBeNull();
    const taken = (await store.acquire('next', newOwner(), 1_000))!.fence!;
    expect(taken > 7n).toBe(true);
    const left = old.prepare('SELECT key FROM "cachelock_locks" ORDER BY key').all();
    expect(left).toEqual([{ key: 'held' }, { key: 'next' }]);
    const columns = old
      .prepare(`SELECT name FROM pragma_table_info('cachelock_locks_fence')`)
      .all();
    expect(columns).toEqual([{ name: 'id' }, { name: 'value' }, { name: 'swept_to' }]);
    // A first-release process still running on the file draws value + 1 and excludes the same
    // keys: the count it shares keeps rising for both.
    old.exec('BEGIN IMMEDIATE');
    old.exec('UPDATE "cachelock_locks_fence" SET value = value + 1 WHERE id = 1');
    const oldFence = BigInt(
      (old.prepare('SELECT value FROM "cachelock_locks_fence"').get() as { value: number }).value,
    );
    old.exec('COMMIT');
    expect(oldFence > taken).toBe(true);
    const owner = newOwner();
    expect((await store.acquire('later', owner, 1_000))!.fence! > oldFence).toBe(true);
    old.close();
  });
});
