import { randomBytes } from 'node:crypto';

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
  /**
   * Where to tell each waiter that the key is its own (a hash `owner -> <wake channel>`, the
   * channel of the waiter's store), gone with the line. A waiter with no entry (one of an older
   * version) is told on `channel`.
   */
  wake: string;
  /** The pub/sub channel that announces releases and hand-offs. */
  channel: string;
}

/** What a tag escapes: `%`, `{`, `}`, and UTF-16 surrogates (a lone one; pairs stay). */
const ESCAPED = /[%{}\ud800-\udfff]/;

export function encodeTag(key: string): string {
  // An empty tag (`{}`) would make Redis hash the whole name, splitting the slot; a lone `%`
  // is never produced by the escaping, so it cannot collide.
  if (key === '') return '%';
  // This runs for every operation, and most keys need nothing: the pattern's one native scan
  // tells them. A loop over such a key costs more, its loads going megamorphic over the many
  // kinds of string V8 makes (flat, concatenated, sliced).
  if (!ESCAPED.test(key)) return key;
  let out = '';
  let from = 0;
  for (let i = 0; i < key.length; i++) {
    const c = key.charCodeAt(i);
    let escaped: string;
    if (c === 0x25) escaped = '%25';
    else if (c === 0x7b) escaped = '%7B';
    else if (c === 0x7d) escaped = '%7D';
    else if (c < 0xd800 || c > 0xdfff) continue;
    else if (c <= 0xdbff && i + 1 < key.length && isLow(key.charCodeAt(i + 1))) {
      i++; // a surrogate pair: one character, kept as it is
      continue;
    } else escaped = `%u${c.toString(16).toUpperCase()}`;
    out += key.slice(from, i) + escaped;
    from = i + 1;
  }
  return from === 0 ? key : out + key.slice(from);
}

function isLow(c: number): boolean {
  return c >= 0xdc00 && c <= 0xdfff;
}

/**
 * The lease's name, which is also the channel and the stem the scripts derive the rest from:
 * `{k}` with `k` encoded, preceded by `{t}` when `k` has a Redis hash tag `t` of its own (as
 * Redis reads one: the first `{` and the first `}` after it, not empty), so that the keys a
 * user tags alike (`'{acct}:1'`, `'{acct}:2'`) share a Cluster slot, alone or together. `t`
 * has no `}`, so the name's tag is exactly `t`; the encoded `k` after the last `{` keeps
 * every name apart.
 */
export function leaseKey(key: string): string {
  const own = `{${encodeTag(key)}}`;
  const tag = hashTag(key);
  return tag === undefined ? own : `{${tag}}${own}`;
}

/** The hash tag Redis would read in `name`, or `undefined` when it hashes the whole name. */
export function hashTag(name: string): string | undefined {
  const open = name.indexOf('{');
  if (open < 0) return undefined;
  const close = name.indexOf('}', open + 1);
  return close > open + 1 ? name.slice(open + 1, close) : undefined;
}

/**
 * The Cluster slot of a Redis key name: CRC16 (XMODEM) of its hash tag, or of the whole name,
 * in UTF-8 as the clients send it, modulo 16384.
 */
export function keySlot(name: string): number {
  const bytes = Buffer.from(hashTag(name) ?? name, 'utf8');
  let crc = 0;
  for (const byte of bytes) crc = ((crc << 8) & 0xffff) ^ CRC16[((crc >> 8) ^ byte) & 0xff]!;
  return crc & 16383;
}

const CRC16 = Array.from({ length: 256 }, (_, i) => {
  let crc = i << 8;
  for (let bit = 0; bit < 8; bit++) crc = crc & 0x8000 ? ((crc << 1) ^ 0x1021) & 0xffff : crc << 1;
  return crc;
});

/** The two namespaces of shared leases, apart from each other and from the exclusive lock. */
export type SharedNamespace = 'permits' | 'rw';

/**
 * The Redis keys of a key's shared leases (a semaphore's or a read/write lock's), in the
 * lease's hash slot and apart from its names: the stem is also the channel.
 */
export interface SharedKeys {
  /** `<lease>:v2:permits` or `<lease>:v2:rw`: the holders, a sorted set owner -> expiry ms. */
  holders: string;
  /**
   * `<holders>:data`, a hash: `o<owner>` -> `<seq>:<weight>:<fence>`, `last` (the last
   * sequence number issued), `share` (the fence of the last acquisition that did not share),
   * `total` (the weight held).
   */
  data: string;
  /** `<holders>:line`: the waiters by arrival, a sorted set. */
  line: string;
  /**
   * `<holders>:places`: each waiter's `<deadlineMs>:<weight>:<limit>:<most claimMs>`, then
   * `:<wake channel>` when its store has one (see `LockKeys.wake`).
   */
  places: string;
  /**
   * `<holders>:wake`: where earlier versions kept each waiter's wake channel; it expires with
   * their line.
   */
  wake: string;
  channel: string;
}

export function sharedKeys(key: string, namespace: SharedNamespace): SharedKeys {
  const holders = `${leaseKey(key)}:v2:${namespace}`;
  return {
    holders,
    data: `${holders}:data`,
    line: `${holders}:line`,
    places: `${holders}:places`,
    wake: `${holders}:wake`,
    channel: holders,
  };
}

export function lockKeys(key: string): LockKeys {
  const lease = leaseKey(key);
  return {
    lease,
    fence: `${lease}:fence`,
    line: `${lease}:v2:line`,
    waiters: `${lease}:v2:waiters`,
    wake: `${lease}:v2:wake`,
    channel: lease,
  };
}

/**
 * A store's own wake channel, on which the releases that hand it a key tell it so, rather than
 * on the key's channel that every store with a waiter for the key listens on. The message is
 * `<bytes>:<channel><hand-off>`: the key's channel (its length in UTF-8 bytes first) and the
 * hand-off as published there.
 */
export function wakeChannel(): string {
  return `cachelock:wake:${randomBytes(9).toString('base64url')}`;
}

/** A wake channel's message as `[key channel, hand-off]`, or `undefined` when malformed. */
export function parseWake(message: string): [string, string] | undefined {
  const colon = message.indexOf(':');
  const bytes = Number(message.slice(0, colon));
  if (colon < 1 || !Number.isSafeInteger(bytes) || bytes < 0) return undefined;
  const rest = message.slice(colon + 1);
  // Most channels are ASCII, where bytes and UTF-16 units agree.
  if (Buffer.byteLength(rest) === rest.length) {
    return bytes > rest.length ? undefined : [rest.slice(0, bytes), rest.slice(bytes)];
  }
  const buffer = Buffer.from(rest);
  if (bytes > buffer.length) return undefined;
  return [buffer.subarray(0, bytes).toString(), buffer.subarray(bytes).toString()];
}
