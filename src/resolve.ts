import { isLentPool, type Recognised, recogniseClient } from './clients.js';
import { showValue } from './duration.js';
import { defaultMemoryStore, memoryStore } from './memory/index.js';
import { missingCacheMethods, type PlainCache, PlainCacheStore } from './plain/index.js';
import { factoryFor, knownSchemes, loadBackend } from './registry.js';
import { redactUrl, rememberClientSecrets, rememberUrlSecrets } from './secrets.js';
import { isLockStore, type LockStore } from './store.js';

/**
 * Check a `cache` option synchronously, so that a bad cache is an error where the lock is made
 * rather than where it is first acquired.
 */
export function checkCache(option: string, cache: unknown): void {
  if (typeof cache === 'string' || cache instanceof URL) {
    if (!byUrl.has(typeof cache === 'string' ? cache : cache.href)) parseCacheUrl(option, cache);
    return;
  }
  // knex is a function with members.
  if ((typeof cache !== 'object' && typeof cache !== 'function') || cache === null) {
    throw new TypeError(
      `${option} must be a LockStore, a client, a URL or an object with get, set and delete, got ${showValue(cache)}`,
    );
  }
  // A cache that already has its store passed this check: a lock per call asks it again.
  if (byObject.has(cache) || isLockStore(cache) || recogniseClient(cache, option)) return;
  const missing = missingCacheMethods(cache);
  if (missing.length > 0) {
    throw new TypeError(
      `${option} is not a LockStore or a client cachelock knows, and as a plain cache it lacks ${missing.join(', ')} (it needs get, set and delete)`,
    );
  }
}

function parseCacheUrl(option: string, cache: string | URL): URL {
  let url: URL;
  try {
    url = cache instanceof URL ? cache : new URL(cache);
  } catch {
    throw new TypeError(
      `${option} must be a URL such as redis://127.0.0.1:6379 or memory:, got ${JSON.stringify(redactUrl(cache))}`,
    );
  }
  rememberUrlSecrets(url);
  if (!knownSchemes().includes(url.protocol)) {
    throw new TypeError(
      `${option}: unknown URL scheme "${url.protocol}" in ${JSON.stringify(redactUrl(url))}; known schemes: ${knownSchemes().join(', ')}`,
    );
  }
  return url;
}

// One store per client object and per URL, so that locks on the same cache share connections,
// subscribers and in-process queues.
let byObject = new WeakMap<object, LockStore | Promise<LockStore>>();
const byUrl = new Map<string, LockStore | Promise<LockStore>>();
// Stores this library made and may close: URL stores own their clients; wrappers of a user's
// client only free what they opened themselves.
const opened = new Set<LockStore | Promise<LockStore>>();

/**
 * The store for a cache option (already merged with the defaults), synchronously when it is
 * already known. `undefined` falls back to `CACHELOCK_URL`, then to the process memory store.
 */
export function storeFor(cache: unknown, option = 'cache'): LockStore | Promise<LockStore> {
  if (cache === undefined) {
    const fromEnv = process.env.CACHELOCK_URL;
    if (fromEnv) return storeFor(fromEnv, 'CACHELOCK_URL');
    return defaultMemoryStore();
  }
  if (typeof cache === 'string' || cache instanceof URL) {
    const href = typeof cache === 'string' ? cache : cache.href;
    const known = byUrl.get(href);
    if (known !== undefined) return known;
    const url = parseCacheUrl(option, cache);
    const pending = openUrl(url);
    pending.then((store) => locations.set(store, whereIs(url)), noop);
    remember(byUrl, href, pending);
    return pending;
  }
  const object = cache as object;
  const known = byObject.get(object);
  if (known !== undefined) return known;
  if (isLockStore(object)) return object;
  const recognised = recogniseClient(object, option);
  if (recognised !== undefined) {
    // An ORM and the client it holds (or two wrappers of one ORM) share one store.
    const key = recognised.key();
    const shared = byObject.get(key);
    if (shared !== undefined) {
      byObject.set(object, shared);
      return shared;
    }
    const pending = openRecognised(recognised, key);
    remember(byObject, key, pending);
    if (key !== object) remember(byObject, object, pending);
    return pending;
  }
  checkCache('cache', object);
  const store = new PlainCacheStore(object as PlainCache);
  byObject.set(object, store);
  return store;
}

/**
 * The store for a recognised client or ORM. The one place where what an ORM holds is awaited:
 * an ORM may hand over its client only once it has connected (MikroORM 7).
 */
async function openRecognised(recognised: Recognised, key: object): Promise<LockStore> {
  // closeAll() may start afresh meanwhile: this store then belongs to the stores it closes.
  const stores = byObject;
  const held = await recognised.backend();
  if ('url' in held) {
    const store = await openUrl(held.url);
    locations.set(store, whereIs(held.url));
    return store;
  }
  const { entry, client } = held;
  // Known only now, the client an ORM holds shares the store of that client passed itself.
  const shared = client !== key && !isLentPool(client);
  const known = shared ? stores.get(client) : undefined;
  if (known !== undefined) return known;
  // An ORM's pool keeps its settings (password, URL) where the ORM put them.
  rememberClientSecrets(isLentPool(client) ? { options: client.settings } : client);
  const backend = await loadBackend(entry);
  const store = await backend.storeFromClient(client);
  // A store may know better where its client is (one found behind a Keyv, say).
  const location =
    clientLocation(isLentPool(client) ? (client.settings ?? {}) : client, entry) ??
    (store as { location?: unknown }).location;
  if (typeof location === 'string') locations.set(store, location);
  if (shared && !stores.has(client)) stores.set(client, store);
  return store;
}

