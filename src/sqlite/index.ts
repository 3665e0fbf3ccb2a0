import { statSync } from 'node:fs';
import { homedir } from 'node:os';
import { resolve } from 'node:path';
import {
  type Acquired,
  type AcquiredKeys,
  type AcquireOptions,
  type Duration,
  type Handoff,
  isLentPool,
  type LeaseInfo,
  type LentPool,
  type LockStore,
  Refusals,
  type SharedLeases,
  type StoreCapabilities,
  toMs,
} from 'cachelock';
import { Bells } from '../local/bells.js';
import { prepareAcquire } from './acquire.js';
import {
  isSqliteDatabase,
  openDatabase,
  type SqliteDatabase,
  type SqliteDriver,
} from './driver.js';
import { prepareExtend } from './extend.js';
import { prepareFile } from './files.js';
import { prepareInspect } from './inspect.js';
import { prepareKeysAcquire, prepareKeysExtend, prepareKeysRelease } from './keys.js';
import type { NextInLine } from './line.js';
import { prepareRelease } from './release.js';
import { isMemoryPath, prepareDatabase, tablesFor } from './schema.js';
import { prepareShared, type SharedSpace } from './shared.js';

export type { SqliteDatabase, SqliteDriver } from './driver.js';
export { isSqliteDatabase } from './driver.js';

export interface SqliteStoreOptions {
  /**
   * The leases table; a second table `<table>_fence` holds the fence counter and the sweep, a
   * third `<table>_shared` the permits and readers/writers.
   */
  table?: string;
  /**
   * How long an operation waits for another connection's write lock. Default `'5s'`. A
   * connection you pass keeps the busy timeout it has; it gets this one only if it had none.
   */
  busyTimeout?: Duration;
  /** Force a driver; by default `node:sqlite` where this Node.js has it, else better-sqlite3. */
  driver?: SqliteDriver;
  /**
   * The file holds this user's locks only (the CLI's default file): refuse it, or its folder,
   * if either is a symbolic link or belongs to another user, if group or others can write to the
   * folder, or read or write the file (or its -wal, -shm, -journal).
   * Default `false`: a file shared on purpose may belong to another user of the group, be
   * reached through a link and give the group access; only what anyone could write is refused.
   */
  private?: boolean;
}

const DEFAULT_TABLE = 'cachelock_locks';

interface Operations {
  acquire: ReturnType<typeof prepareAcquire>;
  release: ReturnType<typeof prepareRelease>;
  extend: ReturnType<typeof prepareExtend>;
  inspect: ReturnType<typeof prepareInspect>;
  keysAcquire: ReturnType<typeof prepareKeysAcquire>;
  keysRelease: ReturnType<typeof prepareKeysRelease>;
  keysExtend: ReturnType<typeof prepareKeysExtend>;
  permits: ReturnType<ReturnType<typeof prepareShared>>;
  rw: ReturnType<ReturnType<typeof prepareShared>>;
}

/**
 * A lock store in a SQLite file, shared by the processes of one machine.
 *
 * Leases are judged by `Date.now()` of the process that asks: SQLite has no clock of its own and
 * every process sharing the file runs on this machine, so they read the same wall clock. A jump
 * of that clock (an NTP step) shortens or lengthens the leases in flight by as much. Fences come
 * from one counter in the file, never below that clock in microseconds, so they keep rising even
 * for a file made anew (unless the clock has stepped back below the old fences' time).
 *
 * Several keys are taken in one transaction, all or none; permits and readers/writers are rows
 * of a third table, each operation one transaction. SQLite serialises the transactions of every
 * connection to the file, so none can pass a limit.
 *
 * Waiters for a key take places in a line in the file and are served first come, first served:
 * a free key goes to the first live place. A release wakes that waiter's process through its
 * bell (see src/local/bells.ts), so it need not wait for a poll; polling remains for what no
 * bell tells (an expired lease, a file shared between users or machines).
 *
 * Operations are synchronous SQLite calls: one waiting for another process's write lock blocks
 * the event loop for up to `busyTimeout` (transactions here last microseconds, so it rarely does).
 */
