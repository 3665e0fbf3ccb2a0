import { lockKeys, lockPrefix, ownerOf, ownerValue } from './keys.js';
import {
  type Context,
  cacheKey,
  isOwners,
  leaseSeconds,
  readTxn,
  retire,
  revokeLater,
} from './leases.js';

/**
 * Give the lock up by deleting our key, checked by its create revision (the acquisition it
 * was), so nothing is left behind and the deletion wakes the waiters' watches; its lease, now
 * empty, becomes a spare for this store's next acquisition. An instance that did not take the
 * key itself reads it first and revokes its lease, which deletes it: each lease carries one
 * key, so that touches no other owner. A waiter's release leaves the line the same way and
 * resolves false. With `keepMs`, the key moves onto a lease of `keepMs` instead (keeping its
 * create revision).
 */
export async function release(
  context: Context,
  key: string,
  owner: string,
  keepMs: number | undefined,
): Promise<boolean> {
  if (owner === '') return forceRelease(context, key);
  const { transport } = context;
  const { prefix, mine } = lockKeys(context.namespace, key, owner);
  const id = cacheKey(mine);
  const known = context.mine.get(id);
  if (
    known !== undefined &&
    (!known.waiting || known.handed === true) &&
    !(keepMs !== undefined && keepMs > 0)
  ) {
    // This instance saw it become the holder (or the oldest in line, which a hand-off grants),
    // and a holder stays the holder until its key goes.
    context.mine.delete(id);
    const deleted = await transport.txn({
      compare: [{ key: mine, target: 'CREATE', result: 'EQUAL', value: known.createRevision }],
      success: [{ delete: { key: mine } }],
      failure: [],
    });
    if (deleted.succeeded) retire(context, known.lease, known);
    return deleted.succeeded;
  }
  const read = await transport.txn(readTxn(prefix, mine));
  const holder = read.results[0]?.[0];
  const own = read.results[1]?.[0];
  if (own === undefined || !isOwners(own, prefix, owner)) {
    context.mine.delete(id);
    return false;
  }
  const held = isOwners(holder, prefix, owner);
  if (held && keepMs !== undefined && keepMs > 0) {
    const lease = await context.pool.takeRenewed(context, leaseSeconds(keepMs));
    const moved = await transport.txn({
      compare: [{ key: mine, target: 'CREATE', result: 'EQUAL', value: own.createRevision }],
      success: [{ put: { key: mine, value: ownerValue(owner), lease: lease.id } }],
      failure: [],
    });
    context.mine.delete(id);
    if (!moved.succeeded) {
      revokeLater(context, lease.id);
      return false;
    }
    retire(context, own.lease, known);
    return true;
  }
  context.mine.delete(id);
  const revoked = await transport.revoke(own.lease);
  return held && revoked;
}

/**
 * A forced release names the unknown owner `''`: it deletes the oldest key only when cachelock
 * did not write it (an `etcdctl lock` holder, say), and only that key: its lease may be a whole
 * session's, so it is not revoked.
 */
async function forceRelease(context: Context, key: string): Promise<boolean> {
  const prefix = lockPrefix(context.namespace, key);
  const read = await context.transport.txn(readTxn(prefix));
  const holder = read.results[0]?.[0];
  if (holder === undefined || ownerOf(holder.value) !== '') return false;
  const deleted = await context.transport.txn({
    compare: [{ key: holder.key, target: 'MOD', result: 'EQUAL', value: holder.modRevision }],
    success: [{ delete: { key: holder.key } }],
    failure: [],
  });
  return deleted.succeeded;
}
