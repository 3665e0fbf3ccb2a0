import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { sqliteStore, storeFromClient } from 'cachelock/sqlite';
import { runConformance } from 'cachelock/testing';
import { afterAll, describe, it } from 'vitest';
import { nodeSqliteOrSkip } from '../support/node-sqlite.js';

const dir = mkdtempSync(join(tmpdir(), 'cachelock-sqlite-conformance-'));
const opened: { close(): unknown }[] = [];

afterAll(() => {
  for (const database of opened) database.close();
  rmSync(dir, { recursive: true, force: true });
});

// One file per SQLite library: two copies of SQLite in one process do not see each other's
// locks, so a process must reach a file through one library only.
const betterPath = join(dir, 'better-sqlite3.sqlite');

// Every case opens its own connection to one file, as separate processes would.
runConformance({
  name: 'sqlite store (file, better-sqlite3)',
  describe,
  it,
  makeStore: () => sqliteStore(betterPath, { driver: 'better-sqlite3' }),
});
runConformance({
  name: 'sqlite store (:memory:)',
  describe,
  it,
  makeStore: () => sqliteStore(':memory:'),
  // Each :memory: database is a backend of its own.
  sharedBackend: false,
});
// A user's own connection to the same file, wrapped: the store leaves its settings alone.
const betterDatabase = new Database(betterPath);
opened.push(betterDatabase);
runConformance({
  name: 'sqlite store (a better-sqlite3 Database)',
  describe,
  it,
  makeStore: () => storeFromClient(betterDatabase),
});

const NodeDatabase = nodeSqliteOrSkip('sqlite store over node:sqlite');
if (NodeDatabase) {
  const nodePath = join(dir, 'node-sqlite.sqlite');
  runConformance({
    name: 'sqlite store (file, node:sqlite)',
    describe,
    it,
    makeStore: () => sqliteStore(nodePath, { driver: 'node:sqlite' }),
  });
  const nodeDatabase = new NodeDatabase(nodePath);
  opened.push(nodeDatabase);
  runConformance({
    name: 'sqlite store (a node:sqlite DatabaseSync)',
    describe,
    it,
    makeStore: () => storeFromClient(nodeDatabase),
  });
}