class SqliteStore implements LockStore {
  readonly kind = 'sqlite';
  readonly atomic = true;
  /**
   * A release hands the key to the first waiter in line in its own transaction (a lease for the
   * place's claim), and its ring says so; none is told to a waiter that was refused after it.
   */
  readonly handoffGrants = true;
  /** A ring that came while nobody listened for its key is told to the next listener. */
  readonly replaysWakeups = true;
  readonly #source: string | SqliteDatabase | LentPool<SqliteDatabase>;
  readonly #options: SqliteStoreOptions;
  readonly #busyTimeoutMs: number;
  readonly #tables;
  readonly capabilities: StoreCapabilities;
  #db: SqliteDatabase | undefined;
  #ready: Promise<Operations> | undefined;
  // A lent pool may hand out a new connection after an old one is gone: statements per connection.
  #lent = new WeakMap<SqliteDatabase, Promise<Operations>>();
  #closed = false;
  /** Wake-ups between the processes sharing the file; undefined in memory or until opened. */
  #bells: Bells | undefined;
  readonly #listeners = new Map<string, Set<(handoff?: Handoff) => void>>();
  /** Per key listened for, a wake-up when the lease a waiter was refused by runs out. */
  readonly #expiries = new Map<string, { at: number; timer: NodeJS.Timeout }>();
  /** Each waiter's last refusal: the fence counter as it read it. */
  readonly #refusedAt = new Refusals();
  /**
   * Per key, its last rings (at most `RECENT_RINGS`, newest last), told again to a listener that
   * subscribes within `RECENT_MS` of one: a waiter between its refusal and its subscription
   * misses none (as Redis replays its channel's last wake-ups). A refusal whose place has no
   * bell yet counts as one, so that its waiter tries again as soon as it listens.
   */
  readonly #recent = new Map<string, { at: number; handoff: Handoff | undefined }[]>();

  constructor(
    source: string | SqliteDatabase | LentPool<SqliteDatabase>,
    options: SqliteStoreOptions,
  ) {
    this.#source = source;
    this.#options = options;
    this.#busyTimeoutMs = toMs('busyTimeout', options.busyTimeout ?? 5_000);
    this.#tables = tablesFor(options.table ?? DEFAULT_TABLE);
    this.capabilities = {
      keys: {
        acquire: (keys, owner, ttlMs): Promise<AcquiredKeys | null> =>
          this.#run((ops) => ops.keysAcquire(keys, owner, ttlMs)),
        release: async (keys, owner, keepMs) => {
          const { held, next } = await this.#run((ops) => ops.keysRelease(keys, owner, keepMs));
          for (const [key, first] of next) this.#ring(key, first);
          return held;
        },
        extend: (keys, owner, ttlMs) => this.#run((ops) => ops.keysExtend(keys, owner, ttlMs)),
      },
      permits: this.#shared('permits'),
      readersWriters: this.#shared('rw'),
    };
  }

