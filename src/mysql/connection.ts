import { connect, type Socket } from 'node:net';
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
export interface Db extends Query {
  readonly driver: 'mysql2' | 'mariadb';
  /**
   * Run `work` in one transaction on one connection, committed when it resolves and rolled back
   * when it throws. A deadlock victim is run again whole (InnoDB rolled it back already).
   */
  transact<T>(work: (query: Query) => Promise<T>): Promise<T>;
  end(): Promise<void>;
}

/** Statements on a pool, a connection, or one transaction's connection. */
export interface Query {
  change(sql: string, values: unknown[]): Promise<Outcome>;
  select(sql: string, values: unknown[]): Promise<Row[]>;
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
  return (
    fn(c, 'query') &&
    fn(c, 'batch') &&
    fn(c, 'importFile') &&
    !fn(c, 'promise') &&
    !isMariadbCallback(c)
  );
}

/**
 * A mariadb `Connection` of its callback API (`mariadb/callback`), as MikroORM's knex lends:
 * only that API has `connect(callback)`.
 */
export function isMariadbCallback(c: unknown): boolean {
  return (
    fn(c, 'query') &&
    fn(c, 'batch') &&
    fn(c, 'importFile') &&
    fn(c, 'connect') &&
    !fn(c, 'promise') &&
    !fn(c, 'getConnection')
  );
}

