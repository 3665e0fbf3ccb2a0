import { ownerOf } from './keys.js';
import type { KeyValue, Transport, Txn } from './transport.js';
import { prefixEnd } from './transport.js';

/**
 * How a lease in milliseconds becomes an etcd lease. etcd leases count whole seconds, and the
 * server raises any TTL below its minimum (1.5 election timeouts, rounded up: 2 s with etcd's
 * default 1 s election timeout) to that minimum. So a `ttl` of 300 ms is a lease of 1 s or
 * more on etcd: a holder that dies frees the key after the lease etcd granted, not after
 * 300 ms. The lease runs on the leader's clock; a new leader extends every lease by an
 * election timeout, so a lease may outlive its TTL a little but never ends early.
 */
export function leaseSeconds(ms: number): number {
  return Math.max(1, Math.ceil(ms / 1000));
}

/** What a store instance remembers of the keys it put: saves a read before a release. */
export interface Mine {
  lease: string;
  /** The TTL that lease was granted, in seconds (what a keep-alive renews it to). */
  granted: number;
  createRevision: bigint;
  /** In the line (a waiter), not (yet known to be) the holder. */
  waiting: boolean;
}

/** Everything an operation needs, shared by the store's operations. */
export interface Context {
  transport: Transport;
  namespace: string;
  /** By `<mine key as latin1>`: the keys this instance put and still believes live. */
  mine: Map<string, Mine>;
  /** The smallest TTL the server granted when asked for less, learned from grants. */
  floor: { seconds: number };
}

export function cacheKey(mine: Buffer): string {
  return mine.toString('latin1');
}

/** Grant a lease of `seconds` and learn the server's floor from what it granted. */
export async function grant(
  context: Context,
  seconds: number,
): Promise<{ id: string; ttl: number }> {
  const lease = await context.transport.grant(seconds);
  if (lease.ttl > seconds && lease.ttl > context.floor.seconds) context.floor.seconds = lease.ttl;
  return lease;
}

/** The TTL a grant of `seconds` would get. */
export function effective(context: Context, seconds: number): number {
  return Math.max(seconds, context.floor.seconds);
}

/** Revoke a lease in the background: it holds no key any more, so nothing waits on it. */
export function revokeLater(context: Context, lease: string): void {
  if (lease === '0') return;
  context.transport.revoke(lease).catch(() => {});
}

/** A read of the lock's oldest key (its holder) and, optionally, of one more key. */
export function readTxn(prefix: Buffer, also?: Buffer): Txn {
  const success: Txn['success'] = [
    { range: { key: prefix, rangeEnd: prefixEnd(prefix), limit: 1, oldestFirst: true } },
  ];
  if (also !== undefined) success.push({ range: { key: also } });
  return { compare: [], success, failure: [] };
}

/** Whether `kv` is the key of `owner` under `prefix`, written by cachelock. */
export function isOwners(kv: KeyValue | undefined, prefix: Buffer, owner: string): boolean {
  return (
    kv !== undefined &&
    ownerOf(kv.value) === owner &&
    kv.key.length === prefix.length + Buffer.byteLength(owner) &&
    kv.key.subarray(prefix.length).toString() === owner
  );
}
