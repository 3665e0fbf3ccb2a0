import type { Acquired } from 'cachelock';
import type { Queryable } from './connection.js';
import { keyId, keyLabel, keyLockId, type TableName } from './names.js';

// One statement: insert the key, or take over its row if the lease has run out by the database's
// clock. ON CONFLICT locks the row and re-checks its latest version, so of concurrent attempts
// only one can win. The holder asking again refreshes its lease and keeps its fence; anyone else
// gets a new fence. The NOT EXISTS guard refuses a key that is plainly held before the INSERT
// runs: a refused attempt then writes nothing (no row lock, no commit to flush, no fence drawn).
// The new row's fence (the identity default) is drawn once per statement, before ON CONFLICT
// waits for the row; a statement that waited through another owner's whole lease (a release or
// sweep it waited for, then its backend late to run) would insert that old, lower fence. So the
// statement first takes the key's advisory lock, held to its commit (`gate`, materialised: the
// INSERT's row, and with it the fence, is only made once the gate has let it through); every
// acquisition of the key draws its fence under that lock, so fences are drawn in grant order.
const acquireSql = (table: TableName) => `
  WITH gate AS MATERIALIZED (
    SELECT pg_advisory_xact_lock($5::bigint)
    WHERE NOT EXISTS (
      SELECT 1 FROM ${table.sql}
      WHERE id = $1::bytea AND owner <> $3::text AND expires_at > clock_timestamp()
    )
  )
  INSERT INTO ${table.sql} AS lease (id, key, owner, expires_at)
  SELECT $1::bytea, $2::text, $3::text, clock_timestamp() + $4::float8 * interval '1 millisecond'
  FROM gate
  ON CONFLICT (id) DO UPDATE SET
    key = excluded.key,
    owner = excluded.owner,
    expires_at = excluded.expires_at,
    fence = CASE WHEN lease.owner = excluded.owner AND lease.expires_at > clock_timestamp()
                 THEN lease.fence ELSE excluded.fence END
  WHERE lease.expires_at <= clock_timestamp() OR lease.owner = excluded.owner
  RETURNING fence::text AS fence`;

export function prepareAcquire(db: Queryable, table: TableName) {
  const text = acquireSql(table);
  const name = `cachelock_acquire_${table.tag}`;
  return async (key: string, owner: string, ttlMs: number): Promise<Acquired | null> => {
    const id = keyId(key);
    const result = await db.query({
      name,
      text,
      values: [id, keyLabel(key), owner, ttlMs, keyLockId(table, id).toString()],
    });
    const row = result.rows[0] as { fence: string } | undefined;
    return row ? { fence: BigInt(row.fence) } : null;
  };
}
