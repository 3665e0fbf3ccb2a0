import { isBusy, type SqliteDatabase } from './driver.js';

const IDENTIFIER = /^[A-Za-z_][A-Za-z0-9_]{0,62}$/;

/** The quoted names of the store's two tables. */
export interface Tables {
  /** One row per held key (and per expired one until a sweep or the next acquire removes it). */
  leases: string;
  /** One row: the last fence handed out, for every key of the store, and where sweeps are. */
  fences: string;
  /** Permits and readers/writers: their leases, the places in their lines, their last fences. */
  shared: string;
  /** The index on the shared rows' expiry, for sweeps. */
  sharedIndex: string;
}

export function tablesFor(table: string): Tables {
  if (typeof table !== 'string' || !IDENTIFIER.test(table)) {
    throw new TypeError(
      `cachelock/sqlite: table must be an identifier (letters, digits, _; at most 63), got ${JSON.stringify(table)}`,
    );
  }
  return {
    leases: `"${table}"`,
    fences: `"${table}_fence"`,
    shared: `"${table}_shared"`,
    sharedIndex: `"${table}_shared_expires_at"`,
  };
}

// The fence comes from one counter for the whole table rather than from the lease row, so that a
// released key's row can be deleted and its next fence is still larger than every earlier one.
// Writers are serialised by SQLite anyway, so the shared counter costs no concurrency.
// `swept_to` is the key where the last sweep of expired rows stopped (see acquire.ts): kept in
// the file, so that every process carries the sweep on, short-lived ones included.
// Shared leases: one row per lease and per place in a key's line (`space` keeps a semaphore's
// keys apart from a read/write lock's), plus, for a read/write lock, one row per key (owner '')
// holding the fence of its last writer for as long as the longest lease or place granted on the
// key. `seq` comes from the fence counter: it orders the leases
// (oldest first) and the line (first come, first served), and is a non-sharing lease's fence.
const createSql = ({ leases, fences, shared, sharedIndex }: Tables) => `
  CREATE TABLE IF NOT EXISTS ${leases} (
    key TEXT PRIMARY KEY NOT NULL,
    owner TEXT NOT NULL,
    expires_at INTEGER NOT NULL,
    fence INTEGER NOT NULL
  ) WITHOUT ROWID;
  CREATE TABLE IF NOT EXISTS ${fences} (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    value INTEGER NOT NULL,
    swept_to TEXT NOT NULL DEFAULT ''
  );
  INSERT OR IGNORE INTO ${fences} (id, value) VALUES (1, 0);
  CREATE TABLE IF NOT EXISTS ${shared} (
    space TEXT NOT NULL,
    key TEXT NOT NULL,
    owner TEXT NOT NULL,
    kind TEXT NOT NULL CHECK (kind IN ('key', 'lease', 'line')),
    weight INTEGER NOT NULL DEFAULT 0,
    expires_at INTEGER NOT NULL,
    fence INTEGER,
    seq INTEGER NOT NULL,
    PRIMARY KEY (space, key, owner)
  ) WITHOUT ROWID;
  CREATE INDEX IF NOT EXISTS ${sharedIndex} ON ${shared} (expires_at);
`;

// A file of the first release has the counter without `swept_to`. Adding a column with a default
// rewrites nothing, and the first release's statements never name it, so old and new processes
// keep sharing the file (and excluding each other) during an upgrade.
const upgradeSql = ({ fences }: Tables) =>
  `ALTER TABLE ${fences} ADD COLUMN swept_to TEXT NOT NULL DEFAULT ''`;

/** Whether `path` names a database in memory rather than a file. */
export function isMemoryPath(path: string): boolean {
  return path === ':memory:' || path === '';
}

export interface PrepareOptions {
  busyTimeoutMs: number;
  /** Set WAL and synchronous=NORMAL: only for a database the store opened itself. */
  ownsDatabase: boolean;
}

/**
 * Ready a connection: busy timeout, WAL, tables. Many short-lived processes may do this on one
 * file at once: switching to WAL and creating the tables both take the write lock and may report
 * SQLITE_BUSY beyond the busy handler's reach, so those steps are retried until the timeout.
 */