async function openUrl(url: URL): Promise<LockStore> {
  if (url.protocol === 'memory:') {
    // `memory:` is the process default; `memory:name` is a separate named store.
    return url.pathname === '' ? defaultMemoryStore() : memoryStore();
  }
  const factory = await factoryFor('cache', url);
  return factory(url);
}

// Where each store opened from a URL lives, for StoreError messages.
const locations = new WeakMap<LockStore, string>();

/** The scheme, host and port (or file) of a store opened from a URL, without credentials. */
export function locationOf(store: LockStore): string | undefined {
  return locations.get(store);
}

/** Where a `cache` option (or, undefined, `CACHELOCK_URL`) points, when it is a URL. */
export function cacheLocation(cache: unknown): string | undefined {
  const given = cache === undefined ? process.env.CACHELOCK_URL || undefined : cache;
  if (typeof given !== 'string' && !(given instanceof URL)) return undefined;
  try {
    return whereIs(given instanceof URL ? given : new URL(given));
  } catch {
    return undefined;
  }
}

function whereIs(url: URL): string {
  return url.host === '' ? `${url.protocol}${url.pathname}` : `${url.protocol}//${url.host}`;
}

const SCHEMES: Record<string, string> = {
  'cachelock/redis': 'redis:',
  'cachelock/postgres': 'postgres:',
  'cachelock/mysql': 'mysql:',
  'cachelock/memcached': 'memcached:',
  'cachelock/sqlite': 'sqlite:',
  'cachelock/etcd': 'etcd:',
};

/**
 * Where a client the user made is connected, read from where the clients keep it (ioredis and
 * node-redis `options`, a Cluster's first node, pg's `options` or `host`/`port`, memjs
 * `servers`, better-sqlite3 `name`); undefined when it cannot be told.
 */
function clientLocation(client: object, entry: string): string | undefined {
  const c = client as Record<string, any>;
  let scheme = SCHEMES[entry];
  if (scheme === undefined) return undefined;
  if (scheme === 'sqlite:') return typeof c.name === 'string' ? `sqlite:${c.name}` : undefined;
  if (scheme === 'redis:' && c.options?.tls) scheme = 'rediss:';
  if (scheme === 'etcd:') return etcdLocation(c.options?.hosts);
  const places = [
    c.options,
    c.options?.socket,
    c.options?.rootNodes?.[0],
    c.connectionParameters,
    c.startupNodes?.[0],
    c.servers?.[0],
    // mysql2: its pool's connection settings, under a promise wrapper or not.
    c.config?.connectionConfig,
    c.pool?.config?.connectionConfig,
    c.connection?.config,
    c.config,
    c,
  ];
  for (const place of places) {
    if (typeof place !== 'object' || place === null) continue;
    for (const text of [place.url, place.connectionString]) {
      if (typeof text !== 'string') continue;
      try {
        return whereIs(new URL(text));
      } catch {}
    }
    const { host, port } = place;
    if (typeof host === 'string' && host !== '' && /^\d+$/.test(String(port))) {
      return `${scheme}//${host.includes(':') ? `[${host}]` : host}:${port}`;
    }
  }
  return undefined;
}

// etcd3 keeps its hosts as given: `http://host:2379`, a list of them, or a comma list.
function etcdLocation(hosts: unknown): string | undefined {
  const first = (Array.isArray(hosts) ? hosts[0] : hosts)?.toString().split(',')[0]?.trim();
  if (!first) return undefined;
  try {
    return `etcd://${new URL(first.includes('://') ? first : `http://${first}`).host}`;
  } catch {
    return undefined;
  }
}

function noop(): void {}

// Keep the promise until it settles, then the store itself; forget failures so a later lock
// can try again (the server may be back).
function remember<K>(
  map: { set(key: K, value: LockStore | Promise<LockStore>): unknown; delete(key: K): unknown },
  key: K,
  pending: Promise<LockStore>,
): void {
  map.set(key, pending);
  opened.add(pending);
  pending.then(
    (store) => {
      map.set(key, store);
      opened.delete(pending);
      opened.add(store);
    },
    () => {
      map.delete(key);
      opened.delete(pending);
    },
  );
}

/**
 * Close every store cachelock opened itself (from URLs, and the wrappers it made around
 * clients), ending the clients it owns. Locks made afterwards open fresh stores.
 */
export async function closeAll(): Promise<void> {
  const stores = [...opened];
  opened.clear();
  byUrl.clear();
  byObject = new WeakMap();
  // Idle connections no longer hold the process up; while their goodbyes are under way it must
  // stay up for them, or a script's last `await closeAll()` would end unsettled.
  const stayUp = setInterval(() => {}, 60_000);
  try {
    // An ORM and the client it holds may have opened one store by two promises: close it once.
    const closing = new Set<LockStore>();
    await Promise.allSettled(
      stores.map(async (entry) => {
        const store = await entry;
        if (closing.has(store)) return;
        closing.add(store);
        await store.close?.();
      }),
    );
  } finally {
    clearInterval(stayUp);
  }
}
