import { execFile, spawn } from 'node:child_process';
import {
  chmodSync,
  chownSync,
  mkdirSync,
  mkdtempSync,
  rmSync,
  statSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import Database from 'better-sqlite3';
import { isLockStore, type LockStore, newOwner } from 'cachelock';
import { type SqliteDriver, sqliteStore, storeFromClient, storeFromUrl } from 'cachelock/sqlite';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { bundleChild } from '../support/bundle.js';
import { nodeSqliteOrSkip } from '../support/node-sqlite.js';

const run = promisify(execFile);
const fixtures = fileURLToPath(new URL('./fixtures/', import.meta.url));

type Connection = { exec(sql: string): unknown; close(): unknown };
const NodeDatabase = nodeSqliteOrSkip('sqlite store over node:sqlite');
// A second connection in this process goes through the store's own SQLite library: two copies
// of SQLite in one process do not see each other's locks.
const libraries: [SqliteDriver, (path: string) => Connection][] = [
  ['better-sqlite3', (path) => new Database(path)],
];
if (NodeDatabase) libraries.push(['node:sqlite', (path) => new NodeDatabase(path)]);

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

  it.each(libraries)(
    'rejects (never grants) when another connection holds the write lock too long (%s)',
    async (driver, openDatabase) => {
      const path = freshPath();
      const store = sqliteStore(path, { busyTimeout: 50, driver });
      stores.push(store);
      await store.inspect('warm');
      const blocker = openDatabase(path);
      blocker.exec('BEGIN IMMEDIATE');
      try {
        await expect(store.acquire('busy', newOwner(), 10_000)).rejects.toThrow(/locked|busy/i);
      } finally {
        blocker.exec('ROLLBACK');
        blocker.close();
      }
      expect(await store.acquire('busy', newOwner(), 10_000)).not.toBeNull();
    },
  );

  it.each(libraries)(
    "a connection whose BEGIN met another's write lock waits stepwise, rejects at its busy timeout and keeps that timeout (%s)",
    async (_driver, openDatabase) => {
      const path = freshPath();
      mkdirSync(dirname(path), { recursive: true });
      const db = openDatabase(path) as Connection & {
        prepare(sql: string): { get(): Record<string, unknown> | undefined };
      };
      db.exec('PRAGMA busy_timeout = 50');
      db.exec('PRAGMA journal_mode = WAL');
      const timeout = () => Number(Object.values(db.prepare('PRAGMA busy_timeout').get() ?? {})[0]);
      // The store's connection, noting the runs of its BEGIN IMMEDIATE: when each began, and
      // the stack limit errors were made with then.
      let tries: { at: number; stackTraceLimit: number }[] = [];
      const counted = new Proxy(db, {
        get(target, name) {
          if (name !== 'prepare') {
            const value = Reflect.get(target, name);
            // Its constructor as it is: the store tells the drivers apart by its name.
            if (name === 'constructor' || typeof value !== 'function') return value;
            return value.bind(target);
          }
          return (sql: string) => {
            const statement = target.prepare(sql) as unknown as Record<string, unknown>;
            if (sql !== 'BEGIN IMMEDIATE') return statement;
            return new Proxy(statement, {
              get(inner, key) {
                const value = Reflect.get(inner, key) as (...args: unknown[]) => unknown;
                if (key === 'run') {
                  tries.push({ at: performance.now(), stackTraceLimit: Error.stackTraceLimit });
                }
                return typeof value === 'function' ? value.bind(inner) : value;
              },
            });
          };
        },
      });
      const store = sqliteStore(counted as never);
      stores.push(store);
      await store.inspect('warm');
      const blocker = openDatabase(path);
      blocker.exec('BEGIN IMMEDIATE');
      try {
        const stackTraceLimit = Error.stackTraceLimit;
        // The first try waits in SQLite's busy handler; the next ones, stepwise (three of them:
        // one pre-empted through its first 0.2 ms would show no spin).
        let spun = 0;
        for (const stepwise of [false, true, true, true]) {
          tries = [];
          const error = await store.acquire('busy', newOwner(), 10_000).catch((e: Error) => e);
          expect(String(error)).toMatch(/locked|busy/i);
          // The failure has a stack, the caller's, though the tries were made without.
          expect((error as Error).stack).toMatch(/\n\s+at /);
          expect(timeout()).toBe(50);
          expect(Error.stackTraceLimit).toBe(stackTraceLimit);
          if (!stepwise) {
            expect(tries.length).toBe(1);
            continue;
          }
          expect(tries.every((t) => t.stackTraceLimit === 0)).toBe(true);
          // At once for the first 0.2 ms (in WAL), then after pauses of 25 us and more.
          const first = tries[0]!.at;
          spun = Math.max(spun, tries.filter((t) => t.at - first < 0.2).length);
          const late = tries.filter((t) => t.at - first > 1);
          const gaps = late.slice(1).map((t, i) => t.at - late[i]!.at);
          expect(gaps.reduce((sum, gap) => sum + gap, 0) / gaps.length).toBeGreaterThan(0.02);
        }
        expect(spun).toBeGreaterThanOrEqual(2);
      } finally {
        blocker.exec('ROLLBACK');
        blocker.close();
      }
      const owner = newOwner();
      expect(await store.acquire('busy', owner, 10_000)).not.toBeNull();
      expect(await store.release('busy', owner)).toBe(true);
      expect(timeout()).toBe(50);
      await store.close?.();
      db.close();
    },
  );

  it('rejects after close', async () => {
    const store = sqliteStore(freshPath());
    await store.close?.();
    await expect(store.acquire('x', newOwner(), 1_000)).rejects.toThrow(/closed/);
  });
});

