import type { Queryable } from './connection.js';
import { keyId, type TableName } from './names.js';

// Compare-and-expire by the database's clock: a lease that has run out cannot be extended.
const extendSql = (table: TableName) => `
  UPDATE ${table.sql}
  SET expires_at = clock_timestamp() + $3::float8 * interval '1 millisecond'
  WHERE id = $1 AND owner = $2 AND expires_at > clock_timestamp()`;

export function prepareExtend(db: Queryable, table: TableName) {
  const statement = { name: `cachelock_extend_${table.tag}`, text: extendSql(table) };
  return async (key: string, owner: string, ttlMs: number): Promise<boolean> => {
    const result = await db.query({ ...statement, values: [keyId(key), owner, ttlMs] });
    return (result.rowCount ?? 0) > 0;
  };
}
