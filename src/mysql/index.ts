import {
  type Acquired,
  type AcquiredKeys,
  type AcquireOptions,
  isLentPool,
  type LeaseInfo,
  type LockStore,
  type StoreCapabilities,
} from 'cachelock';
import { prepareAcquire } from './acquire.js';
import {
  type Db,
  isMariadb,
  isMysql2,
  lentDb,
  lentOpener,
  loadDriver,
  mariadbOpener,
  mysql2Config,
  mysql2Opener,
  type Opener,
  referencedWhileLent,
  wrapDb,
} from './connection.js';
import { prepareExtend } from './extend.js';
import { prepareInspect } from './inspect.js';
import { prepareManyAcquire, prepareManyExtend } from './keys.js';
import { Wakeups } from './listener.js';
import { keyId, lockName, type TableName, tableName } from './names.js';
import { prepareRelease } from './release.js';
import { createSharedTable, createTable, isMissingTable } from './schema.js';
import { MysqlShared, prepareSharedSweep } from './shared.js';
import { prepareSweep, SWEEP_EVERY, SWEEP_LIMIT } from './sweep.js';

export interface MysqlStoreOptions {
  /** The leases table, created on first use. Default `'cachelock_locks'`. */
  table?: string;
  /** Its database; by default the connection's current database. */
  database?: string;
  /** Push wake-ups through named locks (GET_LOCK). Default `true`; `false` makes waiters poll. */
  listen?: boolean;
  /**
   * How the store opens its own connections for wake-ups, for a mariadb `Pool` or `Connection`
   * (the driver does not show the settings it was made with): the options or URL you gave
   * `mariadb.createPool`. mysql2 clients need nothing: their settings are reused. Without it a
   * mariadb client's waiters poll.
   */
  connection?: Record<string, unknown> | string;
}

interface StoreSetup extends MysqlStoreOptions {
  /** Ends the pool on close: the store opened it from a URL. */
  end?: () => Promise<void>;
  opener?: Opener;
}

const DEFAULT_TABLE = 'cachelock_locks';

/**
 * Locks in a MySQL or MariaDB table. Every lease is judged by the server's clock, so the
 * clients' clocks do not matter. Each operation is one statement and one round trip in the
 * usual case; the first one of a store also creates the table if it is missing.
 *
 * Nothing is left behind per key: a release deletes its row, and every few acquisitions the
 * store deletes a bounded batch of expired rows of any key, so a key never used again goes too.
 */
class MysqlStore implements LockStore {
  readonly kind = 'mysql';
  readonly atomic = true;
  onRelease?: (key: string, listener: () => void) => () => void;
  readonly #db: Db;
  readonly #table: TableName;
  readonly #wakeups: Wakeups | undefined;
  readonly #acquire;
  readonly #release;
  readonly #extend;
  readonly #inspect;
  readonly #sweep;
  // Starts full, so that a store's first acquisition sweeps: short-lived processes help too.
  #sinceSweep = SWEEP_EVERY;
  #sweeping: Promise<unknown> | undefined;
  #ready: Promise<void> | undefined;
  #sharedReady: Promise<void> | undefined;
  #sharedUsed = false;
  #closed = false;
  #busy = 0;
  #stayUp: ReturnType<typeof setInterval> | undefined;
  readonly capabilities: StoreCapabilities;

