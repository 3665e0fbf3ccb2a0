import type { LeaseInfo } from 'cachelock';
import type { Queryable } from './connection.js';
import { type SharedSpace, sharedKeyId, type TableName } from './names.js';

const inspectSql = (table: TableName) => `
  SELECT owner, fence::text AS fence,
         (extract(epoch FROM expires_at - clock_timestamp()) * 1000)::float8 AS ttl_ms
  FROM ${table.shared.sql}
  WHERE id = $1 AND kind = 'lease' AND expires_at > clock_timestamp()
  ORDER BY seq`;

export function prepareSharedInspect(db: Queryable, table: TableName, space: SharedSpace) {
  const statement = {
    name: `cachelock_shared_inspect_${table.tag}_${space}`,
    text: inspectSql(table),
  };
  return async (key: string): Promise<LeaseInfo[]> => {
    const result = await db.query({ ...statement, values: [sharedKeyId(space, key)] });
    return (result.rows as { owner: string; fence: string | null; ttl_ms: number }[]).map(
      (row) => ({
        owner: row.owner,
        ttlMs: Number(row.ttl_ms),
        ...(row.fence === null ? {} : { fence: BigInt(row.fence) }),
      }),
    );
  };
}
