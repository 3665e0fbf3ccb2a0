import type { LeaseInfo } from 'cachelock';
import type { SqliteDatabase } from './driver.js';
import type { Tables } from './schema.js';

export function prepareInspect(db: SqliteDatabase, { leases }: Tables) {
  const read = db.prepare(
    `SELECT owner, expires_at, CAST(fence AS TEXT) AS fence FROM ${leases}
     WHERE key = ? AND expires_at > ?`,
  );

  return (key: string): LeaseInfo | null => {
    const now = Date.now();
    const row = read.get(key, now);
    if (!row) return null;
    return {
      owner: String(row.owner),
      ttlMs: Number(row.expires_at) - now,
      fence: BigInt(String(row.fence)),
    };
  };
}
