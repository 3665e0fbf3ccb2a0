import type { AcquiredKeys } from 'cachelock';
import { acquireSql, acquireValues } from './acquire.js';
import { micros } from './clock.js';
import type { Db } from './connection.js';
import { extendSql } from './extend.js';
import { keyId, ownerBytes, type TableName } from './names.js';

/** The keys by their ids, ascending, each with its place in the caller's order. */
function byId(keys: readonly string[]): { key: string; id: Buffer; at: number }[] {
  return keys
    .map((key, at) => ({ key, id: keyId(key), at }))
    .sort((a, b) => Buffer.compare(a.id, b.id));
}

/** Thrown inside a transaction to roll it back: one key of the set refused. */
class Refused extends Error {
  constructor(readonly index: number) {
    super('refused');
  }
}

/**
 * Several exclusive keys in one transaction, each by the single-key statement: all commit or
 * none. Rows are locked in ascending id order, so two overlapping sets never wait for each
 * other in a circle; a single-key statement locks one row only.
 */
export function prepareManyAcquire(db: Db, table: TableName) {
  const sql = acquireSql(table);
  /** Resolves the fences in the keys' order, or the index of a key that refused. */
  return async (
    keys: readonly string[],
    owner: string,
    ttlMs: number,
  ): Promise<AcquiredKeys | { refused: number }> => {
    const who = ownerBytes(owner);
    const sorted = byId(keys);
    const us = micros(ttlMs);
    try {
      return await db.transact(async (query) => {
        const fences: bigint[] = new Array(keys.length);
        for (const { key, id, at } of sorted) {
          const result = await query.change(sql, acquireValues(id, key, who, us));
          if (result.insertId <= 0n) throw new Refused(at);
          fences[at] = result.insertId;
        }
        return { fences };
      });
    } catch (error) {
      if (error instanceof Refused) return { refused: error.index };
      throw error;
    }
  };
}

/** Extend every key or none, in one transaction. */
export function prepareManyExtend(db: Db, table: TableName) {
  const sql = extendSql(table);
  return async (keys: readonly string[], owner: string, ttlMs: number): Promise<boolean> => {
    const who = ownerBytes(owner);
    const us = micros(ttlMs);
    try {
      return await db.transact(async (query) => {
        for (const { id, at } of byId(keys)) {
          if ((await query.change(sql, [us, id, who])).insertId !== 1n) throw new Refused(at);
        }
        return true;
      });
    } catch (error) {
      if (error instanceof Refused) return false;
      throw error;
    }
  };
}
