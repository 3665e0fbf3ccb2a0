import type { LeaseInfo } from 'cachelock';
import type { Queryable } from './connection.js';
import { keyId, type TableName } from './names.js';

const inspectSql = (table: TableName) => `
  SELECT owner, fence::text AS fence,
         (extract(epoch FROM expires_at - clock_timestamp()) * 1000)::float8 AS ttl_ms
  FROM ${table.sql}
  WHERE id = $1 AND expires_at > clock_timestamp()`;

export function prepareInspect(db: Queryable, table: TableName) {
  const statement = { name: `cachelock_inspect_${table.tag}`, text: inspectSql(table) };
  return async (key: string): Promise<LeaseInfo | null> => {
    const result = await db.query({ ...statement, values: [keyId(key)] });
    const row = result.rows[0] as { owner: string; fence: string; ttl_ms: number } | undefined;
    if (!row) return null;
    return { owner: row.owner, ttlMs: Number(row.ttl_ms), fence: BigInt(row.fence) };
  };
}