  constructor(db: Db, setup: StoreSetup) {
    this.#db = db;
    this.#table = tableName(setup.table ?? DEFAULT_TABLE, setup.database);
    this.#acquire = prepareAcquire(db, this.#table);
    this.#release = prepareRelease(db, this.#table);
    this.#extend = prepareExtend(db, this.#table);
    this.#inspect = prepareInspect(db, this.#table);
    const sweepLeases = prepareSweep(db, this.#table);
    const sweepShared = prepareSharedSweep(db, this.#table);
    this.#sweep = async () => {
      await sweepLeases();
      if (this.#sharedUsed) await sweepShared(SWEEP_LIMIT);
    };
    if (setup.listen !== false && setup.opener !== undefined) {
      const wakeups = new Wakeups(setup.opener);
      this.#wakeups = wakeups;
      this.onRelease = (key, listener) => wakeups.subscribe(this.#name(key), () => listener());
    }
    const manyAcquire = prepareManyAcquire(db, this.#table);
    const manyExtend = prepareManyExtend(db, this.#table);
    const shared = <T>(operation: () => Promise<T>) => this.#runShared(operation);
    this.capabilities = {
      keys: {
        acquire: (keys, owner, ttlMs) =>
          this.#run(async (): Promise<AcquiredKeys | null> => {
            const result = await manyAcquire(keys, owner, ttlMs);
            this.#sweepNow();
            if ('refused' in result) {
              // Each key's waiter listens on it: the one that refused is the one to wait for.
              this.#wakeups?.refused(this.#name(keys[result.refused]!));
              return null;
            }
            for (const key of keys) this.#wakeups?.held(this.#name(key), owner, ttlMs);
            return result;
          }),
        release: async (keys, owner, keepMs) => {
          let all = true;
          for (const key of keys) if (!(await this.release(key, owner, keepMs))) all = false;
          return all;
        },
        extend: (keys, owner, ttlMs) =>
          this.#run(async () => {
            const extended = await manyExtend(keys, owner, ttlMs);
            for (const key of keys) {
              if (extended) this.#wakeups?.held(this.#name(key), owner, ttlMs);
            }
            return extended;
          }),
      },
      permits: new MysqlShared(db, this.#table, 'permits', shared, this.#wakeups),
      readersWriters: new MysqlShared(db, this.#table, 'rw', shared, this.#wakeups),
    };
    this.#end = setup.end;
  }

  readonly #end: (() => Promise<void>) | undefined;

  #name(key: string): string {
    return lockName(this.#table, keyId(key));
  }

  /**
   * Run `operation` once the table exists; create it again if it was dropped meanwhile. While
   * any operation is under way the process stays up, whatever the drivers do with the sockets
   * of idle connections (a pool opened from a URL lets them go unreferenced).
   */
  async #run<T>(operation: () => Promise<T>): Promise<T> {
    if (this.#closed) throw new Error('cachelock/mysql: the store is closed');
    if (this.#busy++ === 0) this.#stayUp = setInterval(() => {}, 60_000);
    try {
      this.#ready ??= createTable(this.#db, this.#table).catch((error) => {
        this.#ready = undefined;
        throw error;
      });
      await this.#ready;
      return await operation();
    } catch (error) {
      if (isMissingTable(error)) this.#ready = undefined;
      throw error;
    } finally {
      if (--this.#busy === 0) clearInterval(this.#stayUp);
    }
  }

  /** As `#run`, once the shared table exists too. */
  #runShared<T>(operation: () => Promise<T>): Promise<T> {
    return this.#run(async () => {
      this.#sharedReady ??= createSharedTable(this.#db, this.#table).catch((error) => {
        this.#sharedReady = undefined;
        throw error;
      });
      await this.#sharedReady;
      this.#sharedUsed = true;
      try {
        return await operation();
      } catch (error) {
        if (isMissingTable(error)) this.#sharedReady = undefined;
        throw error;
      } finally {
        this.#sweepNow();
      }
    });
  }

  acquire(
    key: string,
    owner: string,
    ttlMs: number,
    _options?: AcquireOptions,
  ): Promise<Acquired | null> {
    return this.#run(async () => {
      const acquired = await this.#acquire(key, owner, ttlMs);
      if (this.#wakeups !== undefined) {
        if (acquired !== null) this.#wakeups.held(this.#name(key), owner, ttlMs);
        else this.#wakeups.refused(this.#name(key));
      }
      this.#sweepNow();
      return acquired;
    });
  }

  // In the background, one at a time: an acquisition does not wait for it, and a failed sweep
  // only waits for the next.
  #sweepNow(): void {
    if (++this.#sinceSweep < SWEEP_EVERY || this.#sweeping !== undefined || this.#closed) return;
    this.#sinceSweep = 0;
    this.#sweeping = this.#sweep()
      .catch(() => undefined)
      .finally(() => {
        this.#sweeping = undefined;
      });
  }

  release(key: string, owner: string, keepMs?: number): Promise<boolean> {
    return this.#run(async () => {
      // The bell rings as the DELETE is sent: a waiter woken before it commits waits for the
      // row lock in its INSERT, one woken too early simply tries again.
      const name = this.#name(key);
      if (keepMs !== undefined && keepMs > 0) {
        const kept = await this.#release(key, owner, keepMs);
        if (kept) this.#wakeups?.held(name, owner, keepMs);
        else this.#wakeups?.let(name, owner);
        return kept;
      }
      const released = this.#release(key, owner);
      this.#wakeups?.let(name, owner);
      return released;
    });
  }

  extend(key: string, owner: string, ttlMs: number): Promise<boolean> {
    return this.#run(async () => {
      const extended = await this.#extend(key, owner, ttlMs);
      const name = this.#name(key);
      if (extended) this.#wakeups?.held(name, owner, ttlMs);
      else this.#wakeups?.let(name, owner);
      return extended;
    });
  }

  inspect(key: string): Promise<LeaseInfo | null> {
    return this.#run(() => this.#inspect(key));
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    await this.#sweeping;
    await this.#wakeups?.close();
    await this.#end?.();
  }
}

