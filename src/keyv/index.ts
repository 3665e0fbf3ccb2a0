/**
 * `cachelock/keyv`: locks on the cache an application already configured through Keyv or
 * cache-manager (and so NestJS's `CacheModule`). Behind `@keyv/redis` and `@keyv/postgres` the
 * locks go through cachelock's atomic Redis and PostgreSQL stores; behind any other adapter
 * (the built-in `Map`, ...) through the plain-cache adapter, which warns once that it is exclusive
 * only within one process (Keyv has no set-if-absent or compare-and-set). A value under a lock's
 * key that cachelock did not write is held by an unknown owner on either path.
 */
import { debuglog } from 'node:util';
import { type Duration, type LockStore, toMs } from 'cachelock';
import { nativeStoreFor } from './native.js';
import { KeyvPlainStore } from './plain.js';
import {
  adapterOf,
  type CacheManagerLike,
  isCacheManager,
  isKeyv,
  type KeyvLike,
  namespaceOf,
} from './shapes.js';
import { KeyvLockStore } from './store.js';

export type { CacheManagerLike, KeyvLike } from './shapes.js';
export { isCacheManager, isKeyv } from './shapes.js';
export { KeyvLockStore } from './store.js';

const debug = debuglog('cachelock');

export interface KeyvStoreOptions {
  /**
   * How long to wait for the client behind the Keyv to connect (default `'5s'`); past it, or
   * as soon as the client gives up, `keyvStore` rejects with where and why.
   */
  connectTimeout?: Duration;
}

/**
 * A lock store on a Keyv, or on a cache-manager `Cache` (its first tier that reaches Redis or
 * PostgreSQL, else its first tier). Resolves once the backend's client is connected; rejects if
 * it cannot be. `kind` tells the path: `'keyv+redis'`, `'keyv+postgres'` (atomic, the Keyv's
 * namespace in front of every key) or `'keyv'` (plain-cache adapter, not atomic). The Keyv stays
 * the caller's: `close()` frees only what cachelock opened.
 */
export async function keyvStore(
  cache: KeyvLike | CacheManagerLike,
  options: KeyvStoreOptions = {},
): Promise<LockStore> {
  const connectTimeoutMs = toMs('connectTimeout', options.connectTimeout ?? '5s');
  const tiers = tiersOf(cache);
  // A multi-tier cache usually puts process memory first and the shared server after it; the
  // lock belongs on the shared one.
  for (const keyv of tiers) {
    const adapter = adapterOf(keyv);
    if (adapter === undefined) continue;
    const native = await nativeStoreFor(adapter, connectTimeoutMs);
    if (native === undefined) continue;
    const store = new KeyvLockStore(native, namespaceOf(keyv));
    debug(
      'keyv: locking through the %s store behind %s (atomic), keys prefixed %j',
      native.backend,
      adapterName(keyv),
      store.keyPrefix,
    );
    return store;
  }
  const first = tiers[0]!;
  debug(
    'keyv: no Redis or PostgreSQL client reachable behind %s; plain-cache adapter (exclusive within this process only)',
    adapterName(first),
  );
  return new KeyvPlainStore(first);
}

function tiersOf(cache: unknown): KeyvLike[] {
  if (isCacheManager(cache)) {
    const tiers = cache.stores.filter(isKeyv);
    if (tiers.length === 0) {
      throw new TypeError('keyvStore: this cache-manager Cache has no Keyv in its stores');
    }
    return tiers;
  }
  if (isKeyv(cache)) return [cache];
  throw new TypeError('keyvStore: expected a Keyv instance or a cache-manager Cache');
}

function adapterName(keyv: KeyvLike): string {
  const adapter = adapterOf(keyv);
  return adapter === undefined ? 'Map' : (adapter.constructor?.name ?? 'an adapter');
}

/** For the core's client recognition: a Keyv or a cache-manager `Cache` given as `cache`. */
export function storeFromClient(client: unknown): Promise<LockStore> {
  return keyvStore(client as KeyvLike);
}

/** Keyv has no URL scheme of its own: give the Keyv instance, or the backend's URL. */
export function storeFromUrl(url: URL): never {
  throw new TypeError(
    `cachelock/keyv opens no URLs (got ${url.protocol}); pass the Keyv or cache-manager instance as cache, or the backend's own URL (redis://, postgres://)`,
  );
}
