import type { SqliteDatabase } from './driver.js';
import type { Tables } from './schema.js';

/**
 * Compare-and-delete, or with `keepMs` compare-and-shorten (never lengthen). The owner's row is
 * deleted even when its lease has run out (nobody took it over), but then the answer is `false`.
 */
export function prepareRelease(db: SqliteDatabase, { leases }: Tables) {
  const remove = db.prepare(
    `DELETE FROM ${leases} WHERE key = ? AND owner = ? RETURNING expires_at`,
  );
  const keep = db.prepare(
    `UPDATE ${leases} SET expires_at = min(expires_at, ?)
     WHERE key = ? AND owner = ? AND expires_at > ?`,
  );

  return (key: string, owner: string, keepMs = 0): boolean => {
    const now = Date.now();
    if (keepMs > 0) {
      return Number(keep.run(Math.ceil(now + keepMs), key, owner, now).changes) > 0;
    }
    const row = remove.get(key, owner);
    return row !== undefined && Number(row.expires_at) > now;
  };
}