export async function prepareDatabase(
  db: SqliteDatabase,
  tables: Tables,
  { busyTimeoutMs, ownsDatabase }: PrepareOptions,
): Promise<void> {
  const deadline = Date.now() + busyTimeoutMs;
  const timeout = Math.min(2_147_483_647, Math.ceil(busyTimeoutMs));
  if (ownsDatabase) {
    db.exec(`PRAGMA busy_timeout = ${timeout}`);
  } else {
    // The user's connection keeps its own timeout if it set one.
    if (busyTimeoutOf(db) === 0) {
      db.exec(`PRAGMA busy_timeout = ${timeout}`);
    }
  }
  if (ownsDatabase) {
    await retryWhileBusy(deadline, () => {
      const mode = String(pragmaValue(db, 'journal_mode = WAL') ?? '').toLowerCase();
      // A database in memory answers 'memory'; a file must end up in WAL.
      if (mode !== 'wal' && mode !== 'memory') {
        throw new Error(`cachelock/sqlite: could not switch the database to WAL (got ${mode})`);
      }
    });
    db.exec('PRAGMA synchronous = NORMAL');
  }
  const layout = () =>
    db
      .prepare(
        `SELECT (SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name IN (?, ?, ?)) AS tables,
                (SELECT count(*) FROM pragma_table_info(?) WHERE name = 'swept_to') AS swept`,
      )
      .get(
        unquote(tables.leases),
        unquote(tables.fences),
        unquote(tables.shared),
        unquote(tables.fences),
      );
  const found = layout();
  if (Number(found?.tables) === 3 && Number(found?.swept) === 1) return;
  await retryWhileBusy(deadline, () => {
    db.exec('BEGIN IMMEDIATE');
    try {
      db.exec(createSql(tables));
      // Checked again under the write lock: another process may have just added it.
      if (Number(layout()?.swept) === 0) db.exec(upgradeSql(tables));
      db.exec('COMMIT');
    } catch (error) {
      rollbackQuietly(db);
      throw error;
    }
  });
}

function unquote(name: string): string {
  return name.slice(1, -1);
}

/**
 * Run `work` inside `BEGIN IMMEDIATE`: the write lock is taken before anything is read, so the
 * transactions of every connection to the file (in any process) run one after the other.
 */
export function immediate(db: SqliteDatabase): <T>(work: () => T) => T {
  const begin = prepareBegin(db);
  const commit = db.prepare('COMMIT');
  return (work) => {
    begin();
    try {
      const result = work();
      commit.run();
      return result;
    } catch (error) {
      rollbackQuietly(db);
      throw error;
    }
  };
}

// A BEGIN this slow slept in SQLite's busy handler (first sleep 1 ms); for CONTENDED_MS after
// one, BEGINs wait stepwise: trying again at once for SPIN_MS, then after FIRST_PAUSE_MS,
// doubling up to MAX_PAUSE_MS.
const SLEPT_MS = 0.5;
const CONTENDED_MS = 1_000;
const FIRST_PAUSE_MS = 0.025;
// The other connection's transaction usually ends within tens of microseconds, sooner than the
// shortest pause lasts (a timed wait sleeps 80 us or more on Linux): try again at once until then.
const SPIN_MS = 0.2;
const MAX_PAUSE_MS = 1;
const PAUSE = new Int32Array(new SharedArrayBuffer(4));
const begins = new WeakMap<SqliteDatabase, () => void>();

/**
 * `BEGIN IMMEDIATE` on `db`. Once one met another connection's write lock, for a while each
 * BEGIN sets the connection's busy timeout aside and tries again stepwise until that timeout has
 * passed, then sets it back: a hand-over no longer waits out the busy handler's 1 ms sleep. It
 * blocks, as the busy handler does. (A PRAGMA takes effect as it is compiled: hence `exec`.)
 */