/** A mysql2 or mariadb pool or connection, of the promise API (mysql2's callback API too). */
export type MysqlClient = object;

/**
 * A store on your mysql2 or mariadb `Pool` (recommended: it reconnects) or `Connection`. The
 * store never ends it. For wake-ups it opens connections of its own with the same settings
 * (for a mariadb client, with `options.connection`): one that holds a named lock per key this
 * process holds, and one per key a waiter here waits for. Do not hand it a connection inside a
 * transaction: the store's statements would join it.
 */
export function mysqlStore(client: MysqlClient, options: MysqlStoreOptions = {}): LockStore {
  if (typeof options !== 'object' || options === null) {
    throw new TypeError(`mysqlStore: options must be an object, got ${String(options)}`);
  }
  const db = wrapDb(client);
  let opener: Opener | undefined;
  if (options.connection !== undefined) {
    const given = options.connection;
    if (typeof given !== 'string' && (typeof given !== 'object' || given === null)) {
      throw new TypeError(
        `mysqlStore: connection must be connection options or a URL, got ${typeof given}`,
      );
    }
    opener =
      db.driver === 'mariadb'
        ? mariadbOpener(typeof given === 'string' ? mariadbUrl(given) : given)
        : mysql2Opener(given as Record<string, unknown>);
  } else if (isMysql2(client)) {
    const config = mysql2Config(client);
    if (config !== undefined) opener = mysql2Opener(config);
  }
  return new MysqlStore(db, { ...options, opener });
}

// A store that opens its own pool fails fast rather than hanging when the server is gone.
const CONNECT_TIMEOUT_MS = 5_000;
const STORE_OPTIONS = ['table', 'database', 'listen', 'driver'] as const;

/**
 * `mysql://` and `mariadb://` URLs: the store opens a pool of the driver named by `driver=`
 * (`mysql2` or `mariadb`), else the first one installed (mysql2 first for `mysql://`, mariadb
 * first for `mariadb://`), and ends it on close. The URL's path names the connection's
 * database; `table`, `database` (where the table lives) and `listen=false` in the query string
 * are the store's options; other parameters go to the driver.
 */
