import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { sqliteStore, storeFromClient } from 'cachelock/sqlite';
import { runConformance } from 'cachelock/testing';
import { afterAll, describe, it } from 'vitest';

const dir = mkdtempSync(join(tmpdir(), 'cachelock-sqlite-conformance-'));
const path = join(dir, 'locks.sqlite');
// A user's own connection to the same file, wrapped: the store leaves its settings alone.
const database = new Database(path);

afterAll(() => {
  database.close();
  rmSync(dir, { recursive: true, force: true });
});

// Every case opens its own connection to one file, as separate processes would.
runConformance({ name: 'sqlite store (file)', describe, it, makeStore: () => sqliteStore(path) });
runConformance({
  name: 'sqlite store (:memory:)',
  describe,
  it,
  makeStore: () => sqliteStore(':memory:'),
  // Each :memory: database is a backend of its own.
  sharedBackend: false,
});
runConformance({
  name: 'sqlite store (a better-sqlite3 Database)',
  describe,
  it,
  makeStore: () => storeFromClient(database),
});