export function prepareBegin(db: SqliteDatabase): () => void {
  const known = begins.get(db);
  if (known !== undefined) return known;
  const begin = db.prepare('BEGIN IMMEDIATE');
  // In WAL a refused BEGIN touches no lock of the holder's. In a rollback journal each one takes
  // a shared lock for a moment, which a holder's COMMIT must wait out: there, no spin.
  const spinMs = journalModeOf(db) === 'wal' ? SPIN_MS : 0;
  let contendedUntil = 0;
  const stepwise = (started: number, timeoutMs: number) => {
    db.exec('PRAGMA busy_timeout = 0');
    let began = false;
    let failure: unknown;
    const stackTraceLimit = Error.stackTraceLimit;
    // A refused BEGIN throws; its stack would cost more than the try. (Where Error is frozen,
    // the tries keep their stacks.)
    setStackTraceLimit(0);
    try {
      for (let pause = 0; ; ) {
        try {
          begin.run();
          began = true;
          break;
        } catch (error) {
          const now = performance.now();
          const busy = isBusy(error);
          if (busy) contendedUntil = now + CONTENDED_MS;
          if (!busy || now - started >= timeoutMs) {
            failure = error;
            break;
          }
          if (now - started < spinMs) continue;
          pause = pause === 0 ? FIRST_PAUSE_MS : Math.min(MAX_PAUSE_MS, pause * 2);
          Atomics.wait(PAUSE, 0, 0, pause);
        }
      }
    } finally {
      setStackTraceLimit(stackTraceLimit);
      try {
        db.exec(`PRAGMA busy_timeout = ${timeoutMs}`);
      } catch (error) {
        // Never left holding the write lock with the timeout unset.
        if (began) rollbackQuietly(db);
        // biome-ignore lint/correctness/noUnsafeFinally: the restore's failure is the error
        throw error;
      }
    }
    if (failure !== undefined) {
      // Made without a stack: it gets the caller's, as any other failure has.
      if (failure instanceof Error) Error.captureStackTrace(failure, stepwise);
      throw failure;
    }
  };
  const beginOnDb = () => {
    const started = performance.now();
    if (started < contendedUntil) {
      const timeoutMs = Math.floor(busyTimeoutOf(db) ?? 0);
      if (timeoutMs > 0) return stepwise(started, timeoutMs);
    }
    try {
      begin.run();
    } finally {
      const ended = performance.now();
      if (ended - started >= SLEPT_MS) contendedUntil = ended + CONTENDED_MS;
    }
  };
  begins.set(db, beginOnDb);
  return beginOnDb;
}

/** The value a PRAGMA answers (its one column), or undefined when it answers no row. */
function pragmaValue(db: SqliteDatabase, pragma: string): unknown {
  const row = db.prepare(`PRAGMA ${pragma}`).get();
  return row ? Object.values(row)[0] : undefined;
}

/** The connection's journal mode (`wal`, `delete`, ...), or '' if it does not answer. */
function journalModeOf(db: SqliteDatabase): string {
  try {
    return String(pragmaValue(db, 'journal_mode') ?? '').toLowerCase();
  } catch {
    return '';
  }
}

function setStackTraceLimit(limit: number): void {
  try {
    Error.stackTraceLimit = limit;
  } catch {
    // A frozen Error (a hardened runtime): errors keep their stacks.
  }
}

/** The connection's busy timeout as it is now (ms), if it answers. */
function busyTimeoutOf(db: SqliteDatabase): number | undefined {
  const value = pragmaValue(db, 'busy_timeout');
  return value === undefined ? undefined : Number(value);
}

export function rollbackQuietly(db: SqliteDatabase): void {
  try {
    db.exec('ROLLBACK');
  } catch {
    // No transaction was open (BEGIN itself failed): nothing to undo.
  }
}

async function retryWhileBusy(deadline: number, step: () => void): Promise<void> {
  for (let attempt = 0; ; attempt++) {
    try {
      step();
      return;
    } catch (error) {
      if (!isBusy(error) || Date.now() >= deadline) throw error;
      const delay = Math.min(100, 2 ** attempt) * (0.5 + Math.random());
      await new Promise((resolve) => setTimeout(resolve, delay));
    }
  }
}
