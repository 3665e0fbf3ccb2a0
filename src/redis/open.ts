import type { IoredisLike, NodeRedisLike, RedisDriver } from './driver.js';
import { ownedDriver } from './owned.js';

// Names in variables, so that bundlers leave the client libraries out of our build: they are
// optional peers and the user installs the one they use.
const IOREDIS = 'ioredis';
const NODE_REDIS = 'redis';

/** Connection settings for a client the store opens: fail fast rather than queue forever. */
const CONNECT_TIMEOUT_MS = 2_000;
const retryDelay = (attempt: number) => Math.min(attempt * 100, 1_000);

/**
 * A client for a `redis://`, `rediss://`, `valkey://` or `valkeys://` URL, with ioredis if it
 * is installed, else node-redis.
 */
export async function openClient(url: URL): Promise<RedisDriver> {
  return (await openRedisClient(url)).driver;
}

/** {@link openClient}, with the client itself, for a caller that also watches its connection. */
export async function openRedisClient(url: URL): Promise<{
  client: IoredisLike | NodeRedisLike;
  library: 'ioredis' | 'node-redis';
  driver: RedisDriver;
}> {
  const href = url.href.replace(/^valkey(s?):/i, 'redis$1:');
  const ioredis = await importOptional(IOREDIS);
  if (ioredis) {
    const Redis = (ioredis.Redis ?? ioredis.default) as new (
      url: string,
      options: object,
    ) => IoredisLike;
    const client = new Redis(href, {
      connectTimeout: CONNECT_TIMEOUT_MS,
      // A command waiting for a dead server fails after one reconnect attempt instead of
      // sitting in the offline queue until the server comes back.
      maxRetriesPerRequest: 1,
      retryStrategy: retryDelay,
      enableAutoPipelining: true,
    });
    client.on('error', () => {});
    return { client, library: 'ioredis', driver: ownedDriver(client, 'ioredis') };
  }
  const nodeRedis = await importOptional(NODE_REDIS);
  if (nodeRedis) {
    let driver: ReturnType<typeof ownedDriver> | undefined;
    const client = (nodeRedis.createClient as (options: object) => NodeRedisLike)({
      url: href,
      socket: {
        connectTimeout: CONNECT_TIMEOUT_MS,
        // node-redis waits between attempts on a referenced timer, which would keep a script
        // alive as long as the server is down: it retries only while a command waits, and the
        // next command connects again.
        reconnectStrategy: (attempt: number) => (driver?.busy() ? retryDelay(attempt) : false),
      },
    });
    client.on('error', () => {});
    driver = ownedDriver(client, 'node-redis');
    client.connect().catch(() => {});
    return { client, library: 'node-redis', driver };
  }
  throw new Error(
    `cachelock/redis needs a Redis client library for ${url.protocol} URLs: npm install ioredis (or redis)`,
  );
}

async function importOptional(name: string): Promise<Record<string, any> | undefined> {
  try {
    return await import(name);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ERR_MODULE_NOT_FOUND') return undefined;
    throw error;
  }
}
