import type { SqliteDatabase } from './driver.js';
import { type NextInLine, prepareLine } from './line.js';
import type { Tables } from './schema.js';

/** Whether the owner held the key until now, and who waits first for it now that it is free. */
export interface Released {
  held: boolean;
  next: NextInLine | undefined;
}

/**
 * Compare-and-delete, or with `keepMs` compare-and-shorten (never lengthen). The owner's row is
 * deleted even when its lease has run out (nobody took it over), but then the answer is `false`.
 * One statement: the holder has no place in line (taking the key removed it), and the first
 * live waiter's bell comes back with the deleted row, for whom to wake (a hint, not a grant). A
 * caller that did not hold the key leaves the line instead, and if it was first, the next
 * waiter is told.
 */
export function prepareRelease(db: SqliteDatabase, tables: Tables) {
  const { leases, shared } = tables;
  const line = prepareLine(db, tables);
  // The first live waiter's bell comes back with the deleted row: 0 for a waiter without one.
  const remove = db.prepare(
    `DELETE FROM ${leases} WHERE key = ? AND owner = ?
     RETURNING expires_at, (SELECT coalesce(fence, 0) FROM ${shared}
       WHERE space = 'lock' AND key = ? AND kind = 'line' AND expires_at > ?
       ORDER BY seq LIMIT 1) AS bell`,
  );
  const keep = db.prepare(
    `UPDATE ${leases} SET expires_at = min(expires_at, ?)
     WHERE key = ? AND owner = ? AND expires_at > ?`,
  );

  return (key: string, owner: string, keepMs = 0): Released => {
    const now = Date.now();
    if (keepMs > 0) {
      const kept = Number(keep.run(Math.ceil(now + keepMs), key, owner, now).changes) > 0;
      return { held: kept, next: undefined };
    }
    const row = remove.get(key, owner, key, now);
    if (row !== undefined) {
      const bell = row.bell === null ? undefined : Number(row.bell);
      return {
        held: Number(row.expires_at) > now,
        next: bell === undefined ? undefined : { bell: bell === 0 ? null : bell },
      };
    }
    return { held: false, next: line.left(key, owner, now) };
  };
}
