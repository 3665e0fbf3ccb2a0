import type { LeaseInfo } from 'cachelock';
import { NOW_US } from './clock.js';
import type { Db } from './connection.js';
import { keyId, type TableName } from './names.js';

// Numbers as text: one driver gives BIGINT as a number, the other as a bigint.
const inspectSql = (table: TableName) => `
  SELECT owner, CAST(fence AS CHAR) AS fence, CAST(expires_us - ${NOW_US} AS CHAR) AS ttl_us
  FROM ${table.sql}
  WHERE id = ? AND expires_us > ${NOW_US}`;

export function prepareInspect(db: Db, table: TableName) {
  const sql = inspectSql(table);
  return async (key: string): Promise<LeaseInfo | null> => {
    const rows = await db.select(sql, [keyId(key)]);
    const row = rows[0] as { owner: Buffer | string; fence: string; ttl_us: string } | undefined;
    if (!row) return null;
    return {
      owner: Buffer.isBuffer(row.owner) ? row.owner.toString('utf8') : String(row.owner),
      ttlMs: Number(row.ttl_us) / 1000,
      fence: BigInt(row.fence),
    };
  };
}
