import type { LockStore } from 'cachelock';
import { clientLibrary, driverFor } from './driver.js';
import { openClient } from './open.js';
import { RedisStore, type RedisStoreOptions } from './store.js';

export { type ClientLibrary, clientLibrary } from './driver.js';
export {
  encodeTag,
  hashTag,
  keySlot,
  type LockKeys,
  leaseKey,
  lockKeys,
  type SharedKeys,
  type SharedNamespace,
  sharedKeys,
} from './keys.js';
export { RedisStore, type RedisStoreOptions, SHARED_FENCE_LINGER_MS } from './store.js';

/**
 * A lock store on an ioredis `Redis` or `Cluster`, or a node-redis client or cluster (v4 and
 * later). The client stays the caller's: `close()` does not end it.
 */
export function redisStore(client: object, options?: RedisStoreOptions): RedisStore {
  const library = clientLibrary(client);
  if (library === undefined) {
    throw new TypeError(
      'redisStore: expected an ioredis Redis/Cluster or a node-redis client/cluster',
    );
  }
  return new RedisStore(driverFor(client, library), options);
}

/** For the core's scheme registry: the store opens its own client and `close()` ends it. */
export async function storeFromUrl(url: URL): Promise<LockStore> {
  return new RedisStore(await openClient(url), {}, true);
}

/** For the core's client recognition: wrap a client the user made. */
export function storeFromClient(client: unknown): LockStore {
  return redisStore(client as object);
}

/** @internal For `cachelock/redlock`: drive any supported client, open one for a URL. */
export { driverFor, type RedisDriver, runScript } from './driver.js';
/** @internal */
export { openClient, openRedisClient } from './open.js';
/** @internal */
export { type Script, script } from './script.js';
