import { execFile, spawn } from 'node:child_process';
import { mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import Database from 'better-sqlite3';
import { isLockStore, type LockStore, newOwner } from 'cachelock';
import { sqliteStore, storeFromClient, storeFromUrl } from 'cachelock/sqlite';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { bundleChild } from '../support/bundle.js';

const run = promisify(execFile);
const fixtures = fileURLToPath(new URL('./fixtures/', import.meta.url));

let dir: string;
const stores: LockStore[] = [];
let counter = 0;

function freshPath(): string {
  return join(dir, `db-${++counter}`, 'locks.sqlite');
}

function open(path = freshPath()): LockStore {
  const store = sqliteStore(path);
  stores.push(store);
  return store;
}

beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'cachelock-sqlite-'));
});

afterAll(async () => {
  for (const store of stores) await store.close?.();
  rmSync(dir, { recursive: true, force: true });
});

describe('sqlite store', () => {
  it('takes, refuses, refreshes, extends and releases a key, owner-checked', async () => {
    const store = open();
    expect(isLockStore(store)).toBe(true);
    expect(store.kind).toBe('sqlite');
    const [a, b] = [newOwner(), newOwner()];
    const first = await store.acquire('k', a, 10_000);
    expect(first?.fence).toBeTypeOf('bigint');
    expect(await store.acquire('k', b, 10_000)).toBeNull();
    // The holder asking again keeps its fence.
    expect(await store.acquire('k', a, 20_000)).toEqual(first);
    const info = await store.inspect('k');
    expect(info?.owner).toBe(a);
    expect(info?.ttlMs).toBeGreaterThan(10_000);
    expect(await store.release('k', b)).toBe(false);
    expect(await store.extend('k', b, 1_000)).toBe(false);
    expect(await store.extend('k', a, 1_000)).toBe(true);
    expect((await store.inspect('k'))?.ttlMs).toBeLessThanOrEqual(1_000);
    expect(await store.release('k', a)).toBe(true);
    expect(await store.release('k', a)).toBe(false);
    expect(await store.inspect('k')).toBeNull();
  });

  it('hands out fences that keep growing after rows are deleted and across stores', async () => {
    const path = freshPath();
    const one = open(path);
    const fences: bigint[] = [];
    for (let i = 0; i < 5; i++) {
      const owner = newOwner();
      fences.push((await one.acquire('fenced', owner, 10_000))!.fence!);
      expect(await one.release('fenced', owner)).toBe(true);
    }
    const other = open(path);
    const owner = newOwner();
    fences.push((await other.acquire('fenced', owner, 10_000))!.fence!);
    for (let i = 1; i < fences.length; i++) expect(fences[i]! > fences[i - 1]!).toBe(true);
  });

  it('lets another owner take an expired lease and refuses the old holder', async () => {
    const store = open();
    const [a, b] = [newOwner(), newOwner()];
    const first = await store.acquire('short', a, 30);
    await new Promise((r) => setTimeout(r, 60));
    expect(await store.inspect('short')).toBeNull();
    const second = await store.acquire('short', b, 10_000);
    expect(second!.fence! > first!.fence!).toBe(true);
    expect(await store.extend('short', a, 10_000)).toBe(false);
    expect(await store.release('short', a)).toBe(false);
    expect((await store.inspect('short'))?.owner).toBe(b);
  });

  it('with keepMs shortens the lease instead of deleting, never lengthens it', async () => {
    const store = open();
    const a = newOwner();
    await store.acquire('kept', a, 10_000);
    expect(await store.release('kept', a, 2_000)).toBe(true);
    const info = await store.inspect('kept');
    expect(info?.owner).toBe(a);
    expect(info!.ttlMs).toBeLessThanOrEqual(2_000);
    expect(await store.release('kept', a, 5_000)).toBe(true);
    expect((await store.inspect('kept'))!.ttlMs).toBeLessThanOrEqual(2_000);
    expect(await store.acquire('kept', newOwner(), 1_000)).toBeNull();
  });

  it('keeps hostile keys apart, verbatim', async () => {
    const store = open();
    const keys = [
      `it's`,
      'a"b',
      'x; DROP TABLE cachelock_locks; --',
      'back\\slash',
      'nul\0byte',
      'nul',
      'é🔒',
      'k'.repeat(10_240),
    ];
    const owners = keys.map(() => newOwner());
    for (const [i, key] of keys.entries())
      expect(await store.acquire(key, owners[i]!, 10_000)).not.toBeNull();
    for (const [i, key] of keys.entries())
      expect((await store.inspect(key))?.owner).toBe(owners[i]);
    for (const [i, key] of keys.entries()) expect(await store.release(key, owners[i]!)).toBe(true);
  });

  it('creates its folder 0700 and its files 0600', async () => {
    const path = join(dir, 'private', 'nested', 'locks.sqlite');
    const store = open(path);
    await store.acquire('mode', newOwner(), 10_000);
    expect(statSync(join(dir, 'private', 'nested')).mode & 0o777).toBe(0o700);
    expect(statSync(join(dir, 'private')).mode & 0o777).toBe(0o700);
    for (const file of [path, `${path}-wal`, `${path}-shm`]) {
      expect(statSync(file).mode & 0o777, file).toBe(0o600);
    }
  });

  it('opens sqlite: URLs: absolute, relative, ~, :memory:, with options', async () => {
    const abs = storeFromUrl(new URL(`sqlite:${join(dir, 'url', 'a.sqlite')}`));
    stores.push(abs);
    expect((abs as { path?: string }).path).toBe(join(dir, 'url', 'a.sqlite'));
    const triple = storeFromUrl(new URL(`sqlite://${join(dir, 'url', 'b.sqlite')}`));
    stores.push(triple);
    expect((triple as { path?: string }).path).toBe(join(dir, 'url', 'b.sqlite'));
    const relative = storeFromUrl(new URL('sqlite:some/dir/c.sqlite'));
    expect((relative as { path?: string }).path).toBe(resolve('some/dir/c.sqlite'));
    await relative.close?.();
    const memory = storeFromUrl(new URL('sqlite::memory:?table=other_locks&busyTimeout=1s'));
    stores.push(memory);
    const owner = newOwner();
    expect(await memory.acquire('m', owner, 10_000)).not.toBeNull();
    expect((await memory.inspect('m'))?.owner).toBe(owner);
    expect(() => storeFromUrl(new URL('sqlite://host/x.sqlite'))).toThrow(/no host/);
    expect(() => storeFromUrl(new URL('sqlite:/x?table=bad-name'))).toThrow(/identifier/);
    expect(() => storeFromUrl(new URL('sqlite:/x?driver=mysql'))).toThrow(/driver/);
  });

  it('wraps a better-sqlite3 Database and leaves it open on close', async () => {
    const db = new Database(':memory:');
    const store = storeFromClient(db);
    const owner = newOwner();
    expect(await store.acquire('c', owner, 10_000)).not.toBeNull();
    await store.close?.();
    const row = db.prepare('SELECT owner FROM cachelock_locks WHERE key = ?').get('c') as {
      owner: string;
    };
    expect(row.owner).toBe(owner);
    db.close();
    expect(() => sqliteStore({} as never)).toThrow(TypeError);
  });

  it('rejects (never grants) when another connection holds the write lock too long', async () => {
    const path = freshPath();
    const store = sqliteStore(path, { busyTimeout: 50 });
    stores.push(store);
    await store.inspect('warm');
    const blocker = new Database(path);
    blocker.exec('BEGIN IMMEDIATE');
    try {
      await expect(store.acquire('busy', newOwner(), 10_000)).rejects.toThrow(/locked|busy/i);
    } finally {
      blocker.exec('ROLLBACK');
      blocker.close();
    }
    expect(await store.acquire('busy', newOwner(), 10_000)).not.toBeNull();
  });

  it('rejects after close', async () => {
    const store = sqliteStore(freshPath());
    await store.close?.();
    await expect(store.acquire('x', newOwner(), 1_000)).rejects.toThrow(/closed/);
  });
});

