/**
 * What a lease item holds: `<expiresAtMs> <fence or -> <owner>`. The expiry is kept in the value
 * because memcached only reports whole seconds left (the meta `t` flag). This store writes `-`
 * for the fence (it gives none); the first release wrote a number there, and items of either
 * kind are read alike, so old and new stores recognise each other's leases.
 */
export interface LeaseValue {
  owner: string;
  expiresAt: number;
  fence: bigint | undefined;
}

export function encodeLease(lease: LeaseValue): Buffer {
  return Buffer.from(`${lease.expiresAt} ${lease.fence ?? '-'} ${lease.owner}`, 'utf8');
}

/** The lease in an item, or undefined when the item is not one of ours. */
export function decodeLease(data: Buffer | undefined): LeaseValue | undefined {
  if (data === undefined) return undefined;
  const text = data.toString('utf8');
  const first = text.indexOf(' ');
  const second = text.indexOf(' ', first + 1);
  if (first < 0 || second < 0) return undefined;
  const expiresAt = Number(text.slice(0, first));
  const fenceText = text.slice(first + 1, second);
  const owner = text.slice(second + 1);
  // Every owner cachelock writes is non-empty: an empty one is not a lease of ours.
  if (!Number.isFinite(expiresAt) || !/^(-|\d+)$/.test(fenceText) || owner === '') {
    return undefined;
  }
  return { expiresAt, fence: fenceText === '-' ? undefined : BigInt(fenceText), owner };
}

/** Beyond this many seconds memcached reads an expiry as a Unix time, not a duration. */
const RELATIVE_LIMIT_S = 60 * 60 * 24 * 30;

/**
 * The memcached expiry for a lease of `ms`, in whole seconds: the lease rounded up, plus three.
 * Memcached reads its clock once a second, on a timer set a second after the last reading, so
 * each reading comes a little later in its second than the one before (a few milliseconds; far
 * more while the server is held up: 757 ms was seen, with commands still served meanwhile).
 * Every few minutes a reading lands in the next second and the clock goes up by 2, and an item's
 * expiry counts from the last reading, up to a second old: an item set with `Tn` may live only
 * `n` - 2 seconds, less however late the next reading comes (set with `T2`, a few milliseconds).
 * This item outlives the lease unless a reading comes a second or more late, and lives at most
 * `ms` + 4 s.
 */
export function expirySeconds(ms: number): number {
  const seconds = Math.max(1, Math.ceil(ms / 1000)) + 3;
  return seconds <= RELATIVE_LIMIT_S ? seconds : Math.ceil(Date.now() / 1000) + seconds;
}
