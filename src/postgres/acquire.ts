import type { Acquired } from 'cachelock';
import type { Queryable } from './connection.js';
import { keyId, keyLabel, keyLockId, type TableName } from './names.js';

// One statement: insert the key, or take over its row if the lease has run out by the database's
// clock. ON CONFLICT locks the row and re-checks its latest version, so of concurrent attempts
// only one can win. The holder asking again refreshes its lease and keeps its fence; anyone else
// gets a new fence. The `holder` guard refuses a key that is plainly held before the INSERT
// runs: a refused attempt then writes nothing (no row lock, no commit to flush, no fence drawn).
// The new row's fence (the identity default) is drawn once per statement, before ON CONFLICT
// waits for the row; a statement that waited through another owner's whole lease (a release or
// sweep it waited for, then its backend late to run) would insert that old, lower fence. So the
// statement first takes the key's advisory lock, held to its commit (`gate`, materialised: the
// INSERT's row, and with it the fence, is only made once the gate has let it through); every
// grant of the key draws its fence under that lock (a release's hand-off too), so fences are
// drawn in grant order.
/**
 * An INSERT's take-over of the key's row (aliased `lease`): only a lease that ran out, or the
 * owner's own, which keeps its fence while it is live. Shared with keys-acquire.ts.
 */
export const TAKE_OVER = `ON CONFLICT (id) DO UPDATE SET
      key = excluded.key,
      owner = excluded.owner,
      expires_at = excluded.expires_at,
      fence = CASE WHEN lease.owner = excluded.owner AND lease.expires_at > clock_timestamp()
                   THEN lease.fence ELSE excluded.fence END
    WHERE lease.expires_at <= clock_timestamp() OR lease.owner = excluded.owner`;

const grantSql = (table: TableName) => `
  holder AS MATERIALIZED (
    SELECT fence FROM ${table.sql}
    WHERE id = $1::bytea AND owner <> $3::text AND expires_at > clock_timestamp()
  ),
  gate AS MATERIALIZED (
    SELECT pg_advisory_xact_lock($5::bigint) WHERE NOT EXISTS (SELECT 1 FROM holder)
  ),
  granted AS (
    INSERT INTO ${table.sql} AS lease (id, key, owner, expires_at)
    SELECT $1::bytea, $2::text, $3::text, clock_timestamp() + $4::float8 * interval '1 millisecond'
    FROM gate
    ${TAKE_OVER}
    RETURNING fence
  )`;

const acquireSql = (table: TableName) => `
  WITH ${grantSql(table)}
  SELECT fence::text AS fence FROM granted`;

// A waiter's try: the same, and refused, it joins the key's line (or renews its place there)
// for $6 ms, to be handed the key for a claim of at most that long (see release.ts); granted,
// it leaves the line. A refusal answers the fence of the holder that refused it: a hand-off to
// this waiter made before the refusal has a lower fence (fences are drawn in grant order), one
// made after it a higher one. A place need not survive a crash (its waiter renews it), so a
// refusal's commit is not waited to disk. Every write to the line comes after the gate
// (`granted` is read first), so the statement never holds a place while it waits for the key's
// advisory lock, which a release takes before it touches the line.
const waitSql = (table: TableName) => `
  WITH ${grantSql(table)},
  placed AS (
    INSERT INTO ${table.line.sql} AS place (id, owner, expires_at, claim_ms)
    SELECT $1::bytea, $3::text, clock_timestamp() + $6::float8 * interval '1 millisecond',
           least($6::float8, $4::float8)
    WHERE NOT EXISTS (SELECT 1 FROM granted)
    ON CONFLICT (id, owner) DO UPDATE SET
      expires_at = excluded.expires_at,
      claim_ms = excluded.claim_ms
  ),
  unplaced AS (
    DELETE FROM ${table.line.sql}
    WHERE id = $1::bytea AND owner = $3::text AND EXISTS (SELECT 1 FROM granted)
  )
  SELECT (SELECT fence::text FROM granted) AS fence,
         (SELECT fence::text FROM holder) AS refused_at,
         CASE WHEN NOT EXISTS (SELECT 1 FROM granted)
              THEN set_config('synchronous_commit', 'off', true) END AS quick`;

/**
 * `acquire(key, owner, ttlMs, lineMs?, refused?)`: the fence, or `null` when another owner
 * holds the key. With `lineMs` (a waiter) a refusal joins the key's line and tells `refused`
 * the owner and the holder's fence, or `undefined` where the refusal came from a holder the statement could
 * not read (it took the key while the statement waited).
 */
export function prepareAcquire(db: Queryable, table: TableName) {
  const text = acquireSql(table);
  const name = `cachelock_acquire_${table.tag}`;
  const wait = { name: `cachelock_wait_${table.tag}`, text: waitSql(table) };
  return async (
    key: string,
    owner: string,
    ttlMs: number,
    lineMs?: number,
    refused?: (owner: string, at: bigint | undefined) => void,
  ): Promise<Acquired | null> => {
    const id = keyId(key);
    const values: unknown[] = [id, keyLabel(key), owner, ttlMs, keyLockId(table, id).toString()];
    if (lineMs === undefined || lineMs <= 0) {
      const result = await db.query({ name, text, values });
      const row = result.rows[0] as { fence: string } | undefined;
      return row ? { fence: BigInt(row.fence) } : null;
    }
    values.push(lineMs);
    const result = await db.query({ ...wait, values });
    const row = result.rows[0] as { fence: string | null; refused_at: string | null };
    if (row.fence !== null) return { fence: BigInt(row.fence) };
    refused?.(owner, row.refused_at === null ? undefined : BigInt(row.refused_at));
    return null;
  };
}
