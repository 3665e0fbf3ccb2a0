import type { LockStore } from 'cachelock';

/** A backend store found behind a Keyv adapter, and how to free what was opened for it. */
export interface NativeStore {
  /** `'redis'`, `'postgres'`. */
  backend: string;
  store: LockStore;
  /** Ends what this entry point opened itself (never the adapter's own client). */
  close(): Promise<void>;
}

type Adapter = Record<string, unknown>;

const dialectOf = (adapter: Adapter): unknown =>
  (adapter.opts as { dialect?: unknown } | undefined)?.dialect;

/**
 * The atomic store behind a Keyv storage adapter, where its native client is reachable; undefined
 * where it is not (the adapter is then used as a plain cache). A reachable client that cannot be
 * connected rejects: a failure is never turned into a non-atomic fallback.
 */
export async function nativeStoreFor(adapter: Adapter): Promise<NativeStore | undefined> {
  const dialect = dialectOf(adapter);
  if (dialect === 'redis' && ('client' in adapter || typeof adapter.getClient === 'function')) {
    return redisBehind(adapter);
  }
  if (dialect === 'postgres' && typeof (adapter.opts as { uri?: unknown }).uri === 'string') {
    return postgresBehind(adapter.opts as PostgresAdapterOptions);
  }
  return undefined;
}

// @keyv/redis: a node-redis client (or cluster) in `client`, connected lazily by `getClient()`.
async function redisBehind(adapter: Adapter): Promise<NativeStore | undefined> {
  const client =
    typeof adapter.getClient === 'function'
      ? await (adapter.getClient as () => Promise<unknown>)()
      : adapter.client;
  const redis = await import('cachelock/redis');
  // A node-redis Sentinel client is not one the Redis store drives.
  if (redis.clientLibrary(client) === undefined) return undefined;
  const store = redis.redisStore(client as object);
  return { backend: 'redis', store, close: () => store.close() };
}

interface PostgresAdapterOptions {
  uri: string;
  schema?: string;
  [option: string]: unknown;
}

// @keyv/postgres keeps its pg Pool in a module variable with no accessor, so the store opens a
// pool of its own with the adapter's connection settings (uri, ssl, pool options) and ends it
// on close.
async function postgresBehind(options: PostgresAdapterOptions): Promise<NativeStore> {
  const {
    uri,
    schema,
    table: _table,
    keySize: _keySize,
    dialect: _dialect,
    iterationLimit: _iterationLimit,
    useUnloggedTable: _useUnloggedTable,
    ...poolConfig
  } = options;
  const [postgres, pg] = await Promise.all([import('cachelock/postgres'), import('pg')]);
  const { Pool } = (pg as typeof pg & { default?: typeof pg }).default ?? pg;
  const pool = new Pool({
    // Like the pool of a postgres:// URL: bounded waits, and idle connections do not keep a
    // finished script alive. The adapter's own settings win.
    connectionTimeoutMillis: 5_000,
    allowExitOnIdle: true,
    ...poolConfig,
    connectionString: uri,
  });
  // An idle connection the server ends would otherwise crash the process; the next query
  // reconnects.
  pool.on('error', () => {});
  // The leases table goes beside Keyv's own table when that is in a schema of its own.
  const store = postgres.postgresStore(pool, schema && schema !== 'public' ? { schema } : {});
  return {
    backend: 'postgres',
    store,
    close: async () => {
      await store.close?.();
      await pool.end();
    },
  };
}