export async function storeFromUrl(url: URL): Promise<LockStore> {
  const connection = new URL(url.href);
  const options: StoreSetup = {};
  let driver: string | undefined;
  for (const name of STORE_OPTIONS) {
    const value = connection.searchParams.get(name);
    if (value === null) continue;
    connection.searchParams.delete(name);
    if (name === 'listen') options.listen = value !== 'false' && value !== '0';
    else if (name === 'driver') driver = value;
    else options[name] = value;
  }
  if (driver !== undefined && driver !== 'mysql2' && driver !== 'mariadb') {
    throw new TypeError(
      `cachelock/mysql: driver must be mysql2 or mariadb, got ${JSON.stringify(driver)}`,
    );
  }
  // Validate the names before any connection is opened.
  tableName(options.table ?? DEFAULT_TABLE, options.database);
  const order: ('mysql2' | 'mariadb')[] =
    driver !== undefined
      ? [driver as 'mysql2' | 'mariadb']
      : url.protocol === 'mariadb:'
        ? ['mariadb', 'mysql2']
        : ['mysql2', 'mariadb'];
  let firstError: unknown;
  for (const name of order) {
    let module: Record<string, any>;
    try {
      module = (await loadDriver(name)) as Record<string, any>;
    } catch (error) {
      firstError ??= error;
      continue;
    }
    if (name === 'mysql2') {
      const uri = mysqlUrl(connection.href);
      const pool = module.createPool({ uri, connectTimeout: CONNECT_TIMEOUT_MS });
      // An idle connection the server ends is reported here; the next query reconnects.
      pool.on?.('error', () => {});
      const hold = referencedWhileLent(pool, (connection) => connection.stream);
      const end = () => {
        hold();
        return pool.promise().end();
      };
      const db = wrapDb(pool, end);
      return new MysqlStore(db, {
        ...options,
        end,
        opener: mysql2Opener(pool.config.connectionConfig),
      });
    }
    const href = mariadbUrl(connection.href);
    const settings = { connectTimeout: CONNECT_TIMEOUT_MS, acquireTimeout: 10_000 };
    // The pool opens connections when asked, not ahead (minimumIdle), and keeps them without
    // a reaper (idleTimeout 0): the reaper's timer would hold the process as long as any
    // connection is open. The server's wait_timeout ends what is idle for hours.
    const poolSettings = { ...settings, minimumIdle: 0, idleTimeout: 0 };
    const pool = module.createPool(withOptions(href, poolSettings));
    pool.on?.('error', () => {});
    const hold = referencedWhileLent(pool, (connection) => connection.socket);
    const db = wrapDb(pool);
    return new MysqlStore(db, {
      ...options,
      end: () => {
        hold();
        return pool.end();
      },
      opener: mariadbOpener(withOptions(href, settings)),
    });
  }
  throw new Error('cachelock/mysql needs the mysql2 or the mariadb package: npm install mysql2', {
    cause: firstError,
  });
}

// Each driver reads its own scheme only.
function mysqlUrl(href: string): string {
  return href.replace(/^mariadb:/i, 'mysql:');
}

function mariadbUrl(href: string): string {
  return href.replace(/^mysql:/i, 'mariadb:');
}

// mariadb takes a URL or options, not both: settings the URL does not give are added to it.
function withOptions(href: string, settings: Record<string, number>): string {
  const url = new URL(href);
  for (const [name, value] of Object.entries(settings)) {
    if (!url.searchParams.has(name)) url.searchParams.set(name, String(value));
  }
  return url.href;
}

/**
 * Wrap the user's mysql2 or mariadb pool or connection, or a pool an ORM lends (knex,
 * Sequelize: one connection per statement); `close()` leaves it open.
 */
export function storeFromClient(client: unknown): LockStore | Promise<LockStore> {
  if (isLentPool(client)) {
    if (client.dialect !== 'mysql') {
      throw new TypeError(`cachelock/mysql: ${client.library} is not on MySQL or MariaDB`);
    }
    const pool = client;
    return lentDb(pool).then((db) => new MysqlStore(db, { opener: lentOpener(pool) }));
  }
  if (!isMysql2(client) && !isMariadb(client)) {
    throw new TypeError('cachelock/mysql: expected a mysql2 or mariadb Pool or Connection');
  }
  return mysqlStore(client as MysqlClient);
}