  #shared(space: SharedSpace): SharedLeases {
    return {
      acquire: (key, owner, ttlMs, request) =>
        this.#run((ops) => ops[space].acquire(key, owner, ttlMs, request)),
      release: (key, owner, keepMs) => this.#run((ops) => ops[space].release(key, owner, keepMs)),
      extend: (key, owner, ttlMs) => this.#run((ops) => ops[space].extend(key, owner, ttlMs)),
      inspect: (key) => this.#run((ops) => ops[space].inspect(key)),
    };
  }

  /** The file this store uses, or `':memory:'`; undefined for a database the user opened. */
  get path(): string | undefined {
    return typeof this.#source === 'string' ? this.#source : undefined;
  }

  #operations(): Promise<Operations> {
    if (this.#closed) return Promise.reject(new Error('cachelock/sqlite: the store is closed'));
    this.#ready ??= this.#open().catch((error) => {
      // Let the next call try again (the file's folder may have appeared, a lock gone).
      this.#ready = undefined;
      throw error;
    });
    return this.#ready;
  }

  /**
   * Run one operation: on the store's database, or on a connection borrowed from an ORM's pool
   * for just this operation (so that it waits for, rather than joins, a transaction there).
   */
  async #run<T>(operation: (ops: Operations) => T): Promise<T> {
    const source = this.#source;
    if (!isLentPool(source)) return operation(await this.#operations());
    if (this.#closed) throw new Error('cachelock/sqlite: the store is closed');
    return source.borrow(async (db) => {
      let ready = this.#lent.get(db);
      if (ready === undefined) {
        ready = this.#prepare(db, false);
        this.#lent.set(db, ready);
        ready.catch(() => this.#lent.delete(db));
      }
      return operation(await ready);
    });
  }

  async #prepare(db: SqliteDatabase, owns: boolean): Promise<Operations> {
    await prepareDatabase(db, this.#tables, {
      busyTimeoutMs: this.#busyTimeoutMs,
      ownsDatabase: owns,
    });
    this.#bells ??= bellsFor(db, (key, handoff) => this.#heard(key, handoff));
    if (this.#listeners.size > 0) this.#bells?.open();
    const shared = prepareShared(db, this.#tables);
    return {
      acquire: prepareAcquire(db, this.#tables),
      release: prepareRelease(db, this.#tables),
      extend: prepareExtend(db, this.#tables),
      inspect: prepareInspect(db, this.#tables),
      keysAcquire: prepareKeysAcquire(db, this.#tables),
      keysRelease: prepareKeysRelease(db, this.#tables),
      keysExtend: prepareKeysExtend(db, this.#tables),
      permits: shared('permits'),
      rw: shared('rw'),
    };
  }

  async #open(): Promise<Operations> {
    const owns = typeof this.#source === 'string';
    let db: SqliteDatabase;
    if (typeof this.#source === 'string') {
      if (!isMemoryPath(this.#source)) {
        prepareFile(this.#source, { private: this.#options.private === true });
      }
      db = (await openDatabase(this.#source, this.#options.driver)).db;
    } else {
      db = this.#source as SqliteDatabase;
    }
    let operations: Operations;
    try {
      operations = await this.#prepare(db, owns);
      if (this.#closed) throw new Error('cachelock/sqlite: the store is closed');
    } catch (error) {
      if (owns) db.close();
      throw error;
    }
    this.#db = db;
    return operations;
  }

  async acquire(
    key: string,
    owner: string,
    ttlMs: number,
    options?: AcquireOptions,
  ): Promise<Acquired | null> {
    const lineMs = options?.lineMs;
    const granted = await this.#run((ops) => {
      if (lineMs === undefined) return ops.acquire(key, owner, ttlMs);
      // Listening before the place is taken, so that the place carries the bell.
      this.#bells?.open();
      const bell = this.#bells?.bell;
      return ops.acquire(key, owner, ttlMs, {
        lineMs,
        bell,
        placed: this.#refusedAt.has(owner),
        heldUntil: (at) => this.#wakeAt(key, at),
        refused: (counter) => {
          this.#refusedAt.refused(owner, counter);
          // No bell rings for this place: the waiter tries again as soon as it listens.
          if (bell === undefined) this.#remember(key, undefined);
        },
      });
    });
    if (granted !== null) this.#refusedAt.forget(owner);
    return granted;
  }

  async release(key: string, owner: string, keepMs?: number): Promise<boolean> {
    this.#refusedAt.forget(owner);
    const { held, next } = await this.#run((ops) => ops.release(key, owner, keepMs));
    if (next !== undefined) this.#ring(key, next);
    return held;
  }

  /**
   * Wake-ups for `key`: a release rings the process of the first waiter in line (one that joined
   * with `lineMs`), which calls its listeners for the key.
   */
  onRelease(key: string, listener: (handoff?: Handoff) => void): () => void {
    let listeners = this.#listeners.get(key);
    if (listeners === undefined) this.#listeners.set(key, (listeners = new Set()));
    // A fresh function per subscription, so that one listener subscribed twice is two.
    const call = (handoff?: Handoff) => listener(handoff);
    listeners.add(call);
    this.#bells?.open();
    const since = Date.now() - RECENT_MS;
    const missed = this.#recent.get(key)?.filter((ring) => ring.at > since);
    if (missed !== undefined && missed.length > 0) {
      // Told after `onRelease` returns, as the contract asks.
      queueMicrotask(() => {
        for (const ring of missed) {
          if (this.#listeners.get(key)?.has(call)) this.#tell(call, ring.handoff);
        }
      });
    }
    return () => {
      const now = this.#listeners.get(key);
      if (now === undefined) return;
      now.delete(call);
      if (now.size > 0) return;
      this.#listeners.delete(key);
      clearTimeout(this.#expiries.get(key)?.timer);
      this.#expiries.delete(key);
    };
  }

  /**
   * A lease that runs out is not released, so no bell rings: the waiters of this store are told
   * when the lease they were refused by ends (an extended lease only brings one early try).
   */
  #wakeAt(key: string, at: number): void {
    // Set before the waiter listens too: it is refused first, and only then subscribes.
    if (this.#expiries.get(key)?.at === at) return;
    clearTimeout(this.#expiries.get(key)?.timer);
    const timer = setTimeout(
      () => {
        this.#expiries.delete(key);
        this.#heard(key);
      },
      Math.min(2_147_483_647, Math.max(0, at - Date.now() + 1)),
    );
    timer.unref();
    this.#expiries.set(key, { at, timer });
  }

  #ring(key: string, { bell, handoff }: NextInLine): void {
    if (bell !== null) this.#bells?.ring(bell, key, handoff);
    // Without bells (a database in memory) a waiter can only be in this process.
    else if (this.#bells?.bell === undefined) queueMicrotask(() => this.#heard(key, handoff));
  }

  #heard(key: string, handoff?: Handoff): void {
    this.#remember(key, handoff);
    const listeners = this.#listeners.get(key);
    if (listeners === undefined) return;
    for (const listener of [...listeners]) this.#tell(listener, handoff);
  }

  #tell(listener: (handoff?: Handoff) => void, handoff: Handoff | undefined): void {
    if (handoff === undefined) {
      listener();
      return;
    }
    const told = this.#refusedAt.checked(handoff);
    if (told !== undefined) listener(told);
  }

  #remember(key: string, handoff: Handoff | undefined): void {
    let rings = this.#recent.get(key);
    if (rings === undefined) {
      // The keys rung longest ago go first, once there are many.
      if (this.#recent.size >= RECENT_KEYS) {
        this.#recent.delete(this.#recent.keys().next().value as string);
      }
      this.#recent.set(key, (rings = []));
    }
    rings.push({ at: Date.now(), handoff });
    if (rings.length > RECENT_RINGS) rings.shift();
  }

  async extend(key: string, owner: string, ttlMs: number): Promise<boolean> {
    return this.#run((ops) => ops.extend(key, owner, ttlMs));
  }

  async inspect(key: string): Promise<LeaseInfo | null> {
    return this.#run((ops) => ops.inspect(key));
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    await this.#ready?.catch(() => undefined);
    this.#bells?.close();
    this.#listeners.clear();
    this.#recent.clear();
    for (const { timer } of this.#expiries.values()) clearTimeout(timer);
    this.#expiries.clear();
    if (typeof this.#source === 'string') this.#db?.close();
    this.#db = undefined;
  }
}

/** How long, and how many of, a key's last rings are told to a listener that comes after them. */
const RECENT_MS = 1_000;
const RECENT_RINGS = 4;
const RECENT_KEYS = 1_000;

/**
 * A store in the SQLite file at `pathOrDatabase` (created with its missing folders on first use,
 * folders 0700 and file 0600; an unsafe existing one is refused, see `private`), or `':memory:'`, or in a better-sqlite3 `Database` / `node:sqlite`
 * `DatabaseSync` you opened (the store does not close it).
 */
export function sqliteStore(
  pathOrDatabase: string | SqliteDatabase,
  options: SqliteStoreOptions = {},
): LockStore {
  if (typeof pathOrDatabase === 'string') {
    const path = isMemoryPath(pathOrDatabase) ? ':memory:' : resolvePath(pathOrDatabase);
    return new SqliteStore(path, options);
  }
  if (!isSqliteDatabase(pathOrDatabase)) {
    throw new TypeError(
      'sqliteStore: expected a file path, ":memory:", a better-sqlite3 Database or a node:sqlite DatabaseSync',
    );
  }
  return new SqliteStore(pathOrDatabase, options);
}

/**
 * Bells for the file `db` has open as its main database, named after its device and inode so
 * that every path to it finds the same folder; undefined for a database in memory.
 */
function bellsFor(
  db: SqliteDatabase,
  onRing: (key: string, handoff?: Handoff) => void,
): Bells | undefined {
  try {
    const main = db.prepare("SELECT file FROM pragma_database_list WHERE name = 'main'").get();
    const file = typeof main?.file === 'string' ? main.file : '';
    if (file === '') return undefined;
    const { dev, ino } = statSync(file, { bigint: true });
    return new Bells(`${dev.toString(36)}-${ino.toString(36)}`, onRing);
  } catch {
    return undefined;
  }
}

function resolvePath(path: string): string {
  if (path === '~' || path.startsWith('~/')) return resolve(homedir(), path.slice(2));
  return resolve(path);
}

/**
 * `sqlite:/abs/path` (or `sqlite:///abs/path`), `sqlite:relative/path` (from the working
 * directory), `sqlite:~/path` (from the home directory) and `sqlite::memory:`. Query parameters:
 * `table`, `busyTimeout` (a duration), `driver` (`node:sqlite` or `better-sqlite3`), `private`
 * (`sqlite:/path?private`, or `=true`/`=false`).
 */
export function storeFromUrl(url: URL): LockStore {
  if (url.host !== '') {
    throw new TypeError(
      `cachelock/sqlite: a sqlite: URL names a local file and has no host, got ${JSON.stringify(url.href)}; use sqlite:/abs/path or sqlite:relative/path`,
    );
  }
  const path = decodeURIComponent(url.pathname);
  if (path === '' || path === '/') {
    throw new TypeError(`cachelock/sqlite: ${JSON.stringify(url.href)} names no file`);
  }
  const options: SqliteStoreOptions = {};
  const table = url.searchParams.get('table');
  if (table !== null) options.table = table;
  const busyTimeout = url.searchParams.get('busyTimeout');
  if (busyTimeout !== null) {
    options.busyTimeout = /^\d+(\.\d+)?$/.test(busyTimeout) ? Number(busyTimeout) : busyTimeout;
  }
  const driver = url.searchParams.get('driver');
  if (driver !== null) {
    if (driver !== 'node:sqlite' && driver !== 'better-sqlite3') {
      throw new TypeError(
        `cachelock/sqlite: driver must be node:sqlite or better-sqlite3, got ${JSON.stringify(driver)}`,
      );
    }
    options.driver = driver;
  }
  const only = url.searchParams.get('private');
  if (only !== null) {
    if (!['', 'true', 'false'].includes(only)) {
      throw new TypeError(
        `cachelock/sqlite: private must be true or false, got ${JSON.stringify(only)}`,
      );
    }
    options.private = only !== 'false';
  }
  return sqliteStore(path, options);
}

/**
 * Wrap a better-sqlite3 `Database` or `node:sqlite` `DatabaseSync`, or a pool of them an ORM
 * lends (knex: one connection per operation); `close()` leaves it open.
 */
export function storeFromClient(client: unknown): LockStore {
  if (isLentPool(client)) {
    if (client.dialect !== 'sqlite') {
      throw new TypeError(`cachelock/sqlite: ${client.library} is not on SQLite`);
    }
    return new SqliteStore(client as LentPool<SqliteDatabase>, {});
  }
  return sqliteStore(client as SqliteDatabase);
}
