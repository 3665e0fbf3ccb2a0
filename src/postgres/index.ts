import {
  type Acquired,
  type AcquiredKeys,
  type AcquireOptions,
  type Handoff,
  isLentPool,
  type LeaseInfo,
  type LentPool,
  type LockStore,
  type ManyKeys,
  Refusals,
  type SharedLeases,
  type SharedRequest,
  type StoreCapabilities,
} from 'cachelock';
import type { Client, Pool, PoolConfig } from 'pg';
import { prepareAcquire } from './acquire.js';
import {
  isClient,
  isPool,
  listenConnector,
  type Queryable,
  type Transact,
  transactions,
} from './connection.js';
import { prepareExtend } from './extend.js';
import { prepareInspect } from './inspect.js';
import { prepareKeysAcquire } from './keys-acquire.js';
import { prepareKeysExtend } from './keys-extend.js';
import { prepareKeysRelease } from './keys-release.js';
import { ReleaseListener } from './listener.js';
import { keyId, type SharedSpace, sharedKeyId, type TableName, tableName } from './names.js';
import { prepareRelease } from './release.js';
import { createSharedTable, createTable, isMissingTable } from './schema.js';
import { prepareSharedAcquire } from './shared-acquire.js';
import { prepareSharedExtend } from './shared-extend.js';
import { prepareSharedInspect } from './shared-inspect.js';
import { prepareSharedRelease } from './shared-release.js';
import { prepareSharedSweep, prepareSweep, SWEEP_EVERY } from './sweep.js';

export interface PostgresStoreOptions {
  /** The leases table, created on first use. Default `'cachelock_locks'`. */
  table?: string;
  /** Its schema; by default the connection's search_path decides (usually `public`). */
  schema?: string;
  /** Push wake-ups with LISTEN/NOTIFY. Default `true`; `false` makes waiters poll. */
  listen?: boolean;
}

interface StoreSetup extends PostgresStoreOptions {
  /** End the pool on close: the store opened it from a URL. */
  ownsPool?: boolean;
}

const DEFAULT_TABLE = 'cachelock_locks';

/**
 * Locks in a PostgreSQL table. Every lease is judged by the database's clock
 * (`clock_timestamp()`), so the clients' clocks do not matter. Each operation is one statement
 * and one round trip; the first one of a store also creates the table if it is missing.
 *
 * Nothing is left behind per key: a release deletes its row, and every few acquisitions the
 * store deletes a bounded batch of expired rows of any key, so a key never used again goes too.
 *
 * Several keys are taken in one transaction, all or none; permits and readers/writers live in a
 * second table (`<table>_shared`), each acquisition in a transaction that holds the key's
 * advisory lock (see shared-acquire.ts).
 */
class PostgresStore implements LockStore {
  readonly kind = 'postgres';
  readonly atomic = true;
  onRelease?: (key: string, listener: (handoff?: Handoff) => void) => () => void;
  /** A key's wake-ups that came shortly before a waiter listened are told to it (listener.ts). */
  readonly replaysWakeups: boolean;
  /**
   * A release hands the key to the first waiter in its line, with a claim lease (release.ts):
   * told to that waiter, the hand-off is its grant, unless it was made before the waiter's last
   * refusal (then it is void and not told).
   */
  readonly handoffGrants: boolean;
  /** Each waiter's last refusal: the fence of the holder that refused it. */
  readonly #refusedAt = new Refusals();
  readonly #db: Queryable;
  readonly #table;
  readonly #ownsPool: boolean;
  readonly #listener: ReleaseListener | undefined;
  readonly #acquire;
  readonly #release;
  readonly #extend;
  readonly #inspect;
  readonly #sweep;
  readonly #sharedSweep;
  readonly #transact: Transact;
  readonly capabilities: StoreCapabilities;
  #sinceSharedSweep = SWEEP_EVERY;
  #sharedReady: Promise<void> | undefined;
  // Starts full, so that a store's first acquisition sweeps: short-lived processes help too.
  #sinceSweep = SWEEP_EVERY;
  #sweeping: Promise<unknown> | undefined;
  #ready: Promise<void> | undefined;
  #closed = false;

