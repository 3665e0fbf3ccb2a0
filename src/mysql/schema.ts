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

// Permits and readers/writers, one row per owner of a key (`kind` 1: a lease, 2: a place in
// line) and the key's own row (`kind` 0, owner ''). Every statement on a key first locks its
// key row, so operations on one key run one at a time across pools and processes. The key
// row's `seq` is the last number handed out on the key (places, leases and their fences take
// the next one: at least the server clock, above the last), its `fence` the last fence of an
// acquisition that did not share (for readers), its `expires_us` the longest term granted on
// the key: it goes with the last of them and is only deleted once the clock has passed `seq`,
// so numbers rise per key although rows come and go.
const createSharedSql = (table: TableName) => `
  CREATE TABLE IF NOT EXISTS ${table.shared.sql} (
    id BINARY(32) NOT NULL,
    owner VARBINARY(1024) NOT NULL,
    kind TINYINT NOT NULL,
    weight INT NOT NULL,
    seq BIGINT NOT NULL,
    fence BIGINT NULL,
    expires_us BIGINT NOT NULL,
    \`key\` MEDIUMTEXT CHARACTER SET utf8mb4 NOT NULL,
    PRIMARY KEY (id, owner),
    KEY ${table.shared.index} (expires_us)
  ) ENGINE=InnoDB`;

/** Create the shared table if it is missing. */
export async function createSharedTable(db: Db, table: TableName): Promise<void> {
  await db.change(createSharedSql(table), []);
}
