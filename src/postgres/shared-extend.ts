import type { Queryable } from './connection.js';
import { type SharedSpace, sharedKeyId, type TableName } from './names.js';

// Compare-and-expire by the database's clock; the key's row (its last fence) is kept as long.
const extendSql = (table: TableName) => `
  WITH extended AS (
    UPDATE ${table.shared.sql}
    SET expires_at = clock_timestamp() + $3::float8 * interval '1 millisecond'
    WHERE id = $1 AND owner = $2 AND kind = 'lease' AND expires_at > clock_timestamp()
    RETURNING expires_at
  ), outlived AS (
    UPDATE ${table.shared.sql} AS row
    SET expires_at = greatest(row.expires_at, (SELECT max(expires_at) FROM extended))
    WHERE id = $1 AND owner = '' AND EXISTS (SELECT 1 FROM extended)
    RETURNING 1
  )
  SELECT (SELECT count(*) FROM extended)::int AS extended`;

export function prepareSharedExtend(db: Queryable, table: TableName, space: SharedSpace) {
  const statement = {
    name: `cachelock_shared_extend_${table.tag}_${space}`,
    text: extendSql(table),
  };
  return async (key: string, owner: string, ttlMs: number): Promise<boolean> => {
    const result = await db.query({
      ...statement,
      values: [sharedKeyId(space, key), owner, ttlMs],
    });
    return (result.rows[0] as { extended: number }).extended > 0;
  };
}
