import type { Acquired } from 'cachelock';
import type { SqliteDatabase } from './driver.js';
import { prepareLine, prepareTake, type Waiting } from './line.js';
import { prepareBegin, rollbackQuietly, type Tables } from './schema.js';

/** How many acquisitions of one store go by between two sweeps (the first one sweeps). */
export const SWEEP_EVERY = 16;
/** How many rows one sweep looks at: more than acquisitions went by, so none pile up. */
export const SWEEP_LIMIT = 64;

/**
 * Acquire inside `BEGIN IMMEDIATE`: the write lock is taken before the row is read, so two
 * connections (in any processes) can never both see the key free. A holder killed inside the
 * transaction leaves nothing behind: SQLite rolls an unfinished transaction back.
 */
export function prepareAcquire(db: SqliteDatabase, tables: Tables) {
  const { leases, fences, shared } = tables;
  const line = prepareLine(db, tables);
  const take = prepareTake(db, tables);
  const begin = prepareBegin(db);
  const commit = db.prepare('COMMIT');
  // The lease, and whether the key has a line at all (then line.mayTake looks closer).
  const read = db.prepare(
    `SELECT lease.owner, lease.expires_at, EXISTS (SELECT 1 FROM ${shared}
       WHERE space = 'lock' AND key = ? AND kind = 'line') AS queued
     FROM (SELECT 1) LEFT JOIN ${leases} AS lease ON lease.key = ?`,
  );
  const refresh = db.prepare(
    `UPDATE ${leases} SET expires_at = ? WHERE key = ? RETURNING CAST(fence AS TEXT) AS fence`,
  );
  // A sweep walks the table in key order, a bounded window at a time, from where the last one
  // stopped, and deletes the expired rows in it; at the end it starts over. Walking the primary
  // key needs no index on expiry, which would cost every acquire and release a second write.
  const sweptTo = db.prepare(`SELECT swept_to FROM ${fences} WHERE id = 1`);
  const window = db.prepare(
    `SELECT max(key) AS last, count(*) AS n FROM (
       SELECT key FROM ${leases} WHERE key > ? ORDER BY key LIMIT ?)`,
  );
  const dropExpired = db.prepare(
    `DELETE FROM ${leases} WHERE key > ? AND key <= ? AND expires_at <= ?`,
  );
  const advance = db.prepare(`UPDATE ${fences} SET swept_to = ? WHERE id = 1`);
  const sweep = (now: number) => {
    const from = String(sweptTo.get()?.swept_to ?? '');
    const seen = window.get(from, SWEEP_LIMIT);
    const count = Number(seen?.n ?? 0);
    if (count > 0) dropExpired.run(from, String(seen?.last), now);
    advance.run(count < SWEEP_LIMIT ? '' : String(seen?.last));
    line.sweep(now);
  };
  // Starts full, so that a store's first acquisition sweeps: short-lived processes help too.
  let sinceSweep = SWEEP_EVERY;

  return (key: string, owner: string, ttlMs: number, wait?: Waiting): Acquired | null => {
    // A waiter's poll usually finds the key held: seen without the write lock, it costs nobody.
    // A first try has no place yet, which the glance would find only to send it on to the lock.
    if (wait?.placed && line.refusedAtAGlance(key, owner, Date.now(), wait)) return null;
    begin();
    try {
      // Read the clock only once the write lock is ours: waiting for it may have taken a while.
      const now = Date.now();
      if (++sinceSweep >= SWEEP_EVERY) {
        sinceSweep = 0;
        sweep(now);
      }
      const expiresAt = Math.ceil(now + ttlMs);
      const current = read.get(key, key);
      let fence: bigint;
      if (current && current.owner !== null && Number(current.expires_at) > now) {
        if (current.owner !== owner) {
          if (wait !== undefined) {
            line.join(key, owner, now, wait, ttlMs);
            wait.heldUntil?.(Number(current.expires_at));
          }
          commit.run();
          return null;
        }
        // The holder asking again (a retry after a lost reply, or a waiter the key was handed
        // to): same acquisition, same fence.
        fence = BigInt(String(refresh.get(expiresAt, key)?.fence));
      } else {
        // Free, but an earlier place in line than the caller's is still live: its turn first.
        if (Number(current?.queued) === 1 && !line.mayTake(key, owner, now)) {
          if (wait !== undefined) line.join(key, owner, now, wait, ttlMs);
          commit.run();
          return null;
        }
        fence = take(key, owner, now, expiresAt);
      }
      commit.run();
      return { fence };
    } catch (error) {
      rollbackQuietly(db);
      throw error;
    }
  };
}
