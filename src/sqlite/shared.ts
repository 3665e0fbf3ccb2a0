import type { Acquired, LeaseInfo, SharedRequest } from 'cachelock';
import type { SqliteDatabase } from './driver.js';
import { immediate, type Tables } from './schema.js';

/** How many acquisitions go by between two sweeps of the shared table (the first one sweeps). */
const SWEEP_EVERY = 16;
/** The most expired rows one sweep deletes, found through the index on expiry. */
const SWEEP_LIMIT = 64;

/** The two namespaces of shared leases, each a `space` of the table. */
export type SharedSpace = 'permits' | 'rw';

interface Row {
  owner: string;
  kind: 'key' | 'lease' | 'line';
  weight: number;
  seq: bigint;
  fence: string | null;
}

/**
 * The statements of permits and readers/writers on one table, each operation one `BEGIN
 * IMMEDIATE` transaction: acquisitions of a key, from any connection or process, run one after
 * the other and each counts the leases admitted before it, so a limit cannot be passed.
 */
export function prepareShared(db: SqliteDatabase, { fences, shared, sharedIndex }: Tables) {
  const transaction = immediate(db);
  const purge = db.prepare(`DELETE FROM ${shared} WHERE space = ? AND key = ? AND expires_at <= ?`);
  const read = db.prepare(
    `SELECT owner, kind, weight, CAST(seq AS TEXT) AS seq, CAST(fence AS TEXT) AS fence
     FROM ${shared} WHERE space = ? AND key = ? ORDER BY seq`,
  );
  const nextSeq = db.prepare(
    `UPDATE ${fences} SET value = max(value + 1, ?) WHERE id = 1
     RETURNING CAST(value AS TEXT) AS value`,
  );
  const renewPlace = db.prepare(
    `UPDATE ${shared} SET expires_at = ? WHERE space = ? AND key = ? AND owner = ? AND kind = 'line'`,
  );
  const write = db.prepare(
    `INSERT OR REPLACE INTO ${shared} (space, key, owner, kind, weight, expires_at, fence, seq)
     VALUES (?, ?, ?, ?, ?, ?, ?, ?)`,
  );
  const refresh = db.prepare(
    `UPDATE ${shared} SET expires_at = ? WHERE space = ? AND key = ? AND owner = ? AND kind = 'lease'`,
  );
  // Readers share the fence of the last writer: the key's row keeps it for as long as any lease
  // or place of the key was granted, the writer's own included, so that a reader right after a
  // release still gets it; it goes once every term has run out (a paused writer may use its fence
  // until then). Semaphores share nothing: no such row.
  const keyRow = db.prepare(
    `INSERT INTO ${shared} (space, key, owner, kind, expires_at, fence, seq)
     VALUES (?, ?, '', 'key', ?, ?, 0)
     ON CONFLICT (space, key, owner) DO UPDATE SET
       expires_at = max(expires_at, excluded.expires_at),
       fence = CASE WHEN ? THEN fence ELSE excluded.fence END`,
  );
  const remove = db.prepare(
    `DELETE FROM ${shared} WHERE space = ? AND key = ? AND owner = ? AND owner <> ''
     RETURNING kind, expires_at`,
  );
  const keep = db.prepare(
    `UPDATE ${shared} SET expires_at = min(expires_at, ?)
     WHERE space = ? AND key = ? AND owner = ? AND kind = 'lease' AND expires_at > ?`,
  );
  const leave = db.prepare(
    `DELETE FROM ${shared} WHERE space = ? AND key = ? AND owner = ? AND kind = 'line'`,
  );
  const extend = db.prepare(
    `UPDATE ${shared} SET expires_at = ?
     WHERE space = ? AND key = ? AND owner = ? AND kind = 'lease' AND expires_at > ?`,
  );
  const inspect = db.prepare(
    `SELECT owner, expires_at, CAST(fence AS TEXT) AS fence FROM ${shared}
     WHERE space = ? AND key = ? AND kind = 'lease' AND expires_at > ? ORDER BY seq`,
  );
  // Indexed by expiry (sharedIndex), oldest first; a key's row expires with its latest lease or
  // place, so it goes last.
  const sweep = db.prepare(
    `DELETE FROM ${shared} WHERE (space, key, owner) IN (
       SELECT space, key, owner FROM ${shared} INDEXED BY ${sharedIndex}
       WHERE expires_at <= ? ORDER BY expires_at LIMIT ?)`,
  );
  // Starts full, so that a store's first acquisition sweeps: short-lived processes help too.
  let sinceSweep = SWEEP_EVERY;
  const draw = (now: number): bigint =>
    BigInt(String(nextSeq.get(BigInt(Math.floor(now)) * 1000n)?.value));

  return (space: SharedSpace) => ({
    acquire: (key: string, owner: string, ttlMs: number, request: SharedRequest) =>
      transaction((): Acquired | null => {
        const now = Date.now();
        if (++sinceSweep >= SWEEP_EVERY) {
          sinceSweep = 0;
          sweep.run(now, SWEEP_LIMIT);
        }
        purge.run(space, key, now);
        const found = read.all(space, key).map(
          (row): Row => ({
            owner: String(row.owner),
            kind: row.kind as Row['kind'],
            weight: Number(row.weight),
            seq: BigInt(String(row.seq)),
            fence: row.fence === null ? null : String(row.fence),
          }),
        );
        const bump = (expiresAt: number, fence: bigint | null, shares: boolean) => {
          if (space === 'rw') keyRow.run(space, key, expiresAt, fence, shares ? 1 : 0);
        };
        const mine = found.find((row) => row.owner === owner);
        const expiresAt = Math.ceil(now + ttlMs);
        if (mine?.kind === 'lease') {
          // The holder asking again (a retry after a lost reply): same lease, same fence.
          refresh.run(expiresAt, space, key, owner);
          bump(expiresAt, null, true);
          return mine.fence === null ? {} : { fence: BigInt(mine.fence) };
        }
        // Someone is ahead: any place before the owner's, or any place at all for a newcomer (its
        // place would go to the end).
        const mySeq = mine?.kind === 'line' ? mine.seq : undefined;
        const ahead = found.some(
          (row) =>
            row.kind === 'line' && row.owner !== owner && (mySeq === undefined || row.seq < mySeq),
        );
        const used = found.reduce((sum, row) => (row.kind === 'lease' ? sum + row.weight : sum), 0);
        if (ahead || used + request.weight > request.limit) {
          if (request.lineMs !== undefined) {
            const until = Math.ceil(now + request.lineMs);
            if (mySeq === undefined)
              write.run(space, key, owner, 'line', 0, until, null, draw(now));
            else renewPlace.run(until, space, key, owner);
            bump(until, null, true);
          }
          return null;
        }
        const shares = request.shareFence === true;
        const seq = draw(now);
        const last = found.find((row) => row.kind === 'key')?.fence ?? null;
        const fence = shares ? (last === null ? null : BigInt(last)) : seq;
        // Replaces the owner's place, if it had one: one row per owner and key.
        write.run(space, key, owner, 'lease', request.weight, expiresAt, fence, seq);
        bump(expiresAt, fence, shares);
        return fence === null ? {} : { fence };
      }),

    release: (key: string, owner: string, keepMs = 0) =>
      transaction((): boolean => {
        const now = Date.now();
        if (keepMs > 0) {
          const kept = Number(keep.run(Math.ceil(now + keepMs), space, key, owner, now).changes);
          leave.run(space, key, owner);
          return kept > 0;
        }
        const row = remove.get(space, key, owner);
        if (row === undefined) return false;
        // Expired rows of the key go too, the key's row once its term has run out.
        purge.run(space, key, now);
        return row.kind === 'lease' && Number(row.expires_at) > now;
      }),

    extend: (key: string, owner: string, ttlMs: number) =>
      transaction((): boolean => {
        const now = Date.now();
        const expiresAt = Math.ceil(now + ttlMs);
        if (Number(extend.run(expiresAt, space, key, owner, now).changes) === 0) return false;
        if (space === 'rw') keyRow.run(space, key, expiresAt, null, 1);
        return true;
      }),

    inspect: (key: string): LeaseInfo[] => {
      const now = Date.now();
      return inspect.all(space, key, now).map((row) => ({
        owner: String(row.owner),
        ttlMs: Number(row.expires_at) - now,
        ...(row.fence === null ? {} : { fence: BigInt(String(row.fence)) }),
      }));
    },
  });
}
