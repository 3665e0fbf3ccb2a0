import { createHash } from 'node:crypto';

const IDENTIFIER = /^[A-Za-z_][A-Za-z0-9_]{0,63}$/;

function identifier(option: string, value: unknown): string {
  if (typeof value !== 'string' || !IDENTIFIER.test(value)) {
    throw new TypeError(
      `cachelock/mysql: ${option} must be an identifier (a letter or _, then letters, digits, _; at most 64), got ${JSON.stringify(value)}`,
    );
  }
  return value;
}

/** Where the store keeps its leases, validated once and quoted for SQL text. */
export interface TableName {
  /** `` `database`.`table` `` or `` `table` `` (then the connection's database decides). */
  sql: string;
  /** Tells this table's named locks from another table's: the same key in two tables is two locks. */
  tag: string;
  /** The index on expiry that sweeps use. */
  index: string;
  /** The table of permits and of readers and writers, beside it (`<table>_shared`). */
  shared: { sql: string; index: string };
}

export function tableName(table: unknown, database: unknown): TableName {
  const name = identifier('table', table);
  const space = database === undefined ? undefined : identifier('database', database);
  const qualified = space === undefined ? name : `${space}.${name}`;
  // Within the 64 characters of an identifier, whatever the leases table is called.
  const shared = `${name.slice(0, 57)}_shared`;
  return {
    sql: space === undefined ? `\`${name}\`` : `\`${space}\`.\`${name}\``,
    tag: createHash('sha256').update(qualified).digest('base64url').slice(0, 8),
    index: `\`${name.slice(0, 53)}_expires_us\``,
    shared: {
      sql: space === undefined ? `\`${shared}\`` : `\`${space}\`.\`${shared}\``,
      index: `\`${shared.slice(0, 53)}_expires_us\``,
    },
  };
}

/**
 * A key's identity in the table: the SHA-256 of its UTF-16 code units, so that keys of any
 * length and content (10 kB, NUL, lone surrogates) fit a fixed-size primary key.
 */
export function keyId(key: string): Buffer {
  return createHash('sha256').update(key, 'utf16le').digest();
}

/** Where shared leases live: a semaphore's `'a'` and a read/write lock's `'a'` are apart. */
export type SharedSpace = 'permits' | 'rw';

/** A shared key's identity in the shared table: its space and the key, hashed as `keyId`. */
export function sharedKeyId(space: SharedSpace, key: string): Buffer {
  return createHash('sha256').update(`${space}\0`, 'utf16le').update(key, 'utf16le').digest();
}

/**
 * The key as stored beside its id for people reading the table, as UTF-8 bytes that the
 * statement converts (the connection's character set may not hold every character).
 */
export function keyLabel(key: string): Buffer {
  return Buffer.from(key, 'utf8');
}

/**
 * The name of the key's wake-up lock (GET_LOCK): at most 64 characters on both servers. The
 * table's tag keeps two tables apart; 128 bits of the key's id keep keys apart.
 */
export function lockName(table: TableName, id: Buffer): string {
  return `cachelock:${table.tag}:${id.subarray(0, 16).toString('base64url')}`;
}

/**
 * The wake-up lock of one lease or one place in line on a shared key (`id` from `sharedKeyId`):
 * each has its own, since owners in several processes may hold one key at once.
 */
export function rowLockName(
  table: TableName,
  id: Buffer,
  row: 'lease' | 'place',
  owner: Buffer,
): string {
  return lockName(
    table,
    createHash('sha256').update(id).update(`\0${row}\0`).update(owner).digest(),
  );
}

/** The most bytes an owner may have (the width of its column). */
export const MAX_OWNER_BYTES = 1024;

/** The owner as the bytes the table compares, refused rather than cut short when too long. */
export function ownerBytes(owner: string): Buffer {
  const bytes = Buffer.from(owner, 'utf8');
  if (bytes.length > MAX_OWNER_BYTES) {
    throw new RangeError(
      `cachelock/mysql: owner must be at most ${MAX_OWNER_BYTES} bytes in UTF-8, got ${bytes.length}`,
    );
  }
  return bytes;
}
