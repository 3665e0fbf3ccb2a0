import type { Queryable } from './connection.js';
import { keyId, type TableName } from './names.js';

// Compare-and-delete and the wake-up in one round trip: the NOTIFY is sent when the DELETE
// commits, and only if it deleted the owner's row. An expired row of the owner is deleted too
// (nobody took it over) but answers `false`: the lease was not held until now.
// The commit is not waited to disk (synchronous_commit off for this transaction only): if the
// server crashes right after, the release may be undone and the key stays taken until its lease
// runs out. That costs liveness, never exclusion, and saves a flush per lock cycle. Acquire and
// extend stay durable: losing one of those could let two owners believe they hold the key.
const releaseSql = (table: TableName) => `
  WITH released AS (
    DELETE FROM ${table.sql} WHERE id = $1 AND owner = $2
    RETURNING expires_at > clock_timestamp() AS held
  )
  SELECT held, pg_notify($3, $4), set_config('synchronous_commit', 'off', true)
  FROM released`;

// holdAtLeast: shorten the lease to keepMs, never lengthen it; no wake-up, the key stays taken.
const keepSql = (table: TableName) => `
  UPDATE ${table.sql}
  SET expires_at = least(expires_at, clock_timestamp() + $3::float8 * interval '1 millisecond')
  WHERE id = $1 AND owner = $2 AND expires_at > clock_timestamp()`;

export function prepareRelease(db: Queryable, table: TableName) {
  const release = { name: `cachelock_release_${table.tag}`, text: releaseSql(table) };
  const keep = { name: `cachelock_keep_${table.tag}`, text: keepSql(table) };
  return async (key: string, owner: string, keepMs = 0): Promise<boolean> => {
    const id = keyId(key);
    if (keepMs > 0) {
      const result = await db.query({ ...keep, values: [id, owner, keepMs] });
      return (result.rowCount ?? 0) > 0;
    }
    const result = await db.query({
      ...release,
      values: [id, owner, table.channel, id.toString('base64url')],
    });
    return (result.rows[0] as { held: boolean } | undefined)?.held === true;
  };
}
