import type { Handoff } from 'cachelock';
import type { SqliteDatabase } from './driver.js';
import type { Tables } from './schema.js';

/** A caller that waits for the key: its place lasts `lineMs`; `bell` rings its process. */
export interface Waiting {
  lineMs: number;
  bell: number | undefined;
  /**
   * Whether this owner was refused before and so may have a place: only then can a glance
   * (`refusedAtAGlance`) settle its try, and a first try goes straight to the write lock.
   */
  placed: boolean;
  /** Told when the key is held, until when (ms since the epoch): no release may come. */
  heldUntil?: (expiresAt: number) => void;
  /**
   * Told when the caller is refused, with the fence counter as it read it: a hand-off made
   * before that (with a fence at most this) is void for the caller.
   */
  refused?: (counter: bigint) => void;
}

/**
 * The first live place in a key's line, once the key is free: the bell of its process (null:
 * it only polls), and the hand-off that made it the holder, where its place said for how long.
 */
export interface NextInLine {
  bell: number | null;
  handoff?: Handoff;
}

/**
 * Take a free key: a new fence above the last and the wall clock in microseconds (should the file
 * be lost, a new one still counts from above the old), and the lease. Returns the fence.
 */
export function prepareTake(db: SqliteDatabase, { leases, fences }: Tables) {
  const nextFence = db.prepare(`UPDATE ${fences} SET value = max(value + 1, ?) WHERE id = 1`);
  const take = db.prepare(
    `INSERT OR REPLACE INTO ${leases} (key, owner, expires_at, fence)
     VALUES (?, ?, ?, (SELECT value FROM ${fences} WHERE id = 1))
     RETURNING CAST(fence AS TEXT) AS fence`,
  );
  return (key: string, owner: string, now: number, expiresAt: number): bigint => {
    nextFence.run(BigInt(Math.floor(now)) * 1000n);
    return BigInt(String(take.get(key, owner, expiresAt)?.fence));
  };
}

// The exclusive lock's waiters are places in the shared table's space 'lock' (kind 'line'),
// ordered by `seq` from the fence counter, as the places of permits are; `fence` holds the bell
// of the waiting process and `weight` its claim: how long a lease handed to it lasts before it
// extends it (0 in places of versions that never hand a key over). A free key goes to the first
// live place: a release hands it over (a lease for the claim) in its own transaction, and where
// the place has no claim, anyone else is refused until that waiter has taken it, left, or let its
// place run out. Every statement here runs inside the caller's transaction.
const SPACE = "'lock'";