describe('sqlite store paths', () => {
  const root = process.getuid?.() === 0;
  let base: string;
  const folder = (name: string, mode = 0o700) => {
    const path = join(base, name);
    mkdirSync(path, { mode });
    chmodSync(path, mode); // past the umask
    return path;
  };
  const file = (path: string, mode: number) => {
    writeFileSync(path, '', { mode });
    chmodSync(path, mode);
    return path;
  };
  /** The first operation's outcome: undefined when it worked, else the error's message. */
  const opening = async (path: string, isPrivate: boolean) => {
    const store = sqliteStore(path, { private: isPrivate });
    stores.push(store);
    try {
      await store.inspect('k');
      return undefined;
    } catch (error) {
      return (error as Error).message;
    }
  };

  beforeAll(() => {
    base = mkdtempSync(join(tmpdir(), 'cachelock-sqlite-paths-'));
  });
  afterAll(() => rmSync(base, { recursive: true, force: true }));

  it('private: refuses a folder group or others can write, naming it and its mode', async () => {
    const loose = folder('loose-group', 0o770);
    expect(await opening(join(loose, 'locks.sqlite'), true)).toBe(
      `cachelock/sqlite: refusing ${loose}: group or others can write to it (mode 0770), so they could replace ${join(loose, 'locks.sqlite')}; chmod 700 it`,
    );
    const open = folder('loose-others', 0o757);
    expect(await opening(join(open, 'locks.sqlite'), true)).toMatch(/mode 0757/);
    // Refused before anything was created in it.
    expect(() => statSync(join(loose, 'locks.sqlite'))).toThrow();
  });

  it('private: refuses an existing file group or others can read or write', async () => {
    for (const mode of [0o644, 0o660, 0o606]) {
      const path = file(join(folder(`file-${mode.toString(8)}`), 'locks.sqlite'), mode);
      expect(await opening(path, true)).toBe(
        `cachelock/sqlite: refusing ${path}: group or others can read or write it (mode 0${mode.toString(8)}); chmod 600 it`,
      );
    }
    // A companion file left readable by an older version is refused too.
    const path = file(join(folder('wal'), 'locks.sqlite'), 0o600);
    file(`${path}-wal`, 0o644);
    expect(await opening(path, true)).toMatch(`refusing ${path}-wal: group or others`);
  });

  it('private: refuses a symbolic link as the file or as its folder', async () => {
    const real = file(join(folder('real'), 'locks.sqlite'), 0o600);
    const linked = join(folder('link'), 'locks.sqlite');
    symlinkSync(real, linked);
    expect(await opening(linked, true)).toBe(
      `cachelock/sqlite: refusing ${linked}: it is a symbolic link; point the path at the file itself`,
    );
    // A dangling link is not followed to create its target either.
    const dangling = join(folder('dangling'), 'locks.sqlite');
    symlinkSync(join(base, 'nowhere', 'target'), dangling);
    expect(await opening(dangling, true)).toMatch(/is a symbolic link/);
    const linkedFolder = join(base, 'linked-folder');
    symlinkSync(folder('target-folder'), linkedFolder);
    expect(await opening(join(linkedFolder, 'locks.sqlite'), true)).toMatch(
      `refusing ${linkedFolder}: it is a symbolic link`,
    );
  });

  it.runIf(root)('private: refuses a file or folder that belongs to another user', async () => {
    const theirs = folder('theirs');
    chownSync(theirs, 65534, 65534);
    expect(await opening(join(theirs, 'locks.sqlite'), true)).toMatch(
      `refusing ${theirs}: it belongs to uid 65534, not to this user (uid 0)`,
    );
    const path = file(join(folder('their-file'), 'locks.sqlite'), 0o600);
    chownSync(path, 65534, 65534);
    expect(await opening(path, true)).toMatch(`refusing ${path}: it belongs to uid 65534`);
  });

  it('private: opens a safe existing file, and makes new folders 0700 and the file 0600', async () => {
    const path = file(join(folder('safe'), 'locks.sqlite'), 0o600);
    expect(await opening(path, true)).toBeUndefined();
    const fresh = join(base, 'new', 'deeper', 'locks.sqlite');
    expect(await opening(fresh, true)).toBeUndefined();
    expect(statSync(join(base, 'new')).mode & 0o777).toBe(0o700);
    expect(statSync(join(base, 'new', 'deeper')).mode & 0o777).toBe(0o700);
    expect(statSync(fresh).mode & 0o777).toBe(0o600);
  });

  it('shared (a path given by the user): accepts group access and links, refuses what anyone can write', async () => {
    const group = folder('group', 0o2770);
    const shared = file(join(group, 'locks.sqlite'), 0o660);
    expect(await opening(shared, false)).toBeUndefined();
    const linked = join(folder('shared-link'), 'locks.sqlite');
    symlinkSync(shared, linked);
    expect(await opening(linked, false)).toBeUndefined();

    const world = file(join(folder('world-file'), 'locks.sqlite'), 0o666);
    expect(await opening(world, false)).toBe(
      `cachelock/sqlite: refusing ${world}: anyone can write it (mode 0666), and so take or remove any lock; chmod o-w it`,
    );
    const open = folder('world-folder', 0o777);
    expect(await opening(join(open, 'locks.sqlite'), false)).toMatch(
      `refusing ${open}: anyone can write to it (mode 0777)`,
    );
    // A sticky folder such as /tmp: others may add files but not replace this one.
    const sticky = folder('sticky', 0o1777);
    expect(await opening(join(sticky, 'locks.sqlite'), false)).toBeUndefined();
  });

  it('refuses what is not a regular file, without waiting on a FIFO', async () => {
    const fifo = join(folder('fifo'), 'locks.sqlite');
    await run('mkfifo', [fifo]);
    for (const isPrivate of [true, false]) {
      expect(await opening(fifo, isPrivate)).toBe(
        `cachelock/sqlite: refusing ${fifo}: it is not a regular file`,
      );
    }
    const notAFolder = file(join(folder('plain'), 'file'), 0o600);
    expect(await opening(join(notAFolder, 'locks.sqlite'), false)).toMatch(
      `${notAFolder} is not a folder`,
    );
  });

  it('reads the private parameter of a sqlite: URL', async () => {
    const loose = folder('url-loose', 0o770);
    const href = `sqlite:${join(loose, 'locks.sqlite')}`;
    for (const [query, refused] of [
      ['?private', true],
      ['?private=true', true],
      ['?private=false', false],
      ['', false],
    ] as const) {
      const store = storeFromUrl(new URL(href + query));
      stores.push(store);
      const outcome = await store.inspect('k').then(
        () => undefined,
        (error: Error) => error.message,
      );
      if (refused) expect(outcome, query).toMatch(/group or others can write/);
      else expect(outcome, query).toBeUndefined();
    }
    expect(() => storeFromUrl(new URL(`${href}?private=yes`))).toThrow(/private must be/);
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

  it('a path under /proc fails quickly instead of spinning', async () => {
    const started = performance.now();
    // In a child process with a deadline: the old recursive mkdirSync never returned.
    const { stdout } = await run(process.execPath, [contender, '/proc/nope/x', 'k', 'o', '1000'], {
      timeout: 10_000,
      killSignal: 'SIGKILL',
    });
    const result = JSON.parse(stdout) as { ok: boolean; error?: string };
    expect(result.ok).toBe(false);
    expect(result.error).toContain('cannot create the folder /proc/nope of /proc/nope/x');
    expect(performance.now() - started).toBeLessThan(5_000);
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
