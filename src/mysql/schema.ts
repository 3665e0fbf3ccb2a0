import type { Db } from './connection.js';
import type { TableName } from './names.js';

// `id` is the key's hash (see names.ts) and `key` the key itself, for people reading the table.
// Times are microseconds since the epoch by the server's clock. A fence is that clock when the
// key is taken fresh, else one above the row's last fence (acquire.ts), so fences rise per key
// although rows are deleted: a row is only deleted once the clock has passed its fence
// (release.ts, sweep.ts). `owner` is binary so that owners compare byte for byte (not a BLOB:
// MariaDB's ON DUPLICATE KEY UPDATE misjudges a BLOB compared after it was assigned).
const createSql = (table: TableName) => `
  CREATE TABLE IF NOT EXISTS ${table.sql} (
    id BINARY(32) NOT NULL PRIMARY KEY,
    \`key\` MEDIUMTEXT CHARACTER SET utf8mb4 NOT NULL,
    owner VARBINARY(1024) NOT NULL,
    expires_us BIGINT NOT NULL,
    fence BIGINT NOT NULL,
    KEY ${table.index} (expires_us)
  ) ENGINE=InnoDB`;

/** Create the table if it is missing: idempotent and safe when many processes start at once. */
export async function createTable(db: Db, table: TableName): Promise<void> {
  await db.change(createSql(table), []);
}

/** The table was dropped under the store (ER_NO_SUCH_TABLE): create it again on the next call. */
export function isMissingTable(error: unknown): boolean {
  const e = error as { errno?: number; code?: string } | null;
  return e?.errno === 1146 || e?.code === 'ER_NO_SUCH_TABLE';
}
