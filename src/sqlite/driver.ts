/**
 * The few calls the SQLite store makes, which `node:sqlite` (`DatabaseSync`) and better-sqlite3
 * (`Database`) both answer the same way: `exec`, `prepare` with positional parameters, and
 * statements with `run`, `get` and `all`.
 */
export interface SqliteDatabase {
  exec(sql: string): unknown;
  prepare(sql: string): SqliteStatement;
  close(): unknown;
}

export interface SqliteStatement {
  run(...params: SqlValue[]): { changes: number | bigint };
  get(...params: SqlValue[]): Record<string, unknown> | undefined;
  all(...params: SqlValue[]): Record<string, unknown>[];
}

export type SqlValue = string | number | bigint | null;

export type SqliteDriver = 'node:sqlite' | 'better-sqlite3';

/**
 * A better-sqlite3 `Database` or a `node:sqlite` `DatabaseSync`. better-sqlite3 has `pragma`;
 * `DatabaseSync` is told by its class name, since it has no other member of its own to test.
 */
export function isSqliteDatabase(value: unknown): value is SqliteDatabase {
  if (typeof value !== 'object' || value === null) return false;
  const db = value as Record<string, unknown>;
  if (typeof db.prepare !== 'function' || typeof db.exec !== 'function') return false;
  return typeof db.pragma === 'function' || db.constructor?.name === 'DatabaseSync';
}

type DatabaseConstructor = new (path: string) => SqliteDatabase;

// `node:sqlite` exists from Node.js 22.5 (behind a flag until 22.13); getBuiltinModule answers
// undefined, or throws on some versions, where it does not.
function nodeSqlite(): DatabaseConstructor | undefined {
  const getBuiltinModule = (process as { getBuiltinModule?: (id: string) => unknown })
    .getBuiltinModule;
  try {
    const module = getBuiltinModule?.('node:sqlite') as
      | { DatabaseSync?: DatabaseConstructor }
      | undefined;
    return module?.DatabaseSync;
  } catch {
    return undefined;
  }
}

async function betterSqlite3(): Promise<DatabaseConstructor> {
  try {
    const module = (await import('better-sqlite3')) as unknown as {
      default?: DatabaseConstructor;
    };
    return (module.default ?? module) as DatabaseConstructor;
  } catch (error) {
    throw new Error(
      `cachelock/sqlite needs node:sqlite (Node.js >= 22.13; this is Node.js ${process.version}) or the better-sqlite3 package: npm install better-sqlite3@12`,
      { cause: error },
    );
  }
}

/** Open `path` with `node:sqlite` where this Node.js has it, else with better-sqlite3. */
export async function openDatabase(
  path: string,
  driver?: SqliteDriver,
): Promise<{ db: SqliteDatabase; driver: SqliteDriver }> {
  if (driver !== 'better-sqlite3') {
    const DatabaseSync = nodeSqlite();
    if (DatabaseSync) return { db: new DatabaseSync(path), driver: 'node:sqlite' };
    if (driver === 'node:sqlite') {
      throw new Error(`node:sqlite is not available in Node.js ${process.version}`);
    }
  }
  const Database = await betterSqlite3();
  return { db: new Database(path), driver: 'better-sqlite3' };
}

/** SQLITE_BUSY (and its extended codes) from either driver: another connection holds a lock. */
export function isBusy(error: unknown): boolean {
  if (typeof error !== 'object' || error === null) return false;
  const { code, errcode } = error as { code?: unknown; errcode?: unknown };
  if (typeof code === 'string' && code.startsWith('SQLITE_BUSY')) return true;
  if (typeof errcode === 'number' && (errcode & 0xff) === 5) return true;
  return /database is locked/i.test(String((error as Error).message));
}
