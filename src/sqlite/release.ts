import type { SqliteDatabase } from './driver.js';
import { type NextInLine, prepareLine } from './line.js';
import { immediate, type Tables } from './schema.js';

/** Whether the owner held the key until now, and who waits first for it now that it is free. */
export interface Released {
  held: boolean;
  next: NextInLine | undefined;
}

/**
 * Compare-and-delete, or with `keepMs` compare-and-shorten (never lengthen). The owner's row is
 * deleted even when its lease has run out (nobody took it over), but then the answer is `false`.
 * One transaction: the holder has no place in line (taking the key removed it), and the first
 * live waiter takes the freed key in the same step (see `handOff` in line.ts), its bell coming
 * back to be rung. A caller that did not hold the key leaves the line instead, and if the key is
 * free, it goes to the next waiter the same way.
 */
export function prepareRelease(db: SqliteDatabase, tables: Tables) {
  const { leases, shared } = tables;
  const transaction = immediate(db);
  const line = prepareLine(db, tables);
  // Whether anyone waits comes back with the deleted row: most releases have no line to look at.
  const remove = db.prepare(
    `DELETE FROM ${leases} WHERE key = ? AND owner = ?
     RETURNING expires_at, EXISTS (SELECT 1 FROM ${shared}
       WHERE space = 'lock' AND key = ? AND kind = 'line' AND expires_at > ?) AS queued`,
  );
  const keep = db.prepare(
    `UPDATE ${leases} SET expires_at = min(expires_at, ?)
     WHERE key = ? AND owner = ? AND expires_at > ?`,
  );

  return (key: string, owner: string, keepMs = 0): Released => {
    if (keepMs > 0) {
      const now = Date.now();
      const kept = Number(keep.run(Math.ceil(now + keepMs), key, owner, now).changes) > 0;
      return { held: kept, next: undefined };
    }
    return transaction(() => {
      const now = Date.now();
      const row = remove.get(key, owner, key, now);
      if (row === undefined) return { held: false, next: line.left(key, owner, now) };
      let next: NextInLine | undefined;
      if (Number(row.queued) === 1) {
        // A holder whose lease ran out unseen may have joined the line since: not its own turn.
        line.leave(key, owner);
        next = line.next(key, now);
      }
      return { held: Number(row.expires_at) > now, next };
    });
  };
}
