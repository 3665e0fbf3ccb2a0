import { createHash } from 'node:crypto';

/** Memcached's limit on a key, in bytes. */
const MAX_KEY_BYTES = 250;
// The first release kept a fence counter beside each lease under this suffix. No version reads
// it now, but the room for it stays in the length rule, so that every version maps a key to the
// same lease item and old and new stores exclude each other during an upgrade.
const FENCE_SUFFIX = '#fence';
/** Keys that fit this pass through as they are: printable ASCII, no space, no `#`. */
const PLAIN = /^[\x21-\x22\x24-\x7e]+$/;
const READABLE_PREFIX_CHARS = 100;

/**
 * Where one lock lives in memcached: its lease item, and the name under which the first release
 * kept that lock's fence counter (never written now; named so that it can be cleaned up).
 */
export interface MemcachedKeys {
  lease: string;
  fence: string;
  /** The line of waiters for the lock (see line.ts): the lease key plus `#line`. */
  line: string;
}

/**
 * Memcached keys for a lock key. A key that is printable ASCII without spaces or `#` and short
 * enough is kept as it is; any other (long, spaces, control characters, non-ASCII, `#`) becomes
 * a readable prefix, `#` and its sha256 in base64url. Plain keys never contain `#` and a hashed
 * key contains exactly one, followed by 43 characters, so the forms cannot collide with each
 * other or with a fence key (the lease key plus `#fence`).
 */
export function memcachedKeys(key: string): MemcachedKeys {
  const lease =
    PLAIN.test(key) && key.length + FENCE_SUFFIX.length <= MAX_KEY_BYTES ? key : hashedKey(key);
  // `#line` is shorter than `#fence`, so it fits wherever the fence key did; it ends in a suffix
  // after a `#`, which no lease key does, so it cannot name another lock's lease.
  return { lease, fence: lease + FENCE_SUFFIX, line: `${lease}#line` };
}

function hashedKey(key: string): string {
  const readable = key.slice(0, READABLE_PREFIX_CHARS).replace(/[^\x21-\x22\x24-\x7e]/g, '_');
  // UTF-16 code units, not UTF-8: UTF-8 would turn every lone surrogate into the same U+FFFD.
  const digest = createHash('sha256').update(key, 'utf16le').digest('base64url');
  return `${readable}#${digest}`;
}
