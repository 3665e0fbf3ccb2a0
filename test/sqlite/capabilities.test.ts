import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import type { LockStore } from 'cachelock';
import { type SqliteDatabase, sqliteStore } from 'cachelock/sqlite';
import { afterAll, describe } from 'vitest';
import { nodeSqliteOrSkip } from '../support/node-sqlite.js';
import { describeCapabilities } from '../support/store-capabilities.js';
import { describePrimitives } from '../support/store-primitives.js';

const dir = mkdtempSync(join(tmpdir(), 'cachelock-sqlite-capabilities-'));
const closing: { close(): unknown }[] = [];

afterAll(async () => {
  for (const item of closing.reverse()) await item.close();
  rmSync(dir, { recursive: true, force: true });
});

// Three stores on one file, as three processes would have them; a connection of the test's own
// reads what is left in the tables. One SQLite library per file (see conformance.test.ts).
function onFile(
  name: string,
  driver: 'better-sqlite3' | 'node:sqlite',
  openReader: (path: string) => SqliteDatabase,
) {
  const path = join(dir, `${name}.sqlite`);
  const reader = openReader(path);
  closing.unshift(reader);
  const stores = [0, 1, 2].map(() => sqliteStore(path, { driver })) as [
    LockStore,
    LockStore,
    LockStore,
  ];
  for (const store of stores) closing.push({ close: () => store.close?.() });
  const count = (sql: string, ...values: (string | number)[]): Promise<number> =>
    Promise.resolve(Number(reader.prepare(sql).get(...values)?.n));
  describe(`sqlite store capabilities (${name})`, () => {
    describeCapabilities({
      stores: () => stores,
      sharedRows: (key) =>
        count('SELECT count(*) AS n FROM cachelock_locks_shared WHERE key = ?', key),
      expiredSharedRows: () =>
        count('SELECT count(*) AS n FROM cachelock_locks_shared WHERE expires_at <= ?', Date.now()),
      exclusiveRows: (keys) =>
        count(
          `SELECT count(*) AS n FROM cachelock_locks WHERE key IN (${keys.map(() => '?').join(', ')})`,
          ...keys,
        ),
      push: false,
    });
    describePrimitives(() => [stores[0], stores[1]]);
  });
}

onFile('better-sqlite3', 'better-sqlite3', (path) => new Database(path) as SqliteDatabase);

const NodeDatabase = nodeSqliteOrSkip('sqlite store capabilities over node:sqlite');
if (NodeDatabase) onFile('node-sqlite', 'node:sqlite', (path) => new NodeDatabase(path));
