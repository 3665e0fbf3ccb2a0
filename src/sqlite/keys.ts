import type { AcquiredKeys } from 'cachelock';
import type { SqliteDatabase } from './driver.js';
import { type NextInLine, prepareLine, prepareTake } from './line.js';
import { immediate, type Tables } from './schema.js';

// Several keys of the exclusive table, all or none, each call one `BEGIN IMMEDIATE` transaction:
// the file's write lock serialises them with every other acquisition, so no order is needed to
// avoid deadlocks. The statements are acquire.ts's, release.ts's and extend.ts's, for each key.

export function prepareKeysAcquire(db: SqliteDatabase, tables: Tables) {
  const { leases } = tables;
  const transaction = immediate(db);
  const line = prepareLine(db, tables);
  const take = prepareTake(db, tables);
  const read = db.prepare(`SELECT owner, expires_at FROM ${leases} WHERE key = ?`);
  const refresh = db.prepare(
    `UPDATE ${leases} SET expires_at = ? WHERE key = ? RETURNING CAST(fence AS TEXT) AS fence`,
  );
  return (keys: readonly string[], owner: string, ttlMs: number): AcquiredKeys | null =>
    transaction(() => {
      const now = Date.now();
      const expiresAt = Math.ceil(now + ttlMs);
      const unique = [...new Set(keys)];
      const current = unique.map((key) => read.get(key));
      const refused = current.some(
        (row) => row !== undefined && Number(row.expires_at) > now && row.owner !== owner,
      );
      if (refused) return null;
      // A free key whose line has someone else first goes to that waiter, as for one key.
      const free = unique.filter((_, i) => !(Number(current[i]?.expires_at) > now));
      if (!free.every((key) => line.mayTake(key, owner, now))) return null;
      const fences = new Map<string, bigint>();
      unique.forEach((key, i) => {
        const row = current[i];
        fences.set(
          key,
          row && Number(row.expires_at) > now
            ? BigInt(String(refresh.get(expiresAt, key)?.fence))
            : take(key, owner, now, expiresAt),
        );
      });
      return { fences: keys.map((key) => fences.get(key)) };
    });
}

export function prepareKeysRelease(db: SqliteDatabase, tables: Tables) {
  const { leases } = tables;
  const transaction = immediate(db);
  const line = prepareLine(db, tables);
  const remove = db.prepare(
    `DELETE FROM ${leases} WHERE key = ? AND owner = ? RETURNING expires_at`,
  );
  const keep = db.prepare(
    `UPDATE ${leases} SET expires_at = min(expires_at, ?)
     WHERE key = ? AND owner = ? AND expires_at > ?`,
  );
  /**
   * Whether `owner` held every key, and the first waiter of each key it freed. A key it did not
   * hold it leaves the line of, as a single release does (a waiting set gives up, or goes on as
   * a new owner): its place would hold the key up for everyone else until it ran out.
   */
  return (
    keys: readonly string[],
    owner: string,
    keepMs = 0,
  ): { held: boolean; next: [string, NextInLine][] } =>
    transaction(() => {
      const now = Date.now();
      const unique = [...new Set(keys)];
      let held = 0;
      const next: [string, NextInLine][] = [];
      for (const key of unique) {
        if (keepMs > 0) {
          held += Number(keep.run(Math.ceil(now + keepMs), key, owner, now).changes);
        } else {
          const row = remove.get(key, owner);
          if (row !== undefined && Number(row.expires_at) > now) held++;
          // Freed (past any place of its own), or it left the line of a free key: the first
          // waiter now takes it, or is told.
          if (row !== undefined) line.leave(key, owner);
          const first = row !== undefined ? line.next(key, now) : line.left(key, owner, now);
          if (first !== undefined) next.push([key, first]);
        }
      }
      return { held: held === unique.length, next };
    });
}

export function prepareKeysExtend(db: SqliteDatabase, { leases }: Tables) {
  const transaction = immediate(db);
  const holds = db.prepare(
    `SELECT 1 AS held FROM ${leases} WHERE key = ? AND owner = ? AND expires_at > ?`,
  );
  const extend = db.prepare(`UPDATE ${leases} SET expires_at = ? WHERE key = ? AND owner = ?`);
  return (keys: readonly string[], owner: string, ttlMs: number): boolean =>
    transaction(() => {
      const now = Date.now();
      const unique = [...new Set(keys)];
      if (!unique.every((key) => holds.get(key, owner, now) !== undefined)) return false;
      for (const key of unique) extend.run(Math.ceil(now + ttlMs), key, owner);
      return true;
    });
}