  constructor(db: Pool | Client | LentPool, setup: StoreSetup) {
    const { queryable, transact } = transactions(db);
    this.#db = queryable;
    this.#transact = transact;
    this.#table = tableName(setup.table ?? DEFAULT_TABLE, setup.schema);
    this.#ownsPool = setup.ownsPool === true;
    const connect = setup.listen === false ? undefined : listenConnector(db);
    const listener = connect && new ReleaseListener(connect, this.#table.channel);
    this.#listener = listener;
    this.replaysWakeups = this.handoffGrants = listener !== undefined;
    this.#acquire = prepareAcquire(this.#db, this.#table);
    this.#release = prepareRelease(this.#db, this.#table, listener && ((m) => listener.tell(m)));
    this.#extend = prepareExtend(this.#db, this.#table);
    this.#inspect = prepareInspect(this.#db, this.#table);
    this.#sweep = prepareSweep(this.#db, this.#table);
    this.#sharedSweep = prepareSharedSweep(this.#db, this.#table);
    if (listener) {
      this.onRelease = (key, onReleased) =>
        listener.subscribe(keyId(key).toString('base64url'), (message) => {
          const told = message === undefined ? undefined : parseHandoff(message);
          if (told === undefined) return onReleased();
          const handoff = this.#refusedAt.checked(told);
          if (handoff !== undefined) onReleased(handoff);
        });
    }
    this.capabilities = {
      keys: this.#manyKeys(),
      permits: this.#shared('permits'),
      readersWriters: this.#shared('rw'),
    };
  }

  #manyKeys(): ManyKeys {
    const acquire = prepareKeysAcquire(this.#db, this.#transact, this.#table);
    const release = prepareKeysRelease(this.#db, this.#table);
    const extend = prepareKeysExtend(this.#db, this.#table);
    return {
      acquire: (keys, owner, ttlMs): Promise<AcquiredKeys | null> =>
        this.#run(async () => {
          const acquired = await acquire(keys, owner, ttlMs);
          this.#sweepNow();
          return acquired;
        }),
      release: (keys, owner, keepMs) => this.#run(() => release(keys, owner, keepMs)),
      extend: (keys, owner, ttlMs) => this.#run(() => extend(keys, owner, ttlMs)),
    };
  }

  #shared(space: SharedSpace): SharedLeases {
    const table: TableName = this.#table;
    const acquire = prepareSharedAcquire(this.#transact, table, space);
    const release = prepareSharedRelease(this.#db, this.#transact, table, space);
    const extend = prepareSharedExtend(this.#transact, table, space);
    const inspect = prepareSharedInspect(this.#db, table, space);
    const leases: SharedLeases = {
      acquire: (key, owner, ttlMs, request: SharedRequest) =>
        this.#runShared(async () => {
          const acquired = await acquire(key, owner, ttlMs, request);
          this.#sweepSharedNow();
          return acquired;
        }),
      release: (key, owner, keepMs) => this.#runShared(() => release(key, owner, keepMs)),
      extend: (key, owner, ttlMs) => this.#runShared(() => extend(key, owner, ttlMs)),
      inspect: (key) => this.#runShared(() => inspect(key)),
    };
    const listener = this.#listener;
    if (listener) {
      leases.onRelease = (key, onReleased) =>
        listener.subscribe(sharedKeyId(space, key).toString('base64url'), () => onReleased());
    }
    return leases;
  }

  /** As `#run`, for the table of shared leases. */
  async #runShared<T>(operation: () => Promise<T>): Promise<T> {
    if (this.#closed) throw new Error('cachelock/postgres: the store is closed');
    this.#sharedReady ??= createSharedTable(this.#db, this.#table).catch((error) => {
      this.#sharedReady = undefined;
      throw error;
    });
    await this.#sharedReady;
    try {
      return await operation();
    } catch (error) {
      if (isMissingTable(error)) this.#sharedReady = undefined;
      throw error;
    }
  }

