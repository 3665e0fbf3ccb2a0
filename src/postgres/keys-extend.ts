import type { Queryable } from './connection.js';
import { unique } from './keys-release.js';
import type { TableName } from './names.js';

// All or none: the owner's live rows are locked (in id order, as keys-acquire.ts locks them) and
// counted, and updated only if every key is among them. A locked row cannot change hands before
// the update, so the count still holds when it runs.
const extendSql = (table: TableName) => `
  WITH held AS (
    SELECT id FROM ${table.sql}
    WHERE id = ANY($1::bytea[]) AND owner = $2 AND expires_at > clock_timestamp()
    ORDER BY id
    FOR UPDATE
  )
  UPDATE ${table.sql}
  SET expires_at = clock_timestamp() + $3::float8 * interval '1 millisecond'
  WHERE id IN (SELECT id FROM held) AND (SELECT count(*) FROM held) = $4`;

export function prepareKeysExtend(db: Queryable, table: TableName) {
  const statement = { name: `cachelock_keys_extend_${table.tag}`, text: extendSql(table) };
  return async (keys: readonly string[], owner: string, ttlMs: number): Promise<boolean> => {
    const ids = unique(keys);
    const result = await db.query({ ...statement, values: [ids, owner, ttlMs, ids.length] });
    return (result.rowCount ?? 0) === ids.length;
  };
}
