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
 * The memcached expiry for a lease of `ms`: whole seconds rounded up, plus one. Memcached's clock
 * ticks once a second, so an item set with `T1` may vanish after only a few milliseconds; the
 * extra second makes the item outlive the lease (it lives between `ms` and `ms` + 2 s).
 */
export function expirySeconds(ms: number): number {
  const seconds = Math.max(1, Math.ceil(ms / 1000)) + 1;
  return seconds <= RELATIVE_LIMIT_S ? seconds : Math.ceil(Date.now() / 1000) + seconds;
}
