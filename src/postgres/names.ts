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
  return {
    sql: space === undefined ? `"${name}"` : `"${space}"."${name}"`,
    tag,
    channel: readable.length <= 63 ? readable : `cachelock:${tag}`,
    index: { name: index, qualified: space === undefined ? `"${index}"` : `"${space}"."${index}"` },
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
