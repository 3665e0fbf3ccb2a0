import type { Transact } from './connection.js';
import { keyLockId, type SharedSpace, sharedKeyId, type TableName } from './names.js';

// Compare-and-expire by the database's clock; the key's row (its last fence) is kept as long.
// Under the key's advisory lock, as every statement that writes the key's row: two of them then
// never wait for each other's row locks in opposite orders.
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

export function prepareSharedExtend(transact: Transact, table: TableName, space: SharedSpace) {
  const statement = {
    name: `cachelock_shared_extend_${table.tag}_${space}`,
    text: extendSql(table),
  };
  return (key: string, owner: string, ttlMs: number): Promise<boolean> => {
    const id = sharedKeyId(space, key);
    return transact(
      async (session) => {
        const result = await session.query({ ...statement, values: [id, owner, ttlMs] });
        return (result.rows[0] as { extended: number }).extended > 0;
      },
      [keyLockId(table, id)],
    );
  };
}
