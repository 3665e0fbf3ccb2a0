import { isLentPool, type LentPool } from 'cachelock';
import type { Client, ClientConfig, Pool, QueryConfig, QueryResult } from 'pg';

/** What the store needs of a pg `Pool` or `Client`. */
export interface Queryable {
  query(config: string | QueryConfig): Promise<QueryResult>;
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