  #sweepSharedNow(): void {
    if (++this.#sinceSharedSweep < SWEEP_EVERY || this.#sweeping !== undefined || this.#closed) {
      return;
    }
    this.#sinceSharedSweep = 0;
    this.#sweeping = this.#sharedSweep()
      .catch(() => undefined)
      .finally(() => {
        this.#sweeping = undefined;
      });
  }

  /** Run `operation` once the table exists; create it again if it was dropped meanwhile. */
  async #run<T>(operation: () => Promise<T>): Promise<T> {
    if (this.#closed) throw new Error('cachelock/postgres: the store is closed');
    this.#ready ??= createTable(this.#db, this.#table).catch((error) => {
      this.#ready = undefined;
      throw error;
    });
    await this.#ready;
    try {
      return await operation();
    } catch (error) {
      if (isMissingTable(error)) this.#ready = undefined;
      throw error;
    }
  }

  acquire(
    key: string,
    owner: string,
    ttlMs: number,
    options?: AcquireOptions,
  ): Promise<Acquired | null> {
    // Only a waiter that hears hand-offs joins a line: one handed the key unheard (no LISTEN, or
    // not yet active) would hold it up until its next poll. Waiters whose LISTEN is not active
    // try again when it becomes so, and join then.
    const lineMs = this.#listener?.listening === true ? options?.lineMs : undefined;
    return this.#run(async () => {
      const acquired = await this.#acquire(key, owner, ttlMs, lineMs, this.#refused);
      if (acquired !== null && lineMs !== undefined) this.#refusedAt.forget(owner);
      this.#sweepNow();
      return acquired;
    });
  }

  // A refusal the statement could not place (see acquire.ts) voids none of the earlier
  // hand-offs: they become news, confirmed with an acquire, until the next placed refusal.
  readonly #refused = (owner: string, at: bigint | undefined): void => {
    if (at === undefined) this.#refusedAt.forget(owner);
    else this.#refusedAt.refused(owner, at);
  };

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
    this.#refusedAt.forget(owner);
    return this.#run(() => this.#release(key, owner, keepMs));
  }

  extend(key: string, owner: string, ttlMs: number): Promise<boolean> {
    return this.#run(() => this.#extend(key, owner, ttlMs));
  }

  inspect(key: string): Promise<LeaseInfo | null> {
    return this.#run(() => this.#inspect(key));
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    await this.#sweeping;
    await this.#listener?.close();
    if (this.#ownsPool) await (this.#db as Pool).end();
  }
}

const HANDOFF = /^(\d+) (\d+(?:\.\d+)?) (.+)$/s;

/**
 * A hand-off's message, `<fence> <claim ms> <owner>` (see release.ts); anything else is taken
 * for a plain wake-up.
 */
function parseHandoff(message: string): Handoff | undefined {
  const parts = HANDOFF.exec(message);
  if (parts === null) return undefined;
  return { owner: parts[3]!, fence: BigInt(parts[1]!), ttlMs: Number(parts[2]) };
}

/**
 * A store on your pg `Pool` (recommended: it reconnects) or connected `Client`. The store never
 * ends it; it opens one more connection of its own, with the same settings, for LISTEN while
 * someone waits. Do not hand it a `Client` inside a transaction: the store's statements would
 * join it.
 */
export function postgresStore(
  poolOrClient: Pool | Client,
  options: PostgresStoreOptions = {},
): LockStore {
  if (!isPool(poolOrClient) && !isClient(poolOrClient)) {
    throw new TypeError('postgresStore: expected a pg Pool or Client');
  }
  return new PostgresStore(poolOrClient, options);
}

// A store that opens its own pool fails fast rather than hanging when the server is gone.
const OWNED_POOL_DEFAULTS: PoolConfig = {
  connectionTimeoutMillis: 5_000,
  query_timeout: 10_000,
  // Idle connections do not keep a finished script (or the CLI) alive.
  allowExitOnIdle: true,
};

/**
 * `postgres://` and `postgresql://` URLs: the store opens a `Pool` (pg's connection-string
 * parameters apply) and ends it on close. `table`, `schema` and `listen=false` in the query
 * string are the store's options.
 */
export async function storeFromUrl(url: URL): Promise<LockStore> {
  const options: StoreSetup = { ownsPool: true };
  const connection = new URL(url.href);
  for (const name of ['table', 'schema', 'listen'] as const) {
    const value = connection.searchParams.get(name);
    if (value === null) continue;
    connection.searchParams.delete(name);
    if (name === 'listen') options.listen = value !== 'false' && value !== '0';
    else options[name] = value;
  }
  // Validate the names before any connection is opened.
  tableName(options.table ?? DEFAULT_TABLE, options.schema);
  const pg = await loadPg();
  const pool = new pg.Pool({ ...OWNED_POOL_DEFAULTS, connectionString: connection.href });
  // An idle connection the server ends (restart, pg_terminate_backend) is reported here;
  // without a listener that report would crash the process. The next query reconnects.
  pool.on('error', () => {});
  return new PostgresStore(pool, options);
}

/**
 * Wrap the user's pg `Pool` or `Client`, or a pool an ORM lends (knex, Sequelize: one
 * connection per statement); `close()` leaves it open.
 */
export function storeFromClient(client: unknown): LockStore {
  if (isLentPool(client)) {
    if (client.dialect !== 'postgres') {
      throw new TypeError(`cachelock/postgres: ${client.library} is not on PostgreSQL`);
    }
    return new PostgresStore(client, {});
  }
  return postgresStore(client as Pool);
}

async function loadPg(): Promise<typeof import('pg')> {
  try {
    const module = (await import('pg')) as typeof import('pg') & { default?: typeof import('pg') };
    return module.default ?? module;
  } catch (error) {
    throw new Error('cachelock/postgres needs the pg package: npm install pg', { cause: error });
  }
}
