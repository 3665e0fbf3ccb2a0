import type { Acquired } from 'cachelock';
import type { SqliteDatabase } from './driver.js';
import { rollbackQuietly, type Tables } from './schema.js';

/**
 * Acquire inside `BEGIN IMMEDIATE`: the write lock is taken before the row is read, so two
 * connections (in any processes) can never both see the key free. A holder killed inside the
 * transaction leaves nothing behind: SQLite rolls an unfinished transaction back.
 */
export function prepareAcquire(db: SqliteDatabase, { leases, fences }: Tables) {
  const begin = db.prepare('BEGIN IMMEDIATE');
  const commit = db.prepare('COMMIT');
  const read = db.prepare(`SELECT owner, expires_at FROM ${leases} WHERE key = ?`);
  const refresh = db.prepare(
    `UPDATE ${leases} SET expires_at = ? WHERE key = ? RETURNING CAST(fence AS TEXT) AS fence`,
  );
  const nextFence = db.prepare(`UPDATE ${fences} SET value = value + 1 WHERE id = 1`);
  const take = db.prepare(
    `INSERT OR REPLACE INTO ${leases} (key, owner, expires_at, fence)
     VALUES (?, ?, ?, (SELECT value FROM ${fences} WHERE id = 1))
     RETURNING CAST(fence AS TEXT) AS fence`,
  );

  return (key: string, owner: string, ttlMs: number): Acquired | null => {
    begin.run();
    try {
      // Read the clock only once the write lock is ours: waiting for it may have taken a while.
      const now = Date.now();
      const expiresAt = Math.ceil(now + ttlMs);
      const current = read.get(key);
      let row: Record<string, unknown> | undefined;
      if (current && Number(current.expires_at) > now) {
        if (current.owner !== owner) {
          commit.run();
          return null;
        }
        // The holder asking again (a retry after a lost reply): same acquisition, same fence.
        row = refresh.get(expiresAt, key);
      } else {
        nextFence.run();
        row = take.get(key, owner, expiresAt);
      }
      commit.run();
      return { fence: BigInt(String(row?.fence)) };
    } catch (error) {
      rollbackQuietly(db);
      throw error;
    }
  };
}
