// SQLite: cachelock against the floor (the store's own statements issued raw through
// better-sqlite3, no library) and proper-lockfile (the file-lock peer), then 4 processes
// contending on one key beside the store-free floors (contention.mjs). Needs the built package
// (npm run build). BENCH_ONLY=uncontended or BENCH_ONLY=contended runs one section;
// BENCH_COMPARE=dist/sqlite/other.js adds another build's cachelock/sqlite entry (a copy kept
// inside dist, so that it finds the same core) to the 4-process rounds.
import { closeSync, mkdtempSync, openSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import Database from 'better-sqlite3';
import { Lock } from 'cachelock';
import { sqliteStore } from 'cachelock/sqlite';
import lockfile from 'proper-lockfile';
import { cachelockWithLock, contendedTable, isWorker, workerMain } from './contention.mjs';
import { COMPARE, COMPARED, fmt, interleave, perCall, table, wanted } from './lib.mjs';

const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 5);
const PAIRS = Number(process.env.BENCH_PAIRS ?? 2_000);
const TTL = 10_000;
const contenders = ['cachelock', ...(COMPARE ? [COMPARED] : []), 'proper-lockfile (retry 1-10 ms)'];

if (isWorker()) await workerMain(makeLock, makeWrite);
else await main();

async function main() {
  const dir = mkdtempSync(join(tmpdir(), 'cachelock-bench-sqlite-'));
  try {
    const db = new Database(':memory:');
    const version = db.prepare('SELECT sqlite_version() AS v').get().v;
    db.close();
    console.log(
      `SQLite ${version} via better-sqlite3 (WAL, synchronous=NORMAL), file in ${tmpdir()}, ${ROUNDS} rounds interleaved, medians\n`,
    );
    if (wanted('uncontended')) await uncontended(dir);
    if (wanted('contended')) await contended(dir);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/**
 * The first release's statements, issued raw on one connection: the least any library can do.
 * Kept as they were, so that runs before and after a change compare against the same floor; the
 * store now also keeps its fence at least the clock and sweeps expired rows every 16th time.
 */
function floorPair(path) {
  const db = new Database(path);
  db.exec('PRAGMA busy_timeout = 5000');
  db.pragma('journal_mode = WAL');
  db.exec('PRAGMA synchronous = NORMAL');
  db.exec(`CREATE TABLE IF NOT EXISTS floor (key TEXT PRIMARY KEY NOT NULL, owner TEXT NOT NULL,
    expires_at INTEGER NOT NULL, fence INTEGER NOT NULL) WITHOUT ROWID;
    CREATE TABLE IF NOT EXISTS floor_fence (id INTEGER PRIMARY KEY CHECK (id = 1), value INTEGER NOT NULL);
    INSERT OR IGNORE INTO floor_fence VALUES (1, 0);`);
  const begin = db.prepare('BEGIN IMMEDIATE');
  const commit = db.prepare('COMMIT');
  const read = db.prepare('SELECT owner, expires_at FROM floor WHERE key = ?');
  const next = db.prepare('UPDATE floor_fence SET value = value + 1 WHERE id = 1');
  const take = db.prepare(`INSERT OR REPLACE INTO floor (key, owner, expires_at, fence)
    VALUES (?, ?, ?, (SELECT value FROM floor_fence WHERE id = 1)) RETURNING CAST(fence AS TEXT) AS fence`);
  const remove = db.prepare('DELETE FROM floor WHERE key = ? AND owner = ? RETURNING expires_at');
  let n = 0;
  return {
    pair: async (key) => {
      const owner = `floor:${++n}`;
      begin.run();
      const now = Date.now();
      const row = read.get(key);
      if (row && row.expires_at > now) throw new Error('held');
      next.run();
      take.get(key, owner, now + TTL);
      commit.run();
      if (!remove.get(key, owner)) throw new Error('not released');
    },
    close: () => db.close(),
  };
}

async function uncontended(dir) {
  const path = join(dir, 'uncontended.sqlite');
  const store = sqliteStore(path);
  const lockTarget = join(dir, 'proper-lockfile-target');
  closeSync(openSync(lockTarget, 'a'));
  const floor = floorPair(path);
  const cases = [
    { name: 'floor (the same SQL, raw)', pair: floor.pair },
    {
      name: 'cachelock',
      pair: async (key) => {
        const lock = new Lock(key, { cache: store, ttl: TTL });
        await lock.acquire();
        await lock.release();
      },
    },
    {
      name: 'proper-lockfile',
      pair: async () => {
        const release = await lockfile.lock(lockTarget, { stale: TTL, realpath: false });
        await release();
      },
    },
  ];
  let run = 0;
  for (const c of cases) for (let i = 0; i < 200; i++) await c.pair(`warm:${++run}`);
  const results = await interleave(cases, ROUNDS, (c) => {
    const key = `uncontended:${++run}`;
    return perCall(() => c.pair(key), PAIRS);
  });
  const floorUs = results.get(cases[0].name);
  console.log('### Uncontended acquire+release, one process\n');
  console.log(
    table(
      ['library', 'us per acquire+release', 'vs floor'],
      cases.map((c) => [
        c.name,
        fmt(results.get(c.name), 1),
        `${fmt(results.get(c.name) / floorUs)}x`,
      ]),
    ),
  );
  console.log('');
  floor.close();
  await store.close();
}

async function contended(dir) {
  await contendedTable({
    script: fileURLToPath(import.meta.url),
    contenders,
    rounds: ROUNDS,
    floors: 'write',
    configFor: (library, run) => {
      const path = join(dir, `contended-${run}.sqlite`);
      closeSync(openSync(path, 'a'));
      return { library, path, key: `contended:${run}` };
    },
  });
}

/** The write floor's one statement per hand-over: a row naming the next holder, committed. */
async function makeWrite({ path, key }) {
  const db = new Database(path);
  db.exec('PRAGMA busy_timeout = 5000');
  db.pragma('journal_mode = WAL');
  db.exec('PRAGMA synchronous = NORMAL');
  db.exec(`CREATE TABLE IF NOT EXISTS floor (key TEXT PRIMARY KEY NOT NULL, owner TEXT NOT NULL,
    expires_at INTEGER NOT NULL) WITHOUT ROWID`);
  const set = db.prepare('INSERT OR REPLACE INTO floor (key, owner, expires_at) VALUES (?, ?, ?)');
  return {
    write: async (next) => {
      set.run(key, `holder ${next}`, Date.now() + TTL);
    },
    close: () => db.close(),
  };
}

async function makeLock({ library, path, key }) {
  let withLock;
  let close = async () => {};
  if (library === 'cachelock' || library === COMPARED) {
    const store =
      library === COMPARED
        ? (await import(pathToFileURL(COMPARE).href)).sqliteStore(path)
        : sqliteStore(path);
    await store.inspect(key);
    withLock = cachelockWithLock(Lock, key, { cache: store, ttl: TTL });
    close = () => store.close();
  } else {
    const retries = {
      retries: 100_000,
      minTimeout: 1,
      maxTimeout: 10,
      factor: 1.5,
      randomize: true,
    };
    withLock = async (fn) => {
      const release = await lockfile.lock(path, { stale: TTL, realpath: false, retries });
      try {
        await fn();
      } finally {
        await release();
      }
    };
  }
  return { withLock, close };
}
