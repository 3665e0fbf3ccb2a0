import { type Context, cacheKey, effective, leaseSeconds, retire, revokeLater } from './leases.js';
import {
  holding,
  look,
  placeOf,
  recordFence,
  recordValue,
  type Space,
  sharedKeys,
} from './shared-line.js';

/**
 * Extend only while our key holds. A lease whose TTL is the one asked for gets one keep-alive;
 * another TTL means a new lease that the key moves onto (with the fence record, when it was
 * on the old one), checked by its create revision and its old lease.
 */
export async function extendShared(
  context: Context,
  space: Space,
  key: string,
  owner: string,
  ttlMs: number,
): Promise<boolean> {
  const { transport } = context;
  const keys = sharedKeys(context.namespace, space, key, owner);
  const id = cacheKey(keys.mine);
  const view = await look(context, keys);
  const at = placeOf(view.line, owner);
  const own = view.line[at];
  if (own === undefined || holding(view.line) <= at) {
    // Lost: the core releases nothing after a failed extension, so forget the key now.
    context.mine.delete(id);
    return false;
  }
  const seconds = leaseSeconds(ttlMs);
  const known = context.mine.get(id);
  const old = own.kv.lease;
  const granted =
    known !== undefined && known.lease === old
      ? known.granted
      : (await transport.timeToLive(old)).granted;
  if (granted === effective(context, seconds)) {
    const sentAt = performance.now();
    const renewed = await transport.keepAlive(old);
    if (renewed <= 0) context.mine.delete(id);
    else if (known !== undefined && known.lease === old) known.renewedAt = sentAt;
    return renewed > 0;
  }
  const takenAt = performance.now();
  const lease = await context.pool.takeRenewed(context, seconds);
  // The fence record moves with us when it was on the old lease; its value says the fence
  // outright, as a write recorded by its own revision would no longer be.
  const fence = recordFence(view.record);
  const carries = keys.fence !== undefined && view.record?.lease === old && fence !== undefined;
  const moved = await transport.txn({
    compare: [
      { key: keys.mine, target: 'CREATE', result: 'EQUAL', value: own.kv.createRevision },
      { key: keys.mine, target: 'LEASE', result: 'EQUAL', value: old },
    ],
    success: [
      { put: { key: keys.mine, value: own.kv.value, lease: lease.id } },
      ...(carries
        ? [{ put: { key: keys.fence!, value: recordValue(fence!), lease: lease.id } }]
        : []),
    ],
    failure: [],
  });
  if (!moved.succeeded) {
    revokeLater(context, lease.id);
    context.mine.delete(id);
    return false;
  }
  retire(context, old, known);
  context.mine.set(id, {
    lease: lease.id,
    granted: lease.ttl,
    asked: seconds,
    renewedAt: takenAt,
    createRevision: own.kv.createRevision,
    waiting: false,
  });
  return true;
}
