import type { Acquired } from 'cachelock';
import { micros, NOW_US } from './clock.js';
import type { Db } from './connection.js';
import { keyId, keyLabel, ownerBytes, type TableName } from './names.js';

// One statement: insert the key, or take over its row if the lease has run out by the server's
// clock. The duplicate-key path locks the row and reads its latest version, so of concurrent
// attempts only one can win. Assignments run left to right, each seeing the ones before:
// `fence` and `owner` are judged on the old lease, `expires_us` once `owner` is settled.
// LAST_INSERT_ID(expr) reports the outcome in the statement's own reply, whatever the client's
// FOUND_ROWS setting: the new or kept fence when the owner holds the key, 0 when it is refused.
// A fresh key's fence is the clock; a taken-over one rises above its last fence even if the
// clock stood still or stepped back.
export const acquireSql = (table: TableName) => `
  INSERT INTO ${table.sql} (id, \`key\`, owner, expires_us, fence)
  VALUES (?, CONVERT(? USING utf8mb4), ?, ${NOW_US} + ?, LAST_INSERT_ID(${NOW_US}))
  ON DUPLICATE KEY UPDATE
    fence = IF(expires_us <= ${NOW_US}, LAST_INSERT_ID(GREATEST(fence + 1, ${NOW_US})),
               IF(owner = VALUES(owner), LAST_INSERT_ID(fence), fence + LAST_INSERT_ID(0))),
    owner = IF(expires_us <= ${NOW_US}, VALUES(owner), owner),
    expires_us = IF(owner = VALUES(owner), VALUES(expires_us), expires_us)`;

export function prepareAcquire(db: Db, table: TableName) {
  const sql = acquireSql(table);
  return async (key: string, owner: string, ttlMs: number): Promise<Acquired | null> => {
    const id = keyId(key);
    const result = await db.change(sql, [id, keyLabel(key), ownerBytes(owner), micros(ttlMs)]);
    return result.insertId > 0n ? { fence: result.insertId } : null;
  };
}
