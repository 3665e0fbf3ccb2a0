import type { Queryable, Transact } from './connection.js';
import { keyLockId, type SharedSpace, sharedKeyId, type TableName } from './names.js';

// The owner's lease or place goes, and waiters are woken. Under the key's advisory lock, so that
// an acquisition never reads the key's rows while they are being removed.
const releaseSql = (table: TableName) => `
  WITH gone AS (
    DELETE FROM ${table.shared.sql} WHERE id = $1 AND owner = $2 AND owner <> ''
    RETURNING kind = 'lease' AND expires_at > clock_timestamp() AS held
  )
  SELECT held, pg_notify($3, $4), set_config('synchronous_commit', 'off', true) FROM gone`;

// Expired rows of the key go too, the key's row (its last fence) once its term has run out, so
// that the last release leaves nothing that is no longer needed.
const tidySql = (table: TableName) => `
  DELETE FROM ${table.shared.sql} WHERE id = $1 AND expires_at <= clock_timestamp()`;

// holdAtLeast: shorten the lease, never lengthen it, and leave the line.
const keepSql = (table: TableName) => `
  WITH kept AS (
    UPDATE ${table.shared.sql}
    SET expires_at = least(expires_at, clock_timestamp() + $3::float8 * interval '1 millisecond')
    WHERE id = $1 AND owner = $2 AND kind = 'lease' AND expires_at > clock_timestamp()
    RETURNING 1
  ), left_line AS (
    DELETE FROM ${table.shared.sql} WHERE id = $1 AND owner = $2 AND kind = 'line'
    RETURNING 1
  )
  SELECT (SELECT count(*) FROM kept)::int AS kept`;

export function prepareSharedRelease(
  db: Queryable,
  transact: Transact,
  table: TableName,
  space: SharedSpace,
) {
  const tag = `${table.tag}_${space}`;
  const release = { name: `cachelock_shared_release_${tag}`, text: releaseSql(table) };
  const tidy = { name: `cachelock_shared_tidy_${tag}`, text: tidySql(table) };
  const keep = { name: `cachelock_shared_keep_${tag}`, text: keepSql(table) };
  return async (key: string, owner: string, keepMs = 0): Promise<boolean> => {
    const id = sharedKeyId(space, key);
    if (keepMs > 0) {
      const result = await db.query({ ...keep, values: [id, owner, keepMs] });
      return (result.rows[0] as { kept: number }).kept > 0;
    }
    return transact(
      async (session) => {
        const result = await session.query({
          ...release,
          values: [id, owner, table.channel, id.toString('base64url')],
        });
        if (result.rows.length > 0) await session.query({ ...tidy, values: [id] });
        return (result.rows[0] as { held: boolean } | undefined)?.held === true;
      },
      [keyLockId(table, id)],
    );
  };
}
