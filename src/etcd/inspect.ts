import type { LeaseInfo } from 'cachelock';
import { lockPrefix, ownerOf } from './keys.js';
import { type Context, isOwners, readTxn } from './leases.js';

/**
 * The oldest key under the lock's prefix holds it; its lease says for how much longer, by the
 * leader's clock. etcd reports whole seconds rounded down, so the estimate is the middle of
 * that second, never above the TTL the lease was granted. A key cachelock did not write (an
 * `etcdctl lock` holder) is held by the unknown owner `''`, with no fence.
 */
export async function inspect(context: Context, key: string): Promise<LeaseInfo | null> {
  const prefix = lockPrefix(context.namespace, key);
  const read = await context.transport.txn(readTxn(prefix));
  const holder = read.results[0]?.[0];
  if (holder === undefined) return null;
  const named = ownerOf(holder.value);
  const owner = isOwners(holder, prefix, named) ? named : '';
  let ttlMs = Number.POSITIVE_INFINITY;
  if (holder.lease !== '0') {
    const { ttl, granted } = await context.transport.timeToLive(holder.lease);
    // Expired: etcd deletes the key in a moment.
    if (ttl < 0) return null;
    ttlMs = Math.min(ttl * 1000 + 500, granted * 1000);
  }
  return owner === '' ? { owner, ttlMs } : { owner, ttlMs, fence: holder.createRevision };
}
