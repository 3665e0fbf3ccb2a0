import type { AcquiredKeys } from 'cachelock';
import { TAKE_OVER } from './acquire.js';
import { type Queryable, Rollback, type Transact } from './connection.js';
import { keyId, keyLabel, keyLockId, type TableName } from './names.js';

// The single-key acquire (acquire.ts) for every key at once, in the order of their ids: each row
// is locked as it is inserted or taken over and stays locked until the transaction ends, so two
// transactions over overlapping keys lock them in the same order and never deadlock (a single-key
// statement locks one row only). A key held by another owner is not taken; fewer rows returned
// than keys asked means a refusal, and the transaction is rolled back so that none is kept.
// The transaction first takes every key's advisory lock (see keyLockId), as the single-key
// acquire does, so the fences this statement draws cannot be older than a grant that came first.
// The owner's places in the keys' lines go with them (a lock on several keys waits in the line of
// one key at a time; a refusal rolls this back with the rest).
const acquireSql = (table: TableName) => `
  WITH gone AS (
    DELETE FROM ${table.line.sql} WHERE id = ANY($1::bytea[]) AND owner = $3::text
  )
  INSERT INTO ${table.sql} AS lease (id, key, owner, expires_at)
  SELECT wanted.id, wanted.key, $3::text, clock_timestamp() + $4::float8 * interval '1 millisecond'
  FROM unnest($1::bytea[], $2::text[]) AS wanted (id, key)
  ORDER BY wanted.id
  ${TAKE_OVER}
  RETURNING id, fence::text AS fence`;

// Refuses without a transaction when a key is plainly held by someone else: no row is locked
// and no fence drawn for an attempt that cannot succeed.
const heldSql = (table: TableName) => `
  SELECT EXISTS (
    SELECT 1 FROM ${table.sql}
    WHERE id = ANY($1::bytea[]) AND owner <> $2::text AND expires_at > clock_timestamp()
  ) AS held`;

/** Deadlock (40P01): only in theory with the ordering above; the whole attempt is tried again. */
const DEADLOCK = '40P01';

export function prepareKeysAcquire(db: Queryable, transact: Transact, table: TableName) {
  const acquire = { name: `cachelock_keys_acquire_${table.tag}`, text: acquireSql(table) };
  const held = { name: `cachelock_keys_held_${table.tag}`, text: heldSql(table) };
  return async (
    keys: readonly string[],
    owner: string,
    ttlMs: number,
  ): Promise<AcquiredKeys | null> => {
    const ids = new Map<string, { id: Buffer; key: string }>();
    for (const key of keys) {
      const id = keyId(key);
      ids.set(id.toString('hex'), { id, key });
    }
    const wanted = [...ids.values()];
    const ask = [wanted.map((w) => w.id), wanted.map((w) => keyLabel(w.key))];
    const precheck = await db.query({ ...held, values: [ask[0], owner] });
    if ((precheck.rows[0] as { held: boolean }).held) return null;
    for (let attempt = 0; ; attempt++) {
      try {
        const fences = await transact(
          async (session) => {
            const result = await session.query({ ...acquire, values: [...ask, owner, ttlMs] });
            const rows = result.rows as { id: Buffer; fence: string }[];
            if (rows.length < wanted.length) return new Rollback(null);
            return new Map(rows.map((row) => [row.id.toString('hex'), BigInt(row.fence)]));
          },
          wanted.map((w) => keyLockId(table, w.id)),
        );
        if (fences === null) return null;
        return { fences: keys.map((key) => fences.get(keyId(key).toString('hex'))) };
      } catch (error) {
        if (attempt >= 2 || (error as { code?: string }).code !== DEADLOCK) throw error;
      }
    }
  };
}
