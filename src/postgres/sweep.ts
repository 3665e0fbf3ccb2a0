import type { Queryable } from './connection.js';
import type { TableName } from './names.js';

/** How many acquisitions of one store go by between two sweeps (the first one sweeps). */
export const SWEEP_EVERY = 16;
/** The most rows one sweep deletes: several per acquisition, so leftovers cannot pile up. */
export const SWEEP_LIMIT = 128;

// Deletes a bounded batch of leases that ran out by the database's clock, oldest first, found
// through the index on expires_at. SKIP LOCKED steps over rows an acquire is taking over right
// now, and the outer condition re-checks expiry on the row version that is deleted. Losing a
// sweep in a crash only delays it, so its commit is not waited to disk.
const sweepSql = (table: TableName) => `
  WITH swept AS (
    DELETE FROM ${table.sql}
    WHERE id IN (
      SELECT id FROM ${table.sql}
      WHERE expires_at < clock_timestamp()
      ORDER BY expires_at
      LIMIT $1
      FOR UPDATE SKIP LOCKED
    ) AND expires_at < clock_timestamp()
    RETURNING 1
  )
  SELECT count(*)::int AS swept, set_config('synchronous_commit', 'off', true) FROM swept`;

/** Delete up to `limit` expired leases; resolves how many went. */
export function prepareSweep(db: Queryable, table: TableName) {
  const statement = { name: `cachelock_sweep_${table.tag}`, text: sweepSql(table) };
  return async (limit = SWEEP_LIMIT): Promise<number> => {
    const result = await db.query({ ...statement, values: [limit] });
    return (result.rows[0] as { swept: number } | undefined)?.swept ?? 0;
  };
}

// The same for shared leases and places, and the rows of keys whose every lease and place has
// run out (a key's row expires with its latest one, so it goes last).
const sharedSweepSql = (table: TableName) => `
  WITH swept AS (
    DELETE FROM ${table.shared.sql}
    WHERE (id, owner) IN (
      SELECT id, owner FROM ${table.shared.sql}
      WHERE expires_at < clock_timestamp()
      ORDER BY expires_at
      LIMIT $1
      FOR UPDATE SKIP LOCKED
    ) AND expires_at < clock_timestamp()
    RETURNING 1
  )
  SELECT count(*)::int AS swept, set_config('synchronous_commit', 'off', true) FROM swept`;

/** Delete up to `limit` expired shared leases, places and keys; resolves how many went. */
export function prepareSharedSweep(db: Queryable, table: TableName) {
  const statement = { name: `cachelock_shared_sweep_${table.tag}`, text: sharedSweepSql(table) };
  return async (limit = SWEEP_LIMIT): Promise<number> => {
    const result = await db.query({ ...statement, values: [limit] });
    return (result.rows[0] as { swept: number } | undefined)?.swept ?? 0;
  };
}
