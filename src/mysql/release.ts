import { micros, NOW_US } from './clock.js';
import type { Db } from './connection.js';
import { keyId, ownerBytes, type TableName } from './names.js';

// Compare-and-delete, by the server's clock. A row is deleted only once the clock has passed
// its fence, so that a fresh acquisition (whose fence is the clock) rises above it; a fence
// ahead of the clock (takeovers within one microsecond) is only possible after a takeover, and
// then the row is expired instead and a sweep deletes it later.
const releaseSql = (table: TableName) => `
  DELETE FROM ${table.sql}
  WHERE id = ? AND owner = ? AND expires_us > ${NOW_US} AND fence < ${NOW_US}`;

// The rare paths after the DELETE found nothing: the owner holds a row with a fence ahead of
// the clock (expire it now), or the owner's lease ran out (delete what is left of it).
const expireSql = (table: TableName) => `
  UPDATE ${table.sql}
  SET expires_us = ${NOW_US} + 0 * LAST_INSERT_ID(1)
  WHERE id = ? AND owner = ? AND expires_us > ${NOW_US}`;
const leftoverSql = (table: TableName) => `
  DELETE FROM ${table.sql} WHERE id = ? AND owner = ? AND fence < ${NOW_US}`;

// holdAtLeast: shorten the lease to keepMs, never lengthen it; the key stays taken.
const keepSql = (table: TableName) => `
  UPDATE ${table.sql}
  SET expires_us = LEAST(expires_us, ${NOW_US} + ?) + 0 * LAST_INSERT_ID(1)
  WHERE id = ? AND owner = ? AND expires_us > ${NOW_US}`;

export function prepareRelease(db: Db, table: TableName) {
  const release = releaseSql(table);
  const expire = expireSql(table);
  const leftover = leftoverSql(table);
  const keep = keepSql(table);
  return async (key: string, owner: string, keepMs = 0): Promise<boolean> => {
    const id = keyId(key);
    const who = ownerBytes(owner);
    if (keepMs > 0) {
      const result = await db.change(keep, [micros(keepMs), id, who]);
      return result.insertId === 1n;
    }
    if ((await db.change(release, [id, who])).affectedRows > 0) return true;
    if ((await db.change(expire, [id, who])).insertId === 1n) return true;
    await db.change(leftover, [id, who]);
    return false;
  };
}
