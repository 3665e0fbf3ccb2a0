import { classifyFailure, describeFailure, type LockStore, redactUrl } from 'cachelock';

/** A backend store found behind a Keyv adapter, and how to free what was opened for it. */
export interface NativeStore {
  /** `'redis'`, `'postgres'`. */
  backend: string;
  store: LockStore;
  /** Ends what this entry point opened itself (never the adapter's own client). */
  close(): Promise<void>;
  /** The server's scheme, host and port, without credentials, for error messages. */
  where?: string;
}

type Adapter = Record<string, unknown>;

const dialectOf = (adapter: Adapter): unknown =>
  (adapter.opts as { dialect?: unknown } | undefined)?.dialect;

/**
 * The atomic store behind a Keyv storage adapter, where its native client is reachable; undefined
 * where it is not (the adapter is then used as a plain cache). A reachable client that cannot be
 * connected rejects: a failure is never turned into a non-atomic fallback.
 */
export async function nativeStoreFor(
  adapter: Adapter,
  connectTimeoutMs: number,
): Promise<NativeStore | undefined> {
  const dialect = dialectOf(adapter);
  if (dialect === 'redis' && ('client' in adapter || typeof adapter.getClient === 'function')) {
    return redisBehind(adapter, connectTimeoutMs);
  }
  if (dialect === 'postgres' && typeof (adapter.opts as { uri?: unknown }).uri === 'string') {
    return postgresBehind(adapter.opts as PostgresAdapterOptions);
  }
  return undefined;
}

// @keyv/redis: a node-redis client (or cluster) in `client`, connected lazily by `getClient()`.
async function redisBehind(
  adapter: Adapter,
  connectTimeoutMs: number,
): Promise<NativeStore | undefined> {
  const client =
    typeof adapter.getClient === 'function'
      ? await connected(adapter, connectTimeoutMs)
      : adapter.client;
  const redis = await import('cachelock/redis');
  // A node-redis Sentinel client is not one the Redis store drives.
  if (redis.clientLibrary(client) === undefined) return undefined;
  const store = redis.redisStore(client as object);
  return {
    backend: 'redis',
    store,
    close: () => store.close(),
    where: hostOf(whereIs(client as Emitter)),
  };
}

type Emitter = {
  on?(event: string, listener: (error: Error) => void): unknown;
  off?(event: string, listener: (error: Error) => void): unknown;
  once?(event: string, listener: () => void): unknown;
  isOpen?: boolean;
  isReady?: boolean;
  options?: { url?: string; socket?: { host?: string; port?: number } };
};

/**
 * The adapter's client once connected. node-redis retries a refused connection forever and
 * @keyv/redis waits for it, which would hang an app's start with no word; the wait is bounded
 * and fails with where and why (the client's last connection error, seen meanwhile).
 */
async function connected(adapter: Adapter, timeoutMs: number): Promise<unknown> {
  const client = adapter.client as Emitter | undefined;
  let last: Error | undefined;
  const onError = (error: Error) => {
    last = error;
  };
  client?.on?.('error', onError);
  let timer: NodeJS.Timeout | undefined;
  let onReady: (() => void) | undefined;
  const failure = (what: string) => {
    const reason = last === undefined ? undefined : classifyFailure(last);
    const why =
      last === undefined
        ? ''
        : `: ${reason === undefined ? '' : `${describeFailure(reason.failure)} (`}${last.message}${reason === undefined ? '' : ')'}`;
    return new Error(`Keyv's Redis store at ${whereIs(client)} ${what}${why}`, { cause: last });
  };
  try {
    const ready = async () => {
      const got = (await (adapter.getClient as () => Promise<unknown>)()) as Emitter;
      // Open but reconnecting: commands would wait in its queue until the server is back.
      if (got?.isOpen === true && got.isReady === false) {
        await new Promise<void>((resolve) => {
          onReady = () => resolve();
          got.once?.('ready', onReady);
        });
      }
      return got;
    };
    const got = (await Promise.race([
      ready(),
      new Promise<never>((_, reject) => {
        timer = setTimeout(
          () => reject(failure(`did not connect within ${timeoutMs} ms`)),
          timeoutMs,
        );
      }),
    ])) as Emitter;
    // @keyv/redis swallows a failed connection (unless throwOnConnectError) and hands back a
    // closed client.
    if (got?.isOpen === false) throw failure('could not connect');
    return got;
  } finally {
    clearTimeout(timer);
    client?.off?.('error', onError);
    if (onReady !== undefined) client?.off?.('ready', onReady);
  }
}

/** `scheme://host:port` of a URL, nothing else (no user, path or query). */
function hostOf(url: string): string | undefined {
  try {
    const parsed = new URL(url);
    return `${parsed.protocol}//${parsed.host}`;
  } catch {
    return undefined;
  }
}

function whereIs(client: Emitter | undefined): string {
  const url = client?.options?.url;
  if (typeof url === 'string') return redactUrl(url);
  const socket = client?.options?.socket;
  return `redis://${socket?.host ?? 'localhost'}:${socket?.port ?? 6379}`;
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
    where: hostOf(uri),
    close: async () => {
      await store.close?.();
      await pool.end();
    },
  };
}
