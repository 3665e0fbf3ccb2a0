import { isLentPool, type LentPool } from 'cachelock';
import type { Client, ClientConfig, Pool, QueryConfig, QueryResult } from 'pg';

/** What the store needs of a pg `Pool` or `Client`. */
export interface Queryable {
  query(config: string | QueryConfig): Promise<QueryResult>;
}

/** A connection of its own for one transaction; `release` gives it back (destroying a broken one). */
interface Session extends Queryable {
  release(error?: Error | boolean): void;
}

/** Roll the transaction back and resolve `value`: a refusal that must undo what it wrote. */
export class Rollback<T> {
  constructor(readonly value: T) {}
}

/**
 * Runs `work` inside BEGIN ... COMMIT on a connection that nothing else uses meanwhile, after
 * taking the transaction-scoped advisory `locks`, in ascending order so that two transactions
 * over overlapping keys cannot deadlock on them (sent with BEGIN, one round trip).
 * The statements of `work` each see what committed before them, so those after the lock see
 * every acquisition it serialised. `work` may resolve a `Rollback` to undo its writes.
 */
export type Transact = <T>(
  work: (session: Queryable) => Promise<T | Rollback<T>>,
  locks?: readonly bigint[],
) => Promise<T>;

/**
 * Transactions on the user's `Pool` take a connection from it for their length. A single
 * `Client` runs one statement at a time anyway: every statement of the store then goes through
 * one queue (`queryable`), so that none can run inside another's transaction.
 */
export function transactions(db: Pool | Client | LentPool): {
  queryable: Queryable;
  transact: Transact;
} {
  if (isLentPool(db)) {
    // An ORM's pool: each statement, and each transaction whole, on a connection borrowed for it.
    const transact: Transact = (work, locks) =>
      db.borrow((connection) => inTransaction(connection as Queryable, work, locks));
    return { queryable: lentQueryable(db), transact };
  }
  if (isPool(db)) {
    const pool = db;
    const transact: Transact = async (work, locks) => {
      const session = (await pool.connect()) as unknown as Session;
      try {
        const result = await inTransaction(session, work, locks);
        session.release();
        return result;
      } catch (error) {
        // A connection whose transaction could not be closed must not go back to the pool.
        session.release(error instanceof Error ? error : true);
        throw error;
      }
    };
    return { queryable: pool as unknown as Queryable, transact };
  }
  const client = db as unknown as Queryable;
  let tail: Promise<unknown> = Promise.resolve();
  const serial = <T>(step: () => Promise<T>): Promise<T> => {
    const run = tail.then(step, step);
    tail = run.catch(() => undefined);
    return run;
  };
  return {
    queryable: { query: (config) => serial(() => client.query(config)) },
    transact: (work, locks) => serial(() => inTransaction(client, work, locks)),
  };
}

async function inTransaction<T>(
  session: Queryable,
  work: (session: Queryable) => Promise<T | Rollback<T>>,
  locks: readonly bigint[] = [],
): Promise<T> {
  // Read committed whatever the server's default: under repeatable read the snapshot would
  // date from the advisory lock's statement, before the wait, and miss what it serialised.
  const begin = 'BEGIN ISOLATION LEVEL READ COMMITTED';
  const ordered = [...new Set(locks.map(BigInt))].sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
  await session.query(
    [begin, ...ordered.map((lock) => `SELECT pg_advisory_xact_lock(${lock})`)].join('; '),
  );
  let result: T | Rollback<T>;
  try {
    result = await work(session);
  } catch (error) {
    await session.query('ROLLBACK').catch(() => undefined);
    throw error;
  }
  if (result instanceof Rollback) {
    await session.query('ROLLBACK');
    return result.value;
  }
  await session.query('COMMIT');
  return result;
}

/** The dedicated connection a store LISTENs on. */
export type ListenConnection = Pick<
  Client,
  'connect' | 'query' | 'end' | 'on' | 'removeAllListeners'
>;

type ClientConstructor = new (config: ClientConfig) => ListenConnection;

/** A pg `Pool`: it counts its clients. */
export function isPool(value: unknown): value is Pool {
  return (
    typeof value === 'object' &&
    value !== null &&
    typeof (value as Pool).query === 'function' &&
    typeof (value as Pool).connect === 'function' &&
    'totalCount' in value
  );
}

/** A pg `Client`: it keeps the parameters it connects with. */
export function isClient(value: unknown): value is Client {
  return (
    typeof value === 'object' &&
    value !== null &&
    typeof (value as Client).query === 'function' &&
    typeof (value as Client).connect === 'function' &&
    'connectionParameters' in value
  );
}

/**
 * How to open a connection for LISTEN beside the user's `Pool`, `Client` or an ORM's pool, with
 * the same settings. A pool's own clients are never used: LISTEN would hold one of them for as
 * long as anyone waits, and a small pool would starve. A single `Client` cannot LISTEN while it
 * runs the store's queries, so it gets a sibling with its connection parameters.
 */
export function listenConnector(db: unknown): (() => Promise<ListenConnection>) | undefined {
  if (isLentPool(db)) {
    const { openOwn } = db;
    return openOwn && (() => openOwn() as Promise<ListenConnection>);
  }
  if (isPool(db)) {
    const pool = db as Pool & { Client?: ClientConstructor; options?: ClientConfig };
    const Ctor = pool.Client;
    const options = pool.options;
    if (typeof Ctor !== 'function' || !options) return undefined;
    return () => connected(new Ctor({ ...copyWithPassword(options), keepAlive: true }));
  }
  if (isClient(db)) {
    const client = db as Client & { connectionParameters?: ClientConfig };
    const Ctor = client.constructor as ClientConstructor;
    const parameters = client.connectionParameters;
    if (!parameters) return undefined;
    return () => connected(new Ctor({ ...copyWithPassword(parameters), keepAlive: true }));
  }
  return undefined;
}

async function connected(connection: ListenConnection): Promise<ListenConnection> {
  try {
    await connection.connect();
  } catch (error) {
    connection.end().catch(() => undefined);
    throw error;
  }
  return connection;
}

/**
 * The store's statements, on a pool of an ORM's (knex, Sequelize): each borrows a connection
 * and gives it back when it is answered.
 */
export function lentQueryable(pool: LentPool): Queryable {
  return {
    query: (config) => pool.borrow((connection) => (connection as Queryable).query(config)),
  };
}

// pg keeps the password as a non-enumerable property, which a spread would drop.
function copyWithPassword(config: ClientConfig): ClientConfig {
  return { ...config, password: config.password };
}
