import { resolve } from 'node:path';

/**
 * Recognises what `cache` accepts by its shape, without importing any client library: the
 * clients each backend wraps, and the query builders and ORMs that hold one of those clients
 * (or a pool of their own, which a store then borrows from one operation at a time).
 */

type Shape = Record<string, any>;
const fn = (value: Shape, name: string): boolean => typeof value?.[name] === 'function';
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

/** The SQL databases whose clients an ORM may hold, and the entry point for each. */
export type SqlDialect = 'postgres' | 'mysql' | 'sqlite';

const ENTRY: Record<SqlDialect, string> = {
  postgres: 'cachelock/postgres',
  mysql: 'cachelock/mysql',
  sqlite: 'cachelock/sqlite',
};

/** Tells a lent pool from a client (a symbol from the global registry, so two copies agree). */
export const LENT_POOL: unique symbol = Symbol.for('cachelock.lentPool') as any;

/**
 * A pool that a query builder or an ORM owns and keeps to itself (knex, Sequelize), lent to a
 * store one connection per operation: the connection goes back as soon as the operation
 * settles, so locks never keep one of the app's connections while idle or waiting.
 */
export interface LentPool<Connection = unknown> {
  readonly [LENT_POOL]: true;
  readonly dialect: SqlDialect;
  /** `'knex'`, `'Sequelize'`: for messages. */
  readonly library: string;
  /** Run `use` on a connection from the pool, and give it back when `use` settles. */
  borrow<T>(use: (connection: Connection) => Promise<T> | T): Promise<T>;
  /**
   * Open a connection outside the pool, with the pool's settings, that the caller ends (a
   * listener for wake-ups); undefined where the library cannot open one.
   */
  readonly openOwn?: () => Promise<Connection>;
  /** Where its connections go, such as `{ host, port }`, for messages. */
  readonly settings?: Shape;
}

export function isLentPool(value: unknown): value is LentPool {
  return typeof value === 'object' && value !== null && (value as LentPool)[LENT_POOL] === true;
}

/** A client a backend wraps, and that backend's entry point. */
export interface BackendClient {
  /** The entry point that wraps it. */
  entry: string;
  /** What that entry point's `storeFromClient` gets: a client, or a `LentPool`. */
  client: object;
}

/**
 * The file of an ORM's SQLite database, which cachelock opens on a connection of its own (a
 * `sqlite:` URL), since a lock's statements on the ORM's own `Database` would join its
 * transactions.
 */
export interface BackendFile {
  url: URL;
}

/** What `cache` was recognised as. */
export interface Recognised {
  /** What it is, in the user's words: `'pg Pool or Client'`, `'knex (pg)'`. */
  name: string;
  /**
   * The client itself, the client an ORM holds, or a `LentPool`, with the entry point that
   * wraps it. Read only when the store is made, and it may resolve later: an ORM may connect
   * late (TypeORM) or hand over its client only asynchronously (MikroORM 7).
   */
  backend(): BackendClient | BackendFile | Promise<BackendClient | BackendFile>;
  /** One store per key: the client itself, or the pool an ORM holds (shared by its wrappers). */
  key(): object;
}

interface Recogniser {
  name: string;
  matches(value: Shape): boolean;
  /** A client, for a backend entry point. */
  entry?: string;
  /** An ORM: what it holds, recognised in turn; or a reason to refuse it. */
  inner?(value: Shape, option: string): Recognised;
}

/** Thrown when `cache` is an ORM whose connection cannot be used for locks. */
function refuse(option: string, message: string): never {
  throw new TypeError(`${option}: ${message}`);
}

