import { NOW_US } from './clock.js';
import type { Db } from './connection.js';
import type { TableName } from './names.js';

/** How many acquisitions of one store go by between two sweeps (the first one sweeps). */
export const SWEEP_EVERY = 16;
/** The most rows one sweep deletes: several per acquisition, so leftovers cannot pile up. */
export const SWEEP_LIMIT = 128;

// A bounded batch of leases that ran out by the server's clock, oldest first, through the index
// on expires_us; only rows whose fence the clock has passed (see release.ts).
const sweepSql = (table: TableName) => `
  DELETE FROM ${table.sql}
  WHERE expires_us < ${NOW_US} AND fence < ${NOW_US}
  ORDER BY expires_us
  LIMIT ?`;

/** Delete up to `limit` expired leases; resolves how many went. */
export function prepareSweep(db: Db, table: TableName) {
  const sql = sweepSql(table);
  return async (limit = SWEEP_LIMIT): Promise<number> =>
    (await db.change(sql, [limit])).affectedRows;
}