export function prepareLine(db: SqliteDatabase, tables: Tables) {
  const { leases, fences, shared, sharedIndex } = tables;
  const takeKey = prepareTake(db, tables);
  // Read without the write lock (in WAL readers never wait for the writer): the live holder, the
  // first live place, and the caller's own place.
  const glance = db.prepare(
    `SELECT (SELECT owner FROM ${leases} WHERE key = ? AND expires_at > ?) AS holder,
       (SELECT expires_at FROM ${leases} WHERE key = ? AND expires_at > ?) AS held_until,
       (SELECT owner FROM ${shared} WHERE space = ${SPACE} AND key = ? AND kind = 'line'
          AND expires_at > ? ORDER BY seq LIMIT 1) AS first,
       (SELECT expires_at FROM ${shared} WHERE space = ${SPACE} AND key = ? AND owner = ?
          AND kind = 'line') AS until,
       (SELECT fence FROM ${shared} WHERE space = ${SPACE} AND key = ? AND owner = ?
          AND kind = 'line') AS bell,
       (SELECT CAST(value AS TEXT) FROM ${fences} WHERE id = 1) AS counter`,
  );
  const places = db.prepare(
    `SELECT owner, expires_at FROM ${shared}
     WHERE space = ${SPACE} AND key = ? AND kind = 'line' ORDER BY seq`,
  );
  const first = db.prepare(
    `SELECT owner, fence AS bell, weight AS claim FROM ${shared}
     WHERE space = ${SPACE} AND key = ? AND kind = 'line' AND expires_at > ? ORDER BY seq LIMIT 1`,
  );
  const counter = db.prepare(`SELECT CAST(value AS TEXT) AS value FROM ${fences} WHERE id = 1`);
  // The taker's own place goes, and the places that ran out before it.
  const served = db.prepare(
    `DELETE FROM ${shared} WHERE space = ${SPACE} AND key = ? AND kind = 'line'
     AND (owner = ? OR expires_at <= ?)`,
  );
  const renew = db.prepare(
    `UPDATE ${shared} SET expires_at = ?, fence = ?, weight = ?
     WHERE space = ${SPACE} AND key = ? AND owner = ? AND kind = 'line' AND expires_at > ?`,
  );
  const nextSeq = db.prepare(
    `UPDATE ${fences} SET value = max(value + 1, ?) WHERE id = 1
     RETURNING CAST(value AS TEXT) AS value`,
  );
  // A place that ran out is replaced by one at the end of the line.
  const join = db.prepare(
    `INSERT OR REPLACE INTO ${shared} (space, key, owner, kind, weight, expires_at, fence, seq)
     VALUES (${SPACE}, ?, ?, 'line', ?, ?, ?, ?)`,
  );
  const leave = db.prepare(
    `DELETE FROM ${shared} WHERE space = ${SPACE} AND key = ? AND owner = ? AND kind = 'line'`,
  );
  const held = db.prepare(`SELECT 1 AS held FROM ${leases} WHERE key = ? AND expires_at > ?`);
  // Every space's rows that ran out, oldest first through the index on expiry (as shared.ts).
  const sweep = db.prepare(
    `DELETE FROM ${shared} WHERE (space, key, owner) IN (
       SELECT space, key, owner FROM ${shared} INDEXED BY ${sharedIndex}
       WHERE expires_at <= ? ORDER BY expires_at LIMIT 64)`,
  );

  /** The key is free: the first live place takes it where its place says for how long. */
  const handOff = (key: string, now: number): NextInLine | undefined => {
    const row = first.get(key, now);
    if (row === undefined) return undefined;
    const bell = row.bell === null ? null : Number(row.bell);
    const claimMs = Number(row.claim);
    if (!(claimMs > 0)) return { bell };
    const owner = String(row.owner);
    const fence = takeKey(key, owner, now, now + claimMs);
    served.run(key, owner, now);
    return { bell, handoff: { owner, fence, ttlMs: claimMs } };
  };

  return {
    /**
     * Whether a read outside any transaction already shows that `owner` would be refused and
     * has nothing to write: the key is another's or another waiter's turn, and the caller either
     * does not wait or has a place with more than half its term left (waiters renew at least
     * once a second) and its bell as now. Polling waiters then cost no write lock, which every
     * other connection would have to wait for. The answer is as of the read: the key was held.
     */
    refusedAtAGlance(key: string, owner: string, now: number, wait?: Waiting): boolean {
      const row = glance.get(key, now, key, now, key, now, key, owner, key, owner);
      if (row === undefined) return false;
      const other = (name: unknown) => name !== null && name !== owner;
      if (!other(row.holder) && !(row.holder === null && other(row.first))) return false;
      if (wait === undefined) return true;
      if (row.held_until !== null) wait.heldUntil?.(Number(row.held_until));
      if (row.until === null || Number(row.until) - now < wait.lineMs / 2) return false;
      if ((row.bell === null ? undefined : Number(row.bell)) !== wait.bell) return false;
      wait.refused?.(BigInt(String(row.counter)));
      return true;
    },

    /**
     * Whether `owner` may take the free `key`: nobody is in line, or the first live place is its
     * own. When it may, its place and the ones that ran out go.
     */
    mayTake(key: string, owner: string, now: number): boolean {
      const rows = places.all(key);
      if (rows.length === 0) return true;
      const live = rows.find((row) => Number(row.expires_at) > now);
      if (live !== undefined && live.owner !== owner) return false;
      served.run(key, owner, now);
      return true;
    },

    /**
     * Join the line, or keep the place held and push its end to `lineMs` from now; a key handed
     * over to the place is a lease of its claim, the caller's `ttlMs` up to `lineMs`. The caller
     * is refused: it is told so, with the fence counter.
     */
    join(key: string, owner: string, now: number, wait: Waiting, ttlMs: number): void {
      const until = Math.ceil(now + wait.lineMs);
      const ring = wait.bell ?? null;
      const claim = Math.max(1, Math.ceil(Math.min(wait.lineMs, ttlMs)));
      let at: bigint;
      if (Number(renew.run(until, ring, claim, key, owner, now).changes) > 0) {
        at = BigInt(String(counter.get()?.value));
      } else {
        // A new place's order is the counter's next value: the counter as the refusal read it.
        at = BigInt(String(nextSeq.get(BigInt(Math.floor(now)) * 1000n)?.value));
        join.run(key, owner, claim, until, ring, at);
      }
      wait.refused?.(at);
    },

    /** The key is free: the first live place takes it, or is told (see `handOff`). */
    next: handOff,

    /** Leave the line; whether `owner` had a place. */
    leave(key: string, owner: string): boolean {
      return Number(leave.run(key, owner).changes) > 0;
    },

    /**
     * `owner`, who does not hold `key`, leaves its line (a waiter giving up): when it had a place
     * and the key is free, the first live place now takes it or is told.
     */
    left(key: string, owner: string, now: number): NextInLine | undefined {
      if (Number(leave.run(key, owner).changes) === 0) return undefined;
      return held.get(key, now) === undefined ? handOff(key, now) : undefined;
    },

    sweep(now: number): void {
      sweep.run(now);
    },
  };
}

export type Line = ReturnType<typeof prepareLine>;
