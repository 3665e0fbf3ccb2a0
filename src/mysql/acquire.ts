import type { Acquired } from 'cachelock';
import { micros, NOW_US } from './clock.js';
import type { Db } from './connection.js';
import { keyId, keyLabel, ownerBytes, type TableName } from './names.js';

// The server's clock in microseconds as this expression is evaluated, not as the statement
// began: the statement's time plus what has elapsed since, by SYSDATE (never less than the
// statement's time, should the session's time zone step back in between).
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
// A fresh key's fence is the clock, read only once its row is in the index. A row is deleted
// once the clock has passed its fence (release.ts, sweep.ts), and a fresh row reaches the index
// only after that deletion committed; but the statement's own time, and its VALUES, are fixed
// before it waits for the table, for a row lock or for the CPU, and meanwhile another owner may
// have taken the key and let it go with a later fence. So the first row of VALUES inserts a
// fence of 0, which no lease has, and the second row, the same key again, always meets that row
// and turns the 0 into the clock of that moment; the other paths meet their own result again and
// keep it (the owner already holds the key, or is refused again).
export const acquireSql = (table: TableName) => `
  INSERT INTO ${table.sql} (id, \`key\`, owner, expires_us, fence)
  VALUES (?, CONVERT(? USING utf8mb4), ?, ${NOW_US} + ?, 0), (?, '', ?, ${NOW_US} + ?, 0)
  ON DUPLICATE KEY UPDATE
    fence = IF(fence = 0, LAST_INSERT_ID(${CALLED_US}),
            IF(expires_us <= ${NOW_US}, LAST_INSERT_ID(GREATEST(fence + 1, ${NOW_US})),
               IF(owner = VALUES(owner), LAST_INSERT_ID(fence), fence + LAST_INSERT_ID(0)))),
    owner = IF(expires_us <= ${NOW_US}, VALUES(owner), owner),
    expires_us = IF(owner = VALUES(owner), VALUES(expires_us), expires_us)`;

/** The values of `acquireSql`: the key by its id (names.ts), the owner, the lease in µs. */
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
