/**
 * The Redis keys of one lock, layout version 2. All of them share one hash tag, so that a
 * script touching them runs on one Cluster slot, and none outlives its lease or its line.
 *
 * The tag is the lock's key with `%`, `{` and `}` percent-encoded, and lone UTF-16 surrogates
 * written as `%uXXXX`: a key's own braces can then never end the tag early, and two different
 * keys never map to the same names (UTF-8 would turn every lone surrogate into U+FFFD).
 */
export interface LockKeys {
  /**
   * The lease: a string `2/<fence>:<owner>` with the lease as its expiry (`2/<fence>*:<owner>`
   * while waiters are in line). The `2/` is the layout version; the first release wrote
   * `<fence>:<owner>` under the same name, so the two exclude each other.
   */
  lease: string;
  /**
   * The first release's fence counter, which outlived every lease. Nothing reads or writes it
   * now; the README says how to delete the ones left behind.
   */
  fence: string;
  /** The waiters in order of arrival (a sorted set scored by arrival time), gone with them. */
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
    line: `${lease}:v2:line`,
    waiters: `${lease}:v2:waiters`,
    channel: lease,
  };
}
