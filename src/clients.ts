/**
 * Recognises the clients that `cache` accepts by their shape, without importing any client
 * library, and names the entry point that wraps each.
 */

type Shape = Record<string, unknown>;
const fn = (value: Shape, name: string): boolean => typeof value[name] === 'function';
const ctor = (value: Shape): string | undefined =>
  (value.constructor as { name?: string } | undefined)?.name;

// mysql2's own pool or connection, which its promise wrappers keep as `pool` or `connection`.
const mysql2Core = (value: Shape | undefined): boolean =>
  typeof value === 'object' &&
  value !== null &&
  fn(value, 'query') &&
  fn(value, 'execute') &&
  fn(value, 'promise') &&
  'config' in value;

interface Recogniser {
  entry: string;
  name: string;
  matches(value: Shape): boolean;
}

// Order matters: more specific shapes first, since several clients have get/set/delete.
const recognisers: Recogniser[] = [
  {
    entry: 'cachelock/redis',
    name: 'ioredis client',
    matches: (c) => fn(c, 'evalsha') && fn(c, 'defineCommand') && fn(c, 'duplicate'),
  },
  {
    entry: 'cachelock/redis',
    name: 'node-redis client',
    matches: (c) =>
      fn(c, 'sendCommand') && (fn(c, 'scriptLoad') || fn(c, 'SCRIPT_LOAD') || fn(c, 'evalSha')),
  },
  {
    entry: 'cachelock/postgres',
    name: 'pg Pool or Client',
    matches: (c) =>
      fn(c, 'query') && fn(c, 'connect') && ('totalCount' in c || 'connectionParameters' in c),
  },
  {
    entry: 'cachelock/mysql',
    name: 'mysql2 Pool or Connection',
    matches: (c) =>
      fn(c, 'query') &&
      fn(c, 'execute') &&
      ((fn(c, 'promise') && 'config' in c) ||
        mysql2Core(c.pool as Shape) ||
        mysql2Core(c.connection as Shape)),
  },
  {
    entry: 'cachelock/mysql',
    name: 'mariadb Pool or Connection',
    matches: (c) => fn(c, 'query') && fn(c, 'batch') && fn(c, 'importFile'),
  },
  {
    entry: 'cachelock/memcached',
    name: 'memjs Client',
    matches: (c) => fn(c, 'add') && fn(c, 'increment') && Array.isArray(c.servers),
  },
  {
    entry: 'cachelock/sqlite',
    name: 'SQLite database',
    matches: (c) =>
      fn(c, 'prepare') && fn(c, 'exec') && (fn(c, 'pragma') || ctor(c) === 'DatabaseSync'),
  },
  {
    entry: 'cachelock/etcd',
    name: 'etcd3 client',
    matches: (c) =>
      Buffer.isBuffer(c.prefix) &&
      fn(c, 'watch') &&
      fn(c, 'lease') &&
      typeof c.leaseClient === 'object',
  },
  {
    entry: 'cachelock/keyv',
    name: 'Keyv or cache-manager cache',
    matches: (c) =>
      ctor(c) === 'Keyv' ||
      (fn(c, 'get') && fn(c, 'set') && 'opts' in c && 'namespace' in c && fn(c, 'iterator')) ||
      (Array.isArray(c.stores) && fn(c, 'wrap') && fn(c, 'get')),
  },
];

/** The entry point that wraps `value`, or undefined when it is not a client we know. */
export function recogniseClient(value: object): { entry: string; name: string } | undefined {
  for (const recogniser of recognisers) {
    if (recogniser.matches(value as Shape)) return recogniser;
  }
  return undefined;
}
