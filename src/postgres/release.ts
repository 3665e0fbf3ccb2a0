import type { Queryable } from './connection.js';
import { keyId, keyLockId, type TableName } from './names.js';

// Compare-and-delete, the hand-off and the wake-up in one round trip. Only the owner's row is
// released; an expired row of the owner goes too (nobody took it over) but answers `false`: the
// lease was not held until now. Where the key has a live place in its line (see acquire.ts),
// the row is not deleted but handed to the first one: its owner, a claim lease of the place's
// `claim_ms` and a new fence, and the NOTIFY says so: `<id> <fence> <claim ms> <owner>`. With
// nobody live in line the row is deleted and the NOTIFY carries the id alone. Either way the
// releaser's own place and the lapsed places of the key go.
//
// The key's advisory lock comes first (`gate`; everything else joins it, so no row or place is
// locked before it): the fence of a hand-off is drawn under it, as every grant's is, and no
// statement that holds the row or a place waits for it. The key's row is then locked by its id
// alone (`locked`) and its owner read from the version locked, the latest: the statement's
// snapshot dates from before the waits, when the row could still have been someone else's (a
// waiter giving up just as the key is handed to it must find it its own). Only then is the line
// read; the chosen place is deleted, and only a place that was still there (its waiter did not
// leave meanwhile) is handed the key. The hand-off and the delete act on the row `locked` holds
// (by id: the owner test was made on its latest version).
//
// A plain release is not waited to disk (synchronous_commit off for this transaction only), nor
// is a release by someone who does not hold the key (it only leaves the line): if the server
// crashes right after, the release may be undone and the key stays taken until its lease runs
// out. That costs liveness, never exclusion, and saves a flush per lock cycle. A
// hand-off is a grant and stays durable, as acquire and extend are: one lost in a crash could
// let two owners believe they hold the key.
const releaseSql = (table: TableName) => `
  WITH gate AS MATERIALIZED (
    SELECT pg_advisory_xact_lock($5::bigint)
  ),
  locked AS MATERIALIZED (
    SELECT lease.owner, lease.expires_at > clock_timestamp() AS held
    FROM ${table.sql} AS lease, gate
    WHERE lease.id = $1::bytea
    FOR UPDATE OF lease
  ),
  mine AS MATERIALIZED (
    SELECT held FROM locked WHERE owner = $2::text
  ),
  gone AS (
    DELETE FROM ${table.line.sql} AS place USING gate
    WHERE place.id = $1::bytea
      AND (place.owner = $2::text OR place.expires_at <= clock_timestamp())
  ),
  next AS (
    DELETE FROM ${table.line.sql} AS place USING gate
    WHERE place.id = $1::bytea AND place.expires_at > clock_timestamp() AND place.owner = (
      SELECT owner FROM ${table.line.sql}
      WHERE id = $1::bytea AND owner <> $2::text AND expires_at > clock_timestamp()
        AND EXISTS (SELECT 1 FROM mine)
      ORDER BY seq
      LIMIT 1
    )
    RETURNING place.owner, place.claim_ms
  ),
  handed AS (
    UPDATE ${table.sql} AS lease
    SET owner = next.owner,
        expires_at = clock_timestamp() + next.claim_ms * interval '1 millisecond',
        fence = nextval(pg_get_serial_sequence('${table.sql}', 'fence'))
    FROM next, gate
    WHERE lease.id = $1::bytea
    RETURNING lease.fence, lease.owner, next.claim_ms
  ),
  freed AS (
    DELETE FROM ${table.sql} AS lease USING gate
    WHERE lease.id = $1::bytea AND EXISTS (SELECT 1 FROM mine) AND NOT EXISTS (SELECT 1 FROM next)
  )
  SELECT mine.held, handed.fence::text AS fence, handed.claim_ms, handed.owner AS next,
         CASE WHEN mine.held IS NOT NULL THEN pg_notify($3::text, CASE
           WHEN handed.owner IS NULL THEN $4::text
           ELSE concat_ws(' ', $4::text, handed.fence, handed.claim_ms, handed.owner)
         END) END,
         CASE WHEN handed.owner IS NULL THEN set_config('synchronous_commit', 'off', true) END
  FROM (SELECT) AS one LEFT JOIN mine ON true LEFT JOIN handed ON true`;

// holdAtLeast: shorten the lease to keepMs, never lengthen it; no wake-up, the key stays taken.
const keepSql = (table: TableName) => `
  UPDATE ${table.sql}
  SET expires_at = least(expires_at, clock_timestamp() + $3::float8 * interval '1 millisecond')
  WHERE id = $1 AND owner = $2 AND expires_at > clock_timestamp()`;

/** A release handed the key to the first waiter in line: the message its NOTIFY carried. */
export type Handed = (payload: string) => void;

/**
 * `release(key, owner, keepMs?)`: whether `owner` held the key until now. A hand-off it made is
 * told to `handed` as soon as the reply comes, before its NOTIFY comes round.
 */
export function prepareRelease(db: Queryable, table: TableName, handed?: Handed) {
  const release = { name: `cachelock_release_${table.tag}`, text: releaseSql(table) };
  const keep = { name: `cachelock_keep_${table.tag}`, text: keepSql(table) };
  return async (key: string, owner: string, keepMs = 0): Promise<boolean> => {
    const id = keyId(key);
    if (keepMs > 0) {
      const result = await db.query({ ...keep, values: [id, owner, keepMs] });
      return (result.rowCount ?? 0) > 0;
    }
    const payload = id.toString('base64url');
    const result = await db.query({
      ...release,
      values: [id, owner, table.channel, payload, keyLockId(table, id).toString()],
    });
    const row = result.rows[0] as
      | { held: boolean | null; fence: string | null; claim_ms: number | null; next: string | null }
      | undefined;
    if (row === undefined) return false;
    if (row.next !== null && handed !== undefined) {
      handed(`${payload} ${row.fence} ${row.claim_ms} ${row.next}`);
    }
    return row.held === true;
  };
}
