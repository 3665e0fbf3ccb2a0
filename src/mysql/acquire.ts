import type { Acquired } from 'cachelock';
import { micros, NOW_US } from './clock.js';
import type { Db } from './connection.js';
import { keyId, keyLabel, ownerBytes, type TableName } from './names.js';

// The server's clock in microseconds as the expression is evaluated, where NOW_US is the time
// the statement began: that plus the time elapsed since, by SYSDATE (which a server started with
// --sysdate-is-now reads as the statement's time too). Never below NOW_US should the session's
// local time step back in between; a step forward only puts a fence ahead of the clock, which
// release.ts allows for.
const CALLED_US = `${NOW_US} + GREATEST(0, TIMESTAMPDIFF(MICROSECOND, NOW(6), SYSDATE(6)))`;

// One statement: insert the key, or take over its row if the lease has run out by the server's
// clock. The duplicate-key path locks the row and reads its latest version, so of concurrent
// attempts only one can win. Assignments run left to right, each seeing the ones before:
// `fence` and `owner` are judged on the old lease, `expires_us` once `owner` is settled.
// LAST_INSERT_ID(expr) reports the outcome in the statement's own reply, whatever the client's
// FOUND_ROWS setting: the new or kept fence when the owner holds the key, 0 when it is refused.
// A taken-over key's fence rises above its last fence even if the clock stood still or stepped
// back.
//
// A fresh key's fence is the clock once its row is in the index, not as the statement began.
// The statement's time and its VALUES are fixed before it waits (for the table, a row lock, the
// CPU), and meanwhile another owner may take the key and release it with a later fence; a fresh
// row reaches the index only after that release's DELETE committed, which required the clock to
// have passed the released fence. So the first row of VALUES inserts a fence of 0, which no lease
// has; the second, the same key again, always meets that row and turns the 0 into the clock of
// that moment. On the other paths it meets the first row's result and keeps it (the owner holds
// the key, or is refused again).
export const acquireSql = (table: TableName) => `
  INSERT INTO ${table.sql} (id, \`key\`, owner, expires_us, fence)
  VALUES (?, CONVERT(? USING utf8mb4), ?, ${NOW_US} + ?, 0), (?, '', ?, ${NOW_US} + ?, 0)
  ON DUPLICATE KEY UPDATE
    fence = IF(fence = 0, LAST_INSERT_ID(${CALLED_US}),
            IF(expires_us <= ${NOW_US}, LAST_INSERT_ID(GREATEST(fence + 1, ${NOW_US})),
               IF(owner = VALUES(owner), LAST_INSERT_ID(fence), fence + LAST_INSERT_ID(0)))),
    owner = IF(expires_us <= ${NOW_US}, VALUES(owner), owner),
    expires_us = IF(owner = VALUES(owner), VALUES(expires_us), expires_us)`;

/**
 * The values of `acquireSql`: the key by its id (names.ts), the owner, the lease in µs. The second
 * row never inserts, so it leaves the key's text out.
 */
export function acquireValues(id: Buffer, key: string, owner: Buffer, us: number): unknown[] {
  return [id, keyLabel(key), owner, us, id, owner, us];
}

export function prepareAcquire(db: Db, table: TableName) {
  const sql = acquireSql(table);
  return async (key: string, owner: string, ttlMs: number): Promise<Acquired | null> => {
    const values = acquireValues(keyId(key), key, ownerBytes(owner), micros(ttlMs));
    const result = await db.change(sql, values);
    return result.insertId > 0n ? { fence: result.insertId } : null;
  };
}