// Order matters: more specific shapes first, since several clients have get/set/delete, and
// ORMs before clients, since an ORM may also have `query` and `connect`.
const recognisers: Recogniser[] = [
  {
    name: 'PrismaClient',
    matches: (c) => fn(c, '$queryRaw') && fn(c, '$executeRaw') && fn(c, '$connect'),
    inner: (_, option) =>
      refuse(
        option,
        'a PrismaClient runs raw SQL on a pool of its own and lends no connection that a lock could use; pass a pg Pool (new pg.Pool({ connectionString: process.env.DATABASE_URL })) or the database URL itself (postgres://...)',
      ),
  },
  {
    // Drizzle keeps the client it was given (or made from a URL) as `$client`.
    name: 'Drizzle',
    matches: (c) => '$client' in c && fn(c, 'select') && fn(c, 'transaction'),
    inner: (c, option) => {
      const { name, backend } = held(
        option,
        'Drizzle',
        c.$client,
        'a node-postgres, better-sqlite3 or mysql2 client',
      );
      return { name, backend: () => backend, key: () => backend.client };
    },
  },
  {
    name: 'Kysely',
    matches: (c) => fn(c, 'selectFrom') && fn(c, 'getExecutor') && fn(c, 'withoutPlugins'),
    inner: (_, option) =>
      refuse(
        option,
        'Kysely keeps its pool private, so cachelock cannot borrow from it nor open a listener beside it; pass the client you gave its dialect instead: the pg Pool of new PostgresDialect({ pool }), the better-sqlite3 Database of new SqliteDialect({ database }), or the mysql2 pool of new MysqlDialect({ pool })',
      ),
  },
  {
    // knex is a function with a `client` that owns a pool; MikroORM (v6) runs on knex too.
    name: 'knex',
    matches: (c) =>
      fn(c, 'raw') && fn(c.client, 'acquireConnection') && fn(c.client, 'releaseConnection'),
    inner: (c, option) => knexPool(option, c),
  },
  {
    name: 'TypeORM DataSource',
    matches: (c) =>
      fn(c, 'createQueryRunner') && fn(c, 'initialize') && typeof c.driver === 'object',
    inner: (c, option) => typeOrm(option, c),
  },
  {
    // The MikroORM instance (`em`), an EntityManager (`getDriver`), a driver (`getPlatform`), a
    // connection: v6's runs on knex (`getKnex`), v7's hands over its client (`getNativeClient`).
    name: 'MikroORM',
    matches: (c) =>
      fn(c.em, 'getConnection') ||
      (fn(c, 'getConnection') && (fn(c, 'getDriver') || fn(c, 'getPlatform'))) ||
      fn(c, 'getKnex') ||
      (fn(c, 'getNativeClient') && fn(c, 'getPlatform')),
    inner: (c, option) => mikroOrm(option, c),
  },
  {
    name: 'Sequelize',
    matches: (c) =>
      fn(c, 'getDialect') &&
      fn(c.connectionManager, 'getConnection') &&
      fn(c.connectionManager, 'releaseConnection'),
    inner: (c, option) => sequelizePool(option, c),
  },
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

/**
 * What `value` is, or undefined when it is not a client or an ORM we know. Throws a TypeError
 * naming `option` for an ORM whose connection cannot serve locks (Prisma, Kysely, a
 * transaction), saying what to pass instead.
 */
export function recogniseClient(value: object, option = 'cache'): Recognised | undefined {
  for (const recogniser of recognisers) {
    if (!recogniser.matches(value as Shape)) continue;
    if (recogniser.inner) return recogniser.inner(value as Shape, option);
    const backend = { entry: recogniser.entry as string, client: value };
    return { name: recogniser.name, backend: () => backend, key: () => value };
  }
  return undefined;
}

/**
 * The client an ORM holds, which must itself be one a SQL backend wraps (not another ORM), and
 * what the ORM is called for it: `'Drizzle (pg Pool or Client)'`.
 */
function held(
  option: string,
  orm: string,
  client: unknown,
  expected: string,
): { name: string; backend: BackendClient } {
  const found =
    typeof client === 'object' && client !== null
      ? recognisers.find((recogniser) => recogniser.entry && recogniser.matches(client))
      : undefined;
  if (
    found?.entry === undefined ||
    found.entry === 'cachelock/redis' ||
    found.entry === 'cachelock/keyv'
  ) {
    refuse(option, `${orm} holds no client cachelock knows (it knows ${expected})`);
  }
  return {
    name: `${orm} (${found.name})`,
    backend: { entry: found.entry, client: client as object },
  };
}

/**
 * An ORM that keeps its transactions open across awaits on its one better-sqlite3 `Database`
 * (TypeORM, MikroORM 7): a lock's statements there would join whatever transaction is open, and
 * its rollback would undo a release, an extension or a grant. cachelock opens the same file on
 * a connection of its own instead, through the same library (two copies of SQLite in one
 * process do not see each other's locks); an in-memory database, which no other connection can
 * open, is refused.
 */
function ownConnection(option: string, orm: string, database: unknown): BackendFile {
  const { name, memory, pragma } = (database ?? {}) as Shape;
  if (memory === true || typeof name !== 'string' || name === '' || name === ':memory:') {
    refuse(
      option,
      `${orm} runs on an in-memory SQLite database, which no other connection can open; give it a file, or pass 'memory:' for locks within this process`,
    );
  }
  const path = resolve(name);
  const url = new URL(`sqlite:${path.split('/').map(encodeURIComponent).join('/')}`);
  url.searchParams.set('driver', typeof pragma === 'function' ? 'better-sqlite3' : 'node:sqlite');
  return { url };
}

function lent(name: string, dialect: SqlDialect, pool: () => LentPool, key: object): Recognised {
  let made: LentPool | undefined;
  return {
    name,
    backend: () => ({ entry: ENTRY[dialect], client: (made ??= pool()) }),
    key: () => key,
  };
}

/**
 * knex's driver names for the databases cachelock has a backend for; `mariadb` is the knex
 * dialect MikroORM's MariaDB driver brings (the mariadb package's callback API).
 */
const KNEX_DRIVERS: Record<string, SqlDialect> = {
  pg: 'postgres',
  'better-sqlite3': 'sqlite',
  mysql2: 'mysql',
  mariadb: 'mysql',
};

function knexPool(option: string, knex: Shape, orm = 'knex'): Recognised {
  if (knex.isTransaction === true) {
    refuse(
      option,
      `a ${orm} transaction: the lock's statements would join it and vanish on rollback; pass the knex instance itself`,
    );
  }
  const client = knex.client as Shape;
  const driver = String(client.driverName ?? client.config?.client ?? '');
  const dialect = KNEX_DRIVERS[driver];
  if (dialect === undefined) {
    refuse(
      option,
      `${orm} with the ${JSON.stringify(driver)} driver: cachelock runs on knex with pg, better-sqlite3, mysql2 or (under MikroORM) mariadb`,
    );
  }
  const pool = (): LentPool => ({
    [LENT_POOL]: true,
    dialect,
    library: orm,
    async borrow(use) {
      const connection = await client.acquireConnection();
      try {
        return await use(connection);
      } finally {
        await client.releaseConnection(connection);
      }
    },
    // knex's own way of opening a pool connection (search path and all), outside the pool.
    openOwn: fn(client, 'acquireRawConnection') ? () => client.acquireRawConnection() : undefined,
    settings: typeof client.connectionSettings === 'object' ? client.connectionSettings : undefined,
  });
  return lent(`${orm} (${driver})`, dialect, pool, client);
}

function mikroOrm(option: string, value: Shape): Recognised {
  // MikroORM, its EntityManager (and forks), its driver, or the driver's connection.
  const connection: Shape =
    fn(value, 'getKnex') || fn(value, 'getNativeClient')
      ? value
      : fn(value.em, 'getConnection')
        ? value.em.getConnection('write')
        : value.getConnection('write');
  if (fn(connection, 'getKnex')) return knexPool(option, connection.getKnex(), 'MikroORM');
  // MikroORM 7 runs on Kysely, which keeps its pool private; the connection hands over the
  // driver's own client (pg Pool, mysql2 pool) once it has connected.
  const given = connection.options?.driverOptions ?? connection.config?.get?.('driverOptions');
  if (fn(given, 'createDriver') || fn(given, 'selectFrom')) {
    refuse(
      option,
      'this MikroORM runs on a Kysely instance or dialect given as driverOptions, which keeps its pool private; pass the pg Pool or mysql2 pool you gave that dialect instead (on SQLite, the file itself: sqlite:/path/to/file)',
    );
  }
  if (!fn(connection, 'getNativeClient')) {
    refuse(
      option,
      'this MikroORM connection lends no pool that cachelock can borrow from (it has neither getKnex() nor getNativeClient()); pass a pg Pool, a mysql2 pool, a better-sqlite3 Database or the database URL itself',
    );
  }
  return {
    name: 'MikroORM',
    backend: async () => {
      const { backend } = held(
        option,
        'MikroORM',
        await connection.getNativeClient(),
        'the pg Pool and mysql2 pool its connection resolves',
      );
      return backend.entry === ENTRY.sqlite
        ? ownConnection(option, 'MikroORM 7', backend.client)
        : backend;
    },
    // The forks of an EntityManager, its MikroORM and its driver share this connection.
    key: () => connection,
  };
}

/** TypeORM driver types, and where each keeps its client. */
function typeOrm(option: string, source: Shape): Recognised {
  const driver = source.driver as Shape;
  const type = String(driver.options?.type ?? source.options?.type);
  const inner = (): object => {
    if (source.isInitialized === false) {
      throw new TypeError(
        `${option}: the TypeORM DataSource is not initialized; await dataSource.initialize() before locking`,
      );
    }
    // The pool that takes writes: `master` (postgres), `pool` or `poolCluster` (mysql, mariadb),
    // `databaseConnection` (better-sqlite3).
    return driver.master ?? driver.pool ?? driver.poolCluster ?? driver.databaseConnection;
  };
  const dialect: SqlDialect | undefined =
    type === 'postgres'
      ? 'postgres'
      : type === 'mysql' || type === 'mariadb'
        ? 'mysql'
        : type === 'better-sqlite3'
          ? 'sqlite'
          : undefined;
  if (dialect === undefined) {
    refuse(
      option,
      `a TypeORM DataSource of type ${JSON.stringify(type)}: cachelock runs on its postgres, mysql, mariadb and better-sqlite3 types`,
    );
  }
  return {
    name: `TypeORM DataSource (${type})`,
    backend: () =>
      dialect === 'sqlite'
        ? ownConnection(option, 'TypeORM DataSource', inner())
        : held(option, 'TypeORM DataSource', inner(), 'pg, mysql2, mariadb and better-sqlite3')
            .backend,
    key: () => (source.isInitialized === false ? source : inner()),
  };
}

const SEQUELIZE_DIALECTS: Record<string, SqlDialect> = {
  postgres: 'postgres',
  mysql: 'mysql',
  mariadb: 'mysql',
};

function sequelizePool(option: string, sequelize: Shape): Recognised {
  const name = String(sequelize.getDialect());
  const dialect = SEQUELIZE_DIALECTS[name];
  if (dialect === undefined) {
    refuse(
      option,
      name === 'sqlite'
        ? "Sequelize's sqlite dialect runs on the sqlite3 package, which cachelock/sqlite does not drive; pass the file itself (sqlite:/path/to/file) or a better-sqlite3 Database on it"
        : `Sequelize with the ${JSON.stringify(name)} dialect: cachelock runs on its postgres, mysql and mariadb dialects`,
    );
  }
  const manager = sequelize.connectionManager as Shape;
  const pool = (): LentPool => ({
    [LENT_POOL]: true,
    dialect,
    library: 'Sequelize',
    async borrow(use) {
      // `write`: with replication, the primary; locks must never be read from a replica.
      const connection = await manager.getConnection({ type: 'write', useMaster: true });
      try {
        return await use(connection);
      } finally {
        await manager.releaseConnection(connection);
      }
    },
    // Sequelize's own way of connecting (dialect options and all), outside its pool.
    openOwn: fn(manager, 'connect')
      ? () => {
          const config = manager.config as Shape;
          return manager.connect(config.replication ? config.replication.write : config);
        }
      : undefined,
    settings: typeof manager.config === 'object' ? manager.config : undefined,
  });
  return lent(`Sequelize (${name})`, dialect, pool, manager);
}