describe('sqlite store across processes', () => {
  let contender: string;
  let killedHolder: string;

  beforeAll(async () => {
    contender = await bundleChild(join(fixtures, 'contender.ts'));
    killedHolder = await bundleChild(join(fixtures, 'killed-holder.ts'));
  });

  afterAll(() => {
    for (const script of [contender, killedHolder]) {
      if (script) rmSync(dirname(script), { recursive: true, force: true });
    }
  });

  it('many short-lived processes opening one new file at once: all open, one takes the key', async () => {
    const path = freshPath();
    const results = await Promise.all(
      Array.from({ length: 16 }, async (_, i) => {
        const { stdout } = await run(process.execPath, [
          contender,
          path,
          'shared',
          `p${i}:1:x:1`,
          '60000',
        ]);
        return JSON.parse(stdout) as { ok: boolean; fence: string | null; error?: string };
      }),
    );
    expect(results.filter((r) => !r.ok)).toEqual([]);
    expect(results.filter((r) => r.fence !== null)).toHaveLength(1);
  });

  it('a holder SIGKILLed inside its acquire transaction leaves the key free', async () => {
    const path = freshPath();
    const child = spawn(process.execPath, [killedHolder, path, 'victim'], {
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    const exited = new Promise<NodeJS.Signals | null>((resolve) =>
      child.once('exit', (_, signal) => resolve(signal)),
    );
    await new Promise<void>((resolve, reject) => {
      child.stdout.on('data', (chunk: Buffer) => {
        if (chunk.toString().includes('in-transaction')) resolve();
      });
      child.once('exit', () => reject(new Error('the child exited before its transaction')));
    });
    const store = open(path);
    const owner = newOwner();
    // Waits (busy timeout) while the child is inside its transaction, then gets the key.
    const acquired = await store.acquire('victim', owner, 10_000);
    expect(await exited).toBe('SIGKILL');
    expect(acquired).not.toBeNull();
    expect((await store.inspect('victim'))?.owner).toBe(owner);
  });
});
