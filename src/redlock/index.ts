import type { LockStore } from 'cachelock';
import { type ClientLibrary, clientLibrary, driverFor, openRedisClient } from 'cachelock/redis';
import { RedlockStore, type RedlockStoreOptions } from './store.js';

export { type RedlockServer, RedlockStore, type RedlockStoreOptions } from './store.js';

/**
 * A Redlock quorum over independent Redis or Valkey servers: one client per server (ioredis or
 * node-redis, mixed as you like; an odd number, 3 or 5, is usual). The clients stay the caller's.
 */
export function redlockStore(
  clients: readonly object[],
  options?: RedlockStoreOptions,
): RedlockStore {
  if (!Array.isArray(clients) || clients.length === 0) {
    throw new TypeError('redlockStore: expected an array of Redis clients, one per server');
  }
  const drivers = clients.map((client, i) => {
    const library = clientLibrary(client);
    if (library === undefined) {
      throw new TypeError(`redlockStore: clients[${i}] is not an ioredis or node-redis client`);
    }
    return { driver: driverFor(client, library), unavailable: availability(client, library) };
  });
  return new RedlockStore(drivers, options);
}

/** Clients seen ready, so that a later `connecting` is known to be a reconnection. */
const seenReady = new WeakSet<object>();
/** node-redis clients already listened to: one listener each, however many stores share one. */
const listened = new WeakSet<object>();

/**
 * Whether a command sent to `client` now would be answered soon. A client that lost its server
 * queues commands until it is back, which would hold every operation up for `serverTimeout`
 * and run stale acquires later; Redlock only needs a majority, so such a server fails at once.
 * The client's own options (its offline queue) stay as the user set them.
 */
function availability(client: any, library: ClientLibrary): () => string | undefined {
  if (library.startsWith('ioredis')) {
    if (client.status === 'ready') seenReady.add(client);
    return () => {
      const status: unknown = client.status;
      if (status === 'ready') {
        seenReady.add(client);
        return undefined;
      }
      // `wait` (lazyConnect) and a first `connecting` answer as soon as the server does;
      // `connect` is the handshake of a connection that is already up.
      if (status === 'connect' || typeof status !== 'string') return undefined;
      if ((status === 'wait' || status === 'connecting') && !seenReady.has(client))
        return undefined;
      return `not connected (ioredis status "${status}")`;
    };
  }
  // node-redis is open from `connect()` on; open and not ready is connecting, for the first
  // time (answered as soon as the server is) or again. A closed client rejects at once by itself.
  if (client.isReady === true) seenReady.add(client);
  if (!listened.has(client)) {
    listened.add(client);
    client.on?.('ready', () => seenReady.add(client));
  }
  return () => {
    if (client.isReady === true) {
      seenReady.add(client);
      return undefined;
    }
    return client.isOpen === true && seenReady.has(client)
      ? 'not connected (node-redis is reconnecting)'
      : undefined;
  };
}

/**
 * `redlock:?server=redis://h1:6379&server=redis://h2:6379&server=redis://h3:6379` (each
 * `server` a `redis://`, `rediss://` or `valkey://` URL). Not registered with the core by
 * default: `registerScheme('redlock', storeFromUrl)` makes `cache: 'redlock:?...'` work. The
 * store owns these clients and `close()` ends them.
 */
export async function storeFromUrl(url: URL): Promise<LockStore> {
  const servers = url.searchParams.getAll('server');
  if (servers.length === 0) {
    throw new TypeError(
      'redlock URL needs one server parameter per server: redlock:?server=redis://h1:6379&server=redis://h2:6379&server=redis://h3:6379',
    );
  }
  const clients = await Promise.all(servers.map((server) => openRedisClient(new URL(server))));
  // Watched like a user's clients: a member that is down must fail at once, not after
  // serverTimeout, or every split vote waits for it.
  const members = clients.map(({ client, library, driver }) => ({
    driver,
    unavailable: availability(client, library),
  }));
  return new RedlockStore(members, {}, true);
}

/** An array of clients, one per server. */
export function storeFromClient(clients: unknown): LockStore {
  return redlockStore(clients as object[]);
}
