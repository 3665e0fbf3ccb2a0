import { createRequire } from 'node:module';
import type { SqliteDatabase } from 'cachelock/sqlite';

export type DatabaseSyncConstructor = new (path: string) => SqliteDatabase;

/** The Node.js versions that have `node:sqlite` without a flag: 22.13+ and 23.4+. */
export function nodeHasSqlite(version = process.versions.node): boolean {
  const [major = 0, minor = 0] = version.split('.').map(Number);
  return major > 23 || (major === 23 && minor >= 4) || (major === 22 && minor >= 13);
}

function load(): DatabaseSyncConstructor | undefined {
  try {
    // @types/node follows the oldest supported Node.js, which has no node:sqlite.
    const module = createRequire(import.meta.url)('node:sqlite') as {
      DatabaseSync?: DatabaseSyncConstructor;
    };
    return module.DatabaseSync;
  } catch {
    return undefined;
  }
}

const DatabaseSync = load();

/**
 * `node:sqlite`'s `DatabaseSync`, or undefined where the `node:sqlite` tests must be skipped.
 * Under CI=true, on a Node.js that should have it, its absence fails the suite (it throws), so
 * that this path cannot go untested unnoticed; on an older Node.js they are skipped loudly.
 */
export function nodeSqliteOrSkip(name: string): DatabaseSyncConstructor | undefined {
  if (DatabaseSync) return DatabaseSync;
  const message = `node:sqlite is not available in Node.js ${process.version}`;
  if (process.env.CI === 'true' && nodeHasSqlite()) {
    throw new Error(`${message} (CI=true: ${name} tests must run on Node.js >= 22.13)`);
  }
  console.warn(`\n!!! SKIPPING ${name} tests: ${message} (it needs Node.js >= 22.13) !!!\n`);
  return undefined;
}
