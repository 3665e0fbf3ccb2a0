import type { LentPool } from 'cachelock';

/**
 * The two drivers behind one small interface: the store's statements go through `Db` (the
 * user's pool or connection), wake-ups through `Session`s (connections the store opens itself
 * with the same settings, so that a blocking GET_LOCK never holds one of the app's connections).
 */

type Shape = Record<string, any>;
const fn = (value: unknown, name: string): boolean =>
  typeof value === 'object' && value !== null && typeof (value as Shape)[name] === 'function';

/** What a data-changing statement reports. */
export interface Outcome {
  affectedRows: number;
  /** The value of the statement's last `LAST_INSERT_ID(expr)`, else 0. */
  insertId: bigint;
}

export type Row = Record<string, unknown>;

/** What the store needs of a pool or a connection of either driver. */
export interface Db {
  readonly driver: 'mysql2' | 'mariadb';
  change(sql: string, values: unknown[]): Promise<Outcome>;
  select(sql: string, values: unknown[]): Promise<Row[]>;
  end(): Promise<void>;
}

/** A connection of the store's own, for wake-ups. */
export interface Session {
  select(sql: string, values: unknown[]): Promise<Row[]>;
  /** Called once when the connection fails or ends. */
  onLost(listener: () => void): void;
  /** An idle session must not keep the process alive (where the driver lets us say so). */
  ref(active: boolean): void;
  close(): Promise<void>;
  /** Drop the connection now, even in the middle of a statement. */
  destroy(): void;
}

export type Opener = () => Promise<Session>;

/** mysql2's own (callback) pool or connection: `promise()` wraps it. */
function isMysql2Core(c: unknown): boolean {
  return fn(c, 'query') && fn(c, 'execute') && fn(c, 'promise') && 'config' in (c as Shape);
}

/** A mysql2 `Pool` or `Connection`, of its callback or its promise API. */
export function isMysql2(c: unknown): boolean {
  if (typeof c !== 'object' || c === null) return false;
  const shape = c as Shape;
  return (
    isMysql2Core(c) ||
    (fn(c, 'query') &&
      fn(c, 'execute') &&
      (isMysql2Core(shape.pool) || isMysql2Core(shape.connection)))
  );
}

/** A mariadb `Pool` or `Connection` of its promise API (the default one). */
export function isMariadb(c: unknown): boolean {
  return fn(c, 'query') && fn(c, 'batch') && fn(c, 'importFile') && !fn(c, 'promise');
}

/** The mysql2 core object under a promise wrapper, or the object itself. */
function mysql2Core(c: Shape): Shape {
  if (isMysql2Core(c)) return c;
  return isMysql2Core(c.pool) ? c.pool : c.connection;
}

/** The settings a mysql2 pool or connection connects with (the password included). */
export function mysql2Config(c: unknown): Shape | undefined {
  const core = mysql2Core(c as Shape);
  const config = core.config as Shape | undefined;
  return (config?.connectionConfig as Shape | undefined) ?? config;
}

const toBigInt = (value: unknown): bigint =>
  value === undefined || value === null ? 0n : BigInt(String(value));

// InnoDB may pick a statement as a deadlock victim when several insert the same new key at
// once; it rolled the statement back whole, so running it again is safe.
const DEADLOCK = 1213;
const DEADLOCK_RETRIES = 5;

async function retried<T>(run: () => Promise<T>): Promise<T> {
  for (let attempt = 0; ; attempt++) {
    try {
      return await run();
    } catch (error) {
      if ((error as { errno?: number }).errno !== DEADLOCK || attempt >= DEADLOCK_RETRIES) {
        throw error;
      }
    }
  }
}

export function wrapDb(client: unknown, end?: () => Promise<void>): Db {
  if (isMysql2(client)) {
    const core = mysql2Core(client as Shape);
    const promised = core.promise() as Shape;
    return {
      driver: 'mysql2',
      async change(sql, values) {
        const [result] = (await retried(() => promised.query(sql, values))) as [Shape];
        return { affectedRows: Number(result.affectedRows), insertId: toBigInt(result.insertId) };
      },
      async select(sql, values) {
        const [rows] = (await promised.query(sql, values)) as [Row[]];
        return rows;
      },
      end: end ?? (async () => {}),
    };
  }
  if (isMariadb(client)) {
    const db = client as Shape;
    return {
      driver: 'mariadb',
      async change(sql, values) {
        const result = (await retried(() => db.query(sql, values))) as Shape;
        return { affectedRows: Number(result.affectedRows), insertId: toBigInt(result.insertId) };
      },
      async select(sql, values) {
        return (await db.query(sql, values)) as Row[];
      },
      end: end ?? (async () => {}),
    };
  }
  throw new TypeError(
    'mysqlStore: expected a mysql2 Pool or Connection (callback or promise API) or a mariadb Pool or Connection (promise API)',
  );
}