/** The promise-API members the store uses, over a mariadb callback-API connection. */
function promisedMariadb(connection: Shape): Shape {
  const call =
    (method: string) =>
    (...args: unknown[]) =>
      new Promise((resolve, reject) =>
        connection[method](...args, (error: Error | null, result: unknown) =>
          error ? reject(error) : resolve(result),
        ),
      );
  return {
    query: (sql: string, values?: unknown[]) => call('query')(sql, values ?? []),
    end: call('end'),
    destroy: () => connection.destroy(),
    on: (event: string, listener: (...args: unknown[]) => void) => connection.on(event, listener),
  };
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

/** A promise-API pool or connection of either driver, as far as the store uses it. */
interface Client {
  query(sql: string, values?: unknown[]): Promise<unknown>;
  getConnection?(): Promise<Client & { release(): void }>;
}

// Inside a transaction a deadlock ends the whole transaction: the statement is not run again
// alone (it would run outside it), the transaction is. On a single connection `open` tells the
// transaction that owns it, if any: every try waits for it to end, since one can begin while a
// try is out, and sends the statement in the same step as it finds the connection free.
function queries(
  client: Client,
  driver: 'mysql2' | 'mariadb',
  alone = true,
  open?: () => Promise<unknown> | undefined,
): Query {
  // mysql2 resolves [result, fields], mariadb the result alone.
  const run = async (sql: string, values: unknown[]) => {
    for (let busy = open?.(); busy !== undefined; busy = open?.()) {
      await busy.catch(() => undefined);
    }
    const reply = await client.query(sql, values);
    return driver === 'mysql2' ? (reply as [unknown])[0] : reply;
  };
  return {
    async change(sql, values) {
      const result = (await (alone ? retried(() => run(sql, values)) : run(sql, values))) as Shape;
      return { affectedRows: Number(result.affectedRows), insertId: toBigInt(result.insertId) };
    },
    async select(sql, values) {
      return (await run(sql, values)) as Row[];
    },
  };
}

export function wrapDb(client: unknown, end?: () => Promise<void>): Db {
  let promised: Client;
  let driver: 'mysql2' | 'mariadb';
  if (isMysql2(client)) {
    const core = mysql2Core(client as Shape);
    promised = core.promise() as Client;
    driver = 'mysql2';
  } else if (isMariadb(client)) {
    promised = client as Client;
    driver = 'mariadb';
  } else if (isMariadbCallback(client)) {
    promised = promisedMariadb(client as Shape) as Client;
    driver = 'mariadb';
  } else {
    throw new TypeError(
      'mysqlStore: expected a mysql2 Pool or Connection (callback or promise API) or a mariadb Pool or Connection (promise API)',
    );
  }
  const pooled = typeof promised.getConnection === 'function';
  // On a single connection a transaction owns it: other statements wait until it ends, or they
  // would join it (and be rolled back with it).
  let open: Promise<unknown> | undefined;
  const direct = queries(promised, driver, true, pooled ? undefined : () => open);
  const once = async <T>(work: (query: Query) => Promise<T>): Promise<T> => {
    const connection = pooled ? await promised.getConnection!() : undefined;
    const session = connection ?? promised;
    const query = queries(connection ?? promised, driver, false);
    try {
      await session.query('BEGIN');
      let result: T;
      try {
        result = await work(query);
      } catch (error) {
        await session.query('ROLLBACK').catch(() => undefined);
        throw error;
      }
      await session.query('COMMIT');
      return result;
    } finally {
      connection?.release();
    }
  };
  const transact = async <T>(work: (query: Query) => Promise<T>): Promise<T> => {
    for (let attempt = 0; ; attempt++) {
      let run: Promise<T>;
      if (pooled) {
        run = once(work);
      } else {
        while (open !== undefined) await open.catch(() => undefined);
        run = once(work);
        const mine = run.finally(() => {
          if (open === mine) open = undefined;
        });
        mine.catch(() => undefined);
        open = mine;
      }
      try {
        return await run;
      } catch (error) {
        if ((error as { errno?: number }).errno !== DEADLOCK || attempt >= DEADLOCK_RETRIES) {
          throw error;
        }
      }
    }
  };
  return {
    driver,
    change: direct.change,
    select: direct.select,
    transact,
    end: end ?? (async () => {}),
  };
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
        // Referenced again, the process waits for the goodbye.
        (connection.stream as Referable | undefined)?.ref?.();
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

/** What the store needs of a connection's socket, to let an idle process exit. */
interface Referable {
  ref?(): void;
  unref?(): void;
  once?(event: 'close', listener: () => void): void;
}

/**
 * Let a pool the store opened keep the process alive only while one of its connections is lent
 * out: mysql2 and mariadb both announce each connection they lend (`acquire`) and take back
 * (`release`), with the driver's own connection, whose socket `socketOf` finds. Returns what to
 * call before ending the pool, so that the process waits for the goodbyes.
 */
export function referencedWhileLent(
  pool: Shape,
  socketOf: (connection: Shape) => Referable | undefined,
): () => void {
  const idle = new Set<Referable>();
  const watched = new WeakSet<Referable>();
  pool.on?.('acquire', (connection: Shape) => {
    const socket = socketOf(connection);
    if (socket === undefined) return;
    idle.delete(socket);
    socket.ref?.();
  });
  pool.on?.('release', (connection: Shape) => {
    const socket = socketOf(connection);
    if (socket === undefined || idle.has(socket)) return;
    idle.add(socket);
    if (!watched.has(socket)) {
      watched.add(socket);
      socket.once?.('close', () => idle.delete(socket));
    }
    socket.unref?.();
  });
  return () => {
    for (const socket of idle) socket.ref?.();
    idle.clear();
  };
}

/** Sessions for the mariadb driver, from connection options or a `mariadb://` URL. */
export function mariadbOpener(options: Shape | string): Opener {
  return async () => {
    const mariadb = (await loadDriver('mariadb')) as Shape;
    // The driver keeps its connection private behind the promise API: the store hands it the
    // socket (its `stream` option), so that an idle session can stop holding the process.
    const settings: Shape | string =
      typeof options !== 'string'
        ? { ...options }
        : typeof mariadb.defaultOptions === 'function'
          ? mariadb.defaultOptions(options)
          : options;
    let socket: Socket | undefined;
    if (
      typeof settings === 'object' &&
      settings.stream === undefined &&
      settings.socketPath === undefined
    ) {
      settings.stream = () => {
        socket = connect(Number(settings.port ?? 3306), String(settings.host ?? 'localhost'));
        socket.setNoDelay(true);
        return socket;
      };
    }
    return mariadbSession((await mariadb.createConnection(settings)) as Shape, socket);
  };
}

/** A session on a mariadb (promise API) connection of the store's own. */
function mariadbSession(connection: Shape, socket: Referable | undefined): Session {
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
    // Without a socket of the store's own (a Unix socket, the user's stream) the store closes
    // idle sessions soon instead.
    ref(active) {
      if (active) socket?.ref?.();
      else socket?.unref?.();
    },
    async close() {
      gone = true;
      socket?.ref?.();
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
    isMysql2(connection)
      ? 'mysql2'
      : isMariadb(connection) || isMariadbCallback(connection)
        ? 'mariadb'
        : undefined,
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
    // A transaction whole on one borrowed connection.
    transact: (work) => pool.borrow((connection) => wrapDb(connection).transact(work)),
    end: async () => {},
  };
}

/** Sessions on connections an ORM opens outside its pool, with its own settings. */
export function lentOpener(pool: LentPool): Opener | undefined {
  const { openOwn } = pool;
  if (openOwn === undefined) return undefined;
  return async () => {
    const connection = (await openOwn()) as Shape;
    if (isMysql2(connection)) return mysql2Session(connection);
    const promised = isMariadbCallback(connection) ? promisedMariadb(connection) : connection;
    return mariadbSession(promised, undefined);
  };
}
