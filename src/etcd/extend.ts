import { lockKeys, ownerValue } from './keys.js';
import {
  type Context,
  cacheKey,
  effective,
  isOwners,
  leaseSeconds,
  readTxn,
  retire,
  revokeLater,
} from './leases.js';

/**
 * Extend only while our key is the oldest under the lock's prefix. A lease whose TTL is the
 * one asked for gets one keep-alive (no write to etcd's log); a different TTL means a new lease
 * that the key moves onto, checked by its create revision and its old lease.
 */
export async function extend(
  context: Context,
  key: string,
  owner: string,
  ttlMs: number,
): Promise<boolean> {
  const { transport } = context;
  const { prefix, mine } = lockKeys(context.namespace, key, owner);
  const id = cacheKey(mine);
  const read = await transport.txn(readTxn(prefix));
  const holder = read.results[0]?.[0];
  if (holder === undefined || !isOwners(holder, prefix, owner)) {
    // Lost: the core releases nothing after a failed extension, so forget the key now.
    context.mine.delete(id);
    return false;
  }
  const seconds = leaseSeconds(ttlMs);
  const known = context.mine.get(id);
  const granted =
    known !== undefined && known.lease === holder.lease
      ? known.granted
      : (await transport.timeToLive(holder.lease)).granted;
  if (granted === effective(context, seconds)) {
    const sentAt = performance.now();
    const renewed = await transport.keepAlive(holder.lease);
    if (renewed <= 0) context.mine.delete(id);
    else if (known !== undefined && known.lease === holder.lease) known.renewedAt = sentAt;
    return renewed > 0;
  }
  const takenAt = performance.now();
  const lease = await context.pool.takeRenewed(context, seconds);
  const moved = await transport.txn({
    compare: [
      { key: mine, target: 'CREATE', result: 'EQUAL', value: holder.createRevision },
      { key: mine, target: 'LEASE', result: 'EQUAL', value: holder.lease },
    ],
    success: [{ put: { key: mine, value: ownerValue(owner), lease: lease.id } }],
    failure: [],
  });
  if (!moved.succeeded) {
    revokeLater(context, lease.id);
    context.mine.delete(id);
    return false;
  }
  retire(context, holder.lease, known);
  context.mine.set(id, {
    lease: lease.id,
    granted: lease.ttl,
    asked: seconds,
    renewedAt: takenAt,
    createRevision: holder.createRevision,
    waiting: false,
  });
  return true;
}
