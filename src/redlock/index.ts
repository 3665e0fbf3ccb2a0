import type { LockStore } from 'cachelock';
import { clientLibrary, driverFor, openClient } from 'cachelock/redis';
import { RedlockStore, type RedlockStoreOptions } from './store.js';

export { RedlockStore, type RedlockStoreOptions } from './store.js';

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
    return driverFor(client, library);
  });
  return new RedlockStore(drivers, options);
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
  const drivers = await Promise.all(servers.map((server) => openClient(new URL(server))));
  return new RedlockStore(drivers, {}, true);
}

/** An array of clients, one per server. */
export function storeFromClient(clients: unknown): LockStore {
  return redlockStore(clients as object[]);
}
