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
 * One writing statement: the holder has no place in line (taking the key removed it), and the
 * first waiter is read after the commit, a hint for whom to wake, not a grant. A caller that did
 * not hold the key leaves the line instead, and if it was first, the next waiter is told.
 */
export function prepareRelease(db: SqliteDatabase, tables: Tables) {
  const { leases } = tables;
  const line = prepareLine(db, tables);
  const remove = db.prepare(
    `DELETE FROM ${leases} WHERE key = ? AND owner = ? RETURNING expires_at`,
  );
  const keep = db.prepare(
    `UPDATE ${leases} SET expires_at = min(expires_at, ?)
     WHERE key = ? AND owner = ? AND expires_at > ?`,
  );
  const held = db.prepare(`SELECT 1 AS held FROM ${leases} WHERE key = ? AND expires_at > ?`);

  return (key: string, owner: string, keepMs = 0): Released => {
    const now = Date.now();
    if (keepMs > 0) {
      const kept = Number(keep.run(Math.ceil(now + keepMs), key, owner, now).changes) > 0;
      return { held: kept, next: undefined };
    }
    const row = remove.get(key, owner);
    if (row !== undefined) {
      return { held: Number(row.expires_at) > now, next: line.next(key, now) };
    }
    const left = line.leave(key, owner);
    const free = left && held.get(key, now) === undefined;
    return { held: false, next: free ? line.next(key, now) : undefined };
  };
}
