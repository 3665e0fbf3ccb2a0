import { micros, NOW_US } from './clock.js';
import type { Db } from './connection.js';
import { keyId, ownerBytes, type TableName } from './names.js';

// Compare-and-expire by the server's clock: a lease that has run out cannot be extended.
// LAST_INSERT_ID(1) marks a matched row even where the client counts changed rows only.
export const extendSql = (table: TableName) => `
  UPDATE ${table.sql}
  SET expires_us = ${NOW_US} + ? + 0 * LAST_INSERT_ID(1)
  WHERE id = ? AND owner = ? AND expires_us > ${NOW_US}`;

export function prepareExtend(db: Db, table: TableName) {
  const sql = extendSql(table);
  return async (key: string, owner: string, ttlMs: number): Promise<boolean> => {
    const result = await db.change(sql, [micros(ttlMs), keyId(key), ownerBytes(owner)]);
    return result.insertId === 1n;
  };
}
