import type { Queryable } from './connection.js';
import type { TableName } from './names.js';

/** How many acquisitions of one store go by between two sweeps (the first one sweeps). */
export const SWEEP_EVERY = 16;
/** The most rows one sweep deletes: several per acquisition, so leftovers cannot pile up. */
export const SWEEP_LIMIT = 128;

// Deletes a bounded batch of leases that ran out by the database's clock, oldest first, found
// through the index on expires_at, and a batch of lapsed places in the keys' lines (their waiters
// left without a word; the table is small, as only waiters have places). SKIP LOCKED steps over
// rows an acquire or a release is working on right now, so a sweep never waits for a lock, and
// the outer condition re-checks expiry on the row version that is deleted. Losing a sweep in a
// crash only delays it, so its commit is not waited to disk.
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
  ), lapsed AS (
    DELETE FROM ${table.line.sql}
    WHERE (id, owner) IN (
      SELECT id, owner FROM ${table.line.sql}
      WHERE expires_at < clock_timestamp()
      LIMIT $1
      FOR UPDATE SKIP LOCKED
    ) AND expires_at < clock_timestamp()
    RETURNING 1
  )
  SELECT (SELECT count(*) FROM swept)::int + (SELECT count(*) FROM lapsed)::int AS swept,
         set_config('synchronous_commit', 'off', true)`;

/** Delete up to `limit` expired leases and as many lapsed places; resolves how many went. */
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