/** Sessions for a mysql2 client: its `Connection` class with the client's own settings. */
export function mysql2Opener(config: Shape): Opener {
  return async () => {
    const mysql2 = (await loadDriver('mysql2')) as Shape;
    return mysql2Session(new mysql2.Connection({ config }) as Shape);
  };
}

/** A session on a mysql2 (callback API) connection of the store's own. */
async function mysql2Session(connection: Shape): Promise<Session> {
  const lost = new Set<() => void>();
  let gone = false;
  const fail = () => {
    if (gone) return;
    gone = true;
    for (const listener of lost) listener();
  };
  connection.on('error', fail);
  connection.on('end', fail);
  const select = (sql: string, values: unknown[]) =>
    new Promise<Row[]>((resolve, reject) =>
      connection.query(sql, values, (error: Error | null, rows: Row[]) =>
        error ? reject(error) : resolve(rows),
      ),
    );
  await select('SELECT 1', []);
  return {
    select,
    onLost: (listener) => lost.add(listener),
    ref(active) {
      const stream = connection.stream as { ref?(): void; unref?(): void } | undefined;
      if (active) stream?.ref?.();
      else stream?.unref?.();
    },
    close: () =>
      new Promise<void>((resolve) => {
        gone = true;
        connection.end(() => resolve());
        setTimeout(() => {
          connection.destroy();
          resolve();
        }, 1_000).unref();
      }),
    destroy() {
      gone = true;
      connection.destroy();
    },
  };
}

/** Sessions for the mariadb driver, from connection options or a `mariadb://` URL. */
export function mariadbOpener(options: Shape | string): Opener {
  return async () => {
    const mariadb = (await loadDriver('mariadb')) as Shape;
    return mariadbSession((await mariadb.createConnection(options)) as Shape);
  };
}

/** A session on a mariadb (promise API) connection of the store's own. */
function mariadbSession(connection: Shape): Session {
  const lost = new Set<() => void>();
  let gone = false;
  const fail = () => {
    if (gone) return;
    gone = true;
    for (const listener of lost) listener();
  };
  connection.on('error', fail);
  connection.on('end', fail);
  return {
    select: (sql, values) => connection.query(sql, values) as Promise<Row[]>,
    onLost: (listener) => lost.add(listener),
    // The driver keeps its socket private; the store closes idle sessions soon instead.
    ref() {},
    async close() {
      gone = true;
      await Promise.race([
        connection.end().catch(() => connection.destroy()),
        new Promise((resolve) => setTimeout(resolve, 1_000).unref()),
      ]);
      connection.destroy();
    },
    destroy() {
      gone = true;
      connection.destroy();
    },
  };
}

export async function loadDriver(name: 'mysql2' | 'mariadb'): Promise<unknown> {
  try {
    const module = (await import(name)) as Shape;
    return module.default ?? module;
  } catch (error) {
    throw new Error(`cachelock/mysql needs the ${name} package: npm install ${name}`, {
      cause: error,
    });
  }
}

/**
 * The store's statements on a pool of an ORM's (knex, Sequelize): each borrows a connection
 * and gives it back when it is answered. Which driver made the connections is read from the
 * first one lent.
 */
export async function lentDb(pool: LentPool): Promise<Db> {
  const driver = await pool.borrow((connection) =>
    isMysql2(connection) ? 'mysql2' : isMariadb(connection) ? 'mariadb' : undefined,
  );
  if (driver === undefined) {
    throw new TypeError(
      `cachelock/mysql: ${pool.library} lends connections of neither mysql2 nor mariadb`,
    );
  }
  return {
    driver,
    change: (sql, values) => pool.borrow((connection) => wrapDb(connection).change(sql, values)),
    select: (sql, values) => pool.borrow((connection) => wrapDb(connection).select(sql, values)),
    end: async () => {},
  };
}

/** Sessions on connections an ORM opens outside its pool, with its own settings. */
export function lentOpener(pool: LentPool): Opener | undefined {
  const { openOwn } = pool;
  if (openOwn === undefined) return undefined;
  return async () => {
    const connection = (await openOwn()) as Shape;
    return isMysql2(connection) ? mysql2Session(connection) : mariadbSession(connection);
  };
}
