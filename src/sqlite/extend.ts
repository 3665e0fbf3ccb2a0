import type { SqliteDatabase } from './driver.js';
import type { Tables } from './schema.js';

/** Compare-and-expire: a lease that has already run out cannot be extended. */
export function prepareExtend(db: SqliteDatabase, { leases }: Tables) {
  const extend = db.prepare(
    `UPDATE ${leases} SET expires_at = ? WHERE key = ? AND owner = ? AND expires_at > ?`,
  );

  return (key: string, owner: string, ttlMs: number): boolean => {
    const now = Date.now();
    return Number(extend.run(Math.ceil(now + ttlMs), key, owner, now).changes) > 0;
  };
}
