import { createHash } from 'node:crypto';

const IDENTIFIER = /^[A-Za-z_][A-Za-z0-9_]{0,62}$/;

function identifier(option: string, value: unknown): string {
  if (typeof value !== 'string' || !IDENTIFIER.test(value)) {
    throw new TypeError(
      `cachelock/postgres: ${option} must be an identifier (a letter or _, then letters, digits, _; at most 63), got ${JSON.stringify(value)}`,
    );
  }
  return value;
}

/** Where the store keeps its leases, validated once and quoted for SQL text. */
export interface TableName {
  /** `"schema"."table"` or `"table"` (then the connection's search_path decides). */
  sql: string;
  /** A name for prepared statements, unique per table. */
  tag: string;
  /** The NOTIFY channel releases are announced on. */
  channel: string;
  /** The index on expiry that sweeps use: its bare name, and qualified as text for to_regclass. */
  index: { name: string; qualified: string };
  /** The table of permits and of readers and writers (see schema.ts) and its index. */
  shared: { sql: string; index: { name: string; qualified: string } };
  /** The table of waiters' places in the keys' lines (see schema.ts). */
  line: { sql: string };
}

export function tableName(table: unknown, schema: unknown): TableName {
  const name = identifier('table', table);
  const space = schema === undefined ? undefined : identifier('schema', schema);
  const qualified = space === undefined ? name : `${space}.${name}`;
  const tag = createHash('sha256').update(qualified).digest('hex').slice(0, 12);
  // A channel name is at most 63 bytes: long qualified names fall back to their hash.
  const readable = `cachelock:${qualified}`;
  // `<table>_expires_at`, so that an operator can create it ahead of an upgrade; by the hash when
  // that would pass PostgreSQL's 63-byte limit (it would be cut short, maybe to the table's name).
  const readableIndex = `${name}_expires_at`;
  const index = readableIndex.length <= 63 ? readableIndex : `cachelock_expiry_${tag}`;
  const quote = (bare: string) => (space === undefined ? `"${bare}"` : `"${space}"."${bare}"`);
  // `<table>_shared` beside the leases table, or by the hash past the 63-byte limit.
  const sharedName = name.length + 7 <= 63 ? `${name}_shared` : `cachelock_shared_${tag}`;
  const sharedIndex =
    sharedName.length + 11 <= 63 ? `${sharedName}_expires_at` : `cachelock_shared_expiry_${tag}`;
  // `<table>_line` likewise.
  const lineName = name.length + 5 <= 63 ? `${name}_line` : `cachelock_line_${tag}`;
  return {
    sql: quote(name),
    tag,
    channel: readable.length <= 63 ? readable : `cachelock:${tag}`,
    index: { name: index, qualified: space === undefined ? `"${index}"` : `"${space}"."${index}"` },
    shared: {
      sql: quote(sharedName),
      index: { name: sharedIndex, qualified: quote(sharedIndex) },
    },
    line: { sql: quote(lineName) },
  };
}

/**
 * A key's identity in the table: the SHA-256 of its UTF-16 code units. Keys of any length and
 * content (10 kB, NUL, lone surrogates) then fit a fixed-size primary key, which a B-tree on
 * `text` would not (its entries stop near 2.7 kB, and text cannot hold NUL).
 */
export function keyId(key: string): Buffer {
  return createHash('sha256').update(key, 'utf16le').digest();
}

/** The key as stored beside its id for people reading the table: NUL shown as U+FFFD. */
export function keyLabel(key: string): string {
  return key.includes('\0') ? key.replaceAll('\0', '\uFFFD') : key;
}

/** The two namespaces of shared leases: a semaphore's `'a'` is not the read/write lock `'a'`. */
export type SharedSpace = 'permits' | 'rw';

/** A shared key's identity: its namespace and the key, hashed as `keyId` does. */
export function sharedKeyId(space: SharedSpace, key: string): Buffer {
  return createHash('sha256').update(`${space}\0`, 'utf16le').update(key, 'utf16le').digest();
}

/**
 * The transaction-scoped advisory lock that serialises the acquisitions of one key (a lease's
 * `keyId` or a shared key's `sharedKeyId`): 64 bits of the table's tag and the key's id, so that
 * two tables (or other programs' advisory locks) rarely meet, and a collision only makes two keys
 * wait for each other briefly. Fences are drawn only while it is held: an acquisition that waits
 * (for a row, a lock, a busy server) draws its fence after the wait, never before it, so a later
 * grant of the key cannot carry a lower fence than an earlier one.
 */
export function keyLockId(table: TableName, id: Buffer): bigint {
  return createHash('sha256').update(table.tag).update(id).digest().readBigInt64BE(0);
}
