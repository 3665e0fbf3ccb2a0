import type { Acquired, SharedRequest } from 'cachelock';
import type { Queryable, Transact } from './connection.js';
import { keyLabel, keyLockId, type SharedSpace, sharedKeyId, type TableName } from './names.js';

// Runs after the key's advisory lock, so it sees every acquisition of the key that came before.
// Expired leases and places go first (one clock reading for both the delete and the read).
const readSql = (table: TableName) => `
  WITH now AS (SELECT clock_timestamp() AS t),
  purged AS (
    DELETE FROM ${table.shared.sql}
    WHERE id = $1 AND expires_at <= (SELECT t FROM now)
    RETURNING 1
  )
  SELECT owner, kind, weight, seq::text AS seq, fence::text AS fence,
         (SELECT count(*) FROM purged)::int AS purged
  FROM ${table.shared.sql}
  WHERE id = $1 AND expires_at > (SELECT t FROM now)
  ORDER BY seq`;

const ms = (n: number) => `clock_timestamp() + $${n}::float8 * interval '1 millisecond'`;

// A place in the line: a new one at the end, or the owner's own renewed where it stands.
const placeSql = (table: TableName) => `
  INSERT INTO ${table.shared.sql} AS row (id, owner, key, space, kind, expires_at)
  VALUES ($1, $2, $3, $4, 'line', ${ms(5)})
  ON CONFLICT (id, owner) DO UPDATE SET expires_at = excluded.expires_at
  RETURNING expires_at`;

// A new lease, with a fence of its own from the sequence, or the key's last one when it shares.
const leaseSql = (table: TableName) => `
  INSERT INTO ${table.shared.sql} (id, owner, key, space, kind, weight, expires_at, fence, seq)
  SELECT $1, $2, $3, $4, 'lease', $5, ${ms(6)},
         CASE WHEN $7::boolean THEN $8::bigint ELSE next.value END, next.value
  FROM (SELECT nextval(pg_get_serial_sequence($9, 'seq')) AS value) AS next
  ON CONFLICT (id, owner) DO UPDATE SET
    kind = 'lease', weight = excluded.weight, expires_at = excluded.expires_at,
    fence = excluded.fence, seq = excluded.seq
  RETURNING fence::text AS fence, expires_at`;

// Readers share the fence of the last writer: the key's row keeps it for as long as any lease or
// place of the key was granted, the writer's own included, so that a reader right after a release
// still gets it, and it goes once every term has run out (a paused writer may use its fence until
// then). A sharing acquisition leaves the fence as it is. Semaphores share nothing: no such row.
const keySql = (table: TableName) => `
  INSERT INTO ${table.shared.sql} AS row (id, owner, key, space, kind, expires_at, fence)
  VALUES ($1, '', $2, $3, 'key', $4, $5)
  ON CONFLICT (id, owner) DO UPDATE SET
    expires_at = greatest(row.expires_at, excluded.expires_at),
    fence = CASE WHEN $6::boolean THEN row.fence ELSE excluded.fence END`;

const refreshSql = (table: TableName) => `
  UPDATE ${table.shared.sql} SET expires_at = ${ms(3)}
  WHERE id = $1 AND owner = $2 AND kind = 'lease'
  RETURNING fence::text AS fence, expires_at`;

const notifySql = 'SELECT pg_notify($1, $2)';

interface Row {
  owner: string;
  kind: 'key' | 'lease' | 'line';
  weight: number;
  seq: string;
  fence: string | null;
  purged: number;
}

/**
 * One shared acquisition, in a transaction that holds the key's advisory lock: concurrent
 * acquisitions of a key (from any pool or process) run one after the other, each counting the
 * leases the previous ones admitted, so the limit cannot be passed.
 */
export function prepareSharedAcquire(transact: Transact, table: TableName, space: SharedSpace) {
  const tag = `${table.tag}_${space}`;
  const read = { name: `cachelock_shared_read_${tag}`, text: readSql(table) };
  const place = { name: `cachelock_shared_place_${tag}`, text: placeSql(table) };
  const lease = { name: `cachelock_shared_lease_${tag}`, text: leaseSql(table) };
  const keyRow = { name: `cachelock_shared_key_${tag}`, text: keySql(table) };
  const refresh = { name: `cachelock_shared_refresh_${tag}`, text: refreshSql(table) };

  return (
    key: string,
    owner: string,
    ttlMs: number,
    request: SharedRequest,
  ): Promise<Acquired | null> => {
    const id = sharedKeyId(space, key);
    const label = keyLabel(key);
    const wake = (session: Queryable) =>
      session.query({ text: notifySql, values: [table.channel, id.toString('base64url')] });
    const bump = async (
      session: Queryable,
      expiresAt: Date,
      fence: string | null,
      shares: boolean,
    ) => {
      if (space !== 'rw') return;
      await session.query({ ...keyRow, values: [id, label, space, expiresAt, fence, shares] });
    };

    return transact(
      async (session) => {
        const rows = (await session.query({ ...read, values: [id] })).rows as Row[];
        const purged = (rows[0]?.purged ?? 0) > 0;
        if (purged) await wake(session);
        const mine = rows.find((row) => row.owner === owner);
        if (mine?.kind === 'lease') {
          // The holder asking again (a retry after a lost reply): same lease, same fence.
          const result = await session.query({ ...refresh, values: [id, owner, ttlMs] });
          const row = result.rows[0] as { fence: string | null; expires_at: Date };
          await bump(session, row.expires_at, null, true);
          return row.fence === null ? {} : { fence: BigInt(row.fence) };
        }
        // Someone is ahead: any place before the owner's, or any place at all for a newcomer (its
        // place would go to the end).
        const mySeq = mine?.kind === 'line' ? BigInt(mine.seq) : undefined;
        const ahead = rows.some(
          (row) =>
            row.kind === 'line' &&
            row.owner !== owner &&
            (mySeq === undefined || BigInt(row.seq) < mySeq),
        );
        const used = rows.reduce((sum, row) => (row.kind === 'lease' ? sum + row.weight : sum), 0);
        if (ahead || used + request.weight > request.limit) {
          if (request.lineMs !== undefined) {
            const result = await session.query({
              ...place,
              values: [id, owner, label, space, request.lineMs],
            });
            await bump(session, (result.rows[0] as { expires_at: Date }).expires_at, null, true);
          }
          return null;
        }
        const shares = request.shareFence === true;
        const last = rows.find((row) => row.kind === 'key')?.fence ?? null;
        const result = await session.query({
          ...lease,
          values: [id, owner, label, space, request.weight, ttlMs, shares, last, table.shared.sql],
        });
        const row = result.rows[0] as { fence: string | null; expires_at: Date };
        await bump(session, row.expires_at, row.fence, shares);
        // Its place, if it had one, became this lease (one row per owner and key): the next in
        // line may fit beside it, so it is woken.
        if (
          mine?.kind === 'line' &&
          rows.some((other) => other.kind === 'line' && other.owner !== owner)
        ) {
          await wake(session);
        }
        return row.fence === null ? {} : { fence: BigInt(row.fence) };
      },
      [keyLockId(table, id)],
    );
  };
}
