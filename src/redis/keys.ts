/**
 * The Redis keys of one lock. All of them share one hash tag, so that a script touching them
 * runs on one Cluster slot.
 *
 * The tag is the lock's key with `%`, `{` and `}` percent-encoded, and lone UTF-16 surrogates
 * written as `%uXXXX`: a key's own braces can then never end the tag early, and two different
 * keys never map to the same names (UTF-8 would turn every lone surrogate into U+FFFD).
 */
export interface LockKeys {
  /** The lease: a string `<fence>:<owner>` with the lease as its expiry. */
  lease: string;
  /** The fence counter. It outlives the lease, so that fences keep increasing. */
  fence: string;
  /** The waiters in order of arrival (a sorted set scored by arrival time). */
  line: string;
  /** Each waiter's deadline and claim lease (a hash `owner -> <deadlineMs>:<claimMs>`). */
  waiters: string;
  /** The pub/sub channel that announces releases and hand-offs. */
  channel: string;
}

const ESCAPES: Record<string, string> = { '%': '%25', '{': '%7B', '}': '%7D' };

export function encodeTag(key: string): string {
  // An empty tag (`{}`) would make Redis hash the whole name, splitting the slot; a lone `%`
  // is never produced by the escaping, so it cannot collide.
  if (key === '') return '%';
  return key.replace(
    /[%{}]|[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/g,
    (c) => ESCAPES[c] ?? `%u${c.charCodeAt(0).toString(16).toUpperCase()}`,
  );
}

/** The lease's name, which is also the channel and the stem the scripts derive the rest from. */
export function leaseKey(key: string): string {
  return `{${encodeTag(key)}}`;
}

export function lockKeys(key: string): LockKeys {
  const lease = leaseKey(key);
  return {
    lease,
    fence: `${lease}:fence`,
    line: `${lease}:line`,
    waiters: `${lease}:waiters`,
    channel: lease,
  };
}
