import { type Duration, type LockStore, toMs } from 'cachelock';
import { MetaConnection } from './connection.js';
import { MemcachedStore } from './store.js';

export { MemcachedError } from './connection.js';
export type { MemcachedStore } from './store.js';

export interface MemcachedStoreOptions {
  /** How long to wait for a TCP connection to a server. Default `'2s'`. */
  connectTimeout?: Duration;
  /** How long to wait for a server's reply to one operation. Default `'2s'`. */
  timeout?: Duration;
}

/** The part of a memjs `Client` this store reads: where its servers are. */
export interface MemjsClientLike {
  servers: Array<{ host: string; port: number | string; username?: string; password?: string }>;
  add(...args: unknown[]): unknown;
  increment(...args: unknown[]): unknown;
}

const DEFAULT_PORT = 11211;

/**
 * A lock store on memcached (1.6 or later: it speaks the meta protocol).
 *
 * `clientOrUrl` is a `memcached://host:port` URL (optionally `?timeout=2s&connectTimeout=1s`)
 * or a memjs `Client`. The store always talks to the servers over its own connections, because
 * memjs has no compare-and-swap; a memjs client with several servers spreads keys over them
 * (each key lives on one), and the client itself is left untouched and is not closed.
 *
 * What memcached can and cannot promise is in the README: leases live in whole seconds (the
 * item outlives the lease by up to 4 s), a full cache may evict a held lease, a restart forgets
 * every lease, and there are no fences (`Lock.fence` is `undefined`). A key keeps one item while
 * it is held and nothing once the item expires or is released.
 */
export function memcachedStore(
  clientOrUrl: string | URL | MemjsClientLike,
  options: MemcachedStoreOptions = {},
): LockStore {
  if (typeof clientOrUrl === 'string' || clientOrUrl instanceof URL) {
    return fromUrl(new URL(clientOrUrl), options);
  }
  if (isMemjsClient(clientOrUrl)) return fromMemjs(clientOrUrl, options);
  throw new TypeError(
    'memcachedStore: expected a memcached:// URL or a memjs Client, got ' +
      (clientOrUrl === null ? 'null' : typeof clientOrUrl),
  );
}

/** For the core: a store for a `memcached://` URL, owning its connections. */
export function storeFromUrl(url: URL): LockStore {
  return fromUrl(url, {});
}

/** For the core: a store for a memjs `Client` the user made; `close()` leaves the client open. */
export function storeFromClient(client: unknown): LockStore {
  if (!isMemjsClient(client)) {
    throw new TypeError('cachelock/memcached: expected a memjs Client');
  }
  return fromMemjs(client, {});
}

/** A memjs `Client`, recognised by its shape: `add`, `increment` and a `servers` list. */
export function isMemjsClient(value: unknown): value is MemjsClientLike {
  if (typeof value !== 'object' || value === null) return false;
  const client = value as Partial<MemjsClientLike>;
  return (
    typeof client.add === 'function' &&
    typeof client.increment === 'function' &&
    Array.isArray(client.servers)
  );
}

function fromUrl(url: URL, options: MemcachedStoreOptions): LockStore {
  if (url.protocol !== 'memcached:') {
    throw new TypeError(`memcachedStore: expected a memcached:// URL, got ${url.protocol}//`);
  }
  if (url.username || url.password) {
    // Memcached's meta protocol has no SASL; a server with SASL speaks only the binary protocol.
    throw new TypeError('memcachedStore: memcached URLs with a user or password are not supported');
  }
  const host = url.hostname.replace(/^\[(.*)\]$/, '$1') || '127.0.0.1';
  const port = url.port ? Number(url.port) : DEFAULT_PORT;
  const fromQuery: MemcachedStoreOptions = {};
  const timeout = url.searchParams.get('timeout');
  const connectTimeout = url.searchParams.get('connectTimeout');
  if (timeout !== null) fromQuery.timeout = timeout;
  if (connectTimeout !== null) fromQuery.connectTimeout = connectTimeout;
  return new MemcachedStore([connect(host, port, { ...fromQuery, ...options })]);
}

function fromMemjs(client: MemjsClientLike, options: MemcachedStoreOptions): LockStore {
  if (client.servers.length === 0)
    throw new TypeError('memcachedStore: the memjs Client has no servers');
  const connections = client.servers.map((server) => {
    if (server.username || server.password) {
      throw new TypeError(
        `memcachedStore: memjs server ${server.host}:${server.port} uses SASL, which memcached's meta protocol does not support`,
      );
    }
    return connect(server.host, Number(server.port), options);
  });
  return new MemcachedStore(connections);
}

function connect(host: string, port: number, options: MemcachedStoreOptions): MetaConnection {
  if (!Number.isInteger(port) || port < 1 || port > 65_535) {
    throw new TypeError(`memcachedStore: bad port ${JSON.stringify(port)} for ${host}`);
  }
  return new MetaConnection(host, port, {
    connectTimeoutMs: positiveMs('connectTimeout', options.connectTimeout ?? 2_000),
    timeoutMs: positiveMs('timeout', options.timeout ?? 2_000),
  });
}

// A timeout of 0 would fail every operation; Infinity would let a dead server hang one forever.
function positiveMs(option: string, value: Duration): number {
  const ms = toMs(option, value);
  if (ms < 1) throw new RangeError(`memcachedStore: ${option} must be at least 1 ms, got ${ms}`);
  return ms;
}
