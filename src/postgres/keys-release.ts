import type { Queryable } from './connection.js';
import { keyId, type TableName } from './names.js';

// release.ts for every key in one statement: one atomic step, a wake-up per key released (the
// payload is the id in base64url, as release.ts sends it), and the owner's places in the keys'
// lines go (a lock on several keys waits in the line of one key at a time). The rows are locked
// in id order first, as keys-acquire.ts locks them, so the two never wait for each other in
// opposite orders; they are locked by id and their owner read from the version locked, the
// latest, as release.ts does. No key is handed on: each one freed wakes its waiters.
const releaseSql = (table: TableName) => `
  WITH locked AS (
    SELECT id, owner FROM ${table.sql} WHERE id = ANY($1::bytea[]) ORDER BY id FOR UPDATE
  ), released AS (
    DELETE FROM ${table.sql}
    WHERE id IN (SELECT id FROM locked WHERE owner = $2::text)
    RETURNING id, expires_at > clock_timestamp() AS held
  ), gone AS (
    DELETE FROM ${table.line.sql} WHERE id = ANY($1::bytea[]) AND owner = $2::text
  )
  SELECT held, pg_notify($3, rtrim(translate(encode(id, 'base64'), '+/', '-_'), '=')),
         set_config('synchronous_commit', 'off', true)
  FROM released`;

const keepSql = (table: TableName) => `
  WITH mine AS (
    SELECT id FROM ${table.sql} WHERE id = ANY($1::bytea[]) AND owner = $2 ORDER BY id FOR UPDATE
  )
  UPDATE ${table.sql}
  SET expires_at = least(expires_at, clock_timestamp() + $3::float8 * interval '1 millisecond')
  WHERE id IN (SELECT id FROM mine) AND owner = $2 AND expires_at > clock_timestamp()`;

export function prepareKeysRelease(db: Queryable, table: TableName) {
  const release = { name: `cachelock_keys_release_${table.tag}`, text: releaseSql(table) };
  const keep = { name: `cachelock_keys_keep_${table.tag}`, text: keepSql(table) };
  return async (keys: readonly string[], owner: string, keepMs = 0): Promise<boolean> => {
    const ids = unique(keys);
    if (keepMs > 0) {
      const result = await db.query({ ...keep, values: [ids, owner, keepMs] });
      return (result.rowCount ?? 0) === ids.length;
    }
    const result = await db.query({ ...release, values: [ids, owner, table.channel] });
    const held = (result.rows as { held: boolean }[]).filter((row) => row.held).length;
    return held === ids.length;
  };
}

/** The keys' ids, each once. */
export function unique(keys: readonly string[]): Buffer[] {
  const ids = new Map<string, Buffer>();
  for (const key of keys) {
    const id = keyId(key);
    ids.set(id.toString('hex'), id);
  }
  return [...ids.values()];
}
