import { type Context, cacheKey, leaseSeconds, retire, revokeLater } from './leases.js';
import { holding, look, placeOf, type Space, sharedKeys } from './shared-line.js';

/**
 * Leave the line: delete our key, checked by its create revision (the deletion wakes the
 * waiters' watches). Its lease becomes a spare, or is revoked when this instance did not put
 * it, unless it carries a read/write lock's fence record, which then lasts until that lease
 * runs out. Resolves whether our key held. With `keepMs`, a holding key moves onto a lease of
 * `keepMs` instead.
 */
export async function releaseShared(
  context: Context,
  space: Space,
  key: string,
  owner: string,
  keepMs: number | undefined,
): Promise<boolean> {
  const { transport } = context;
  const keys = sharedKeys(context.namespace, space, key, owner);
  const id = cacheKey(keys.mine);
  const known = context.mine.get(id);
  context.mine.delete(id);
  const keep = keepMs !== undefined && keepMs > 0;
  if (known !== undefined && !known.waiting && !keep) {
    // This instance saw it hold, and a holder holds until its key goes.
    const deleted = await transport.txn({
      compare: [{ key: keys.mine, target: 'CREATE', result: 'EQUAL', value: known.createRevision }],
      success: [
        ...(keys.fence === undefined ? [] : [{ range: { key: keys.fence } }]),
        { delete: { key: keys.mine } },
      ],
      failure: [],
    });
    if (deleted.succeeded && deleted.results[0]?.[0]?.lease !== known.lease) {
      retire(context, known.lease, known);
    }
    return deleted.succeeded;
  }
  const view = await look(context, keys);
  const at = placeOf(view.line, owner);
  const own = view.line[at];
  if (own === undefined) return false;
  const held = holding(view.line) > at;
  const carries = view.record?.lease === own.kv.lease;
  const old = own.kv.lease;
  if (held && keep) {
    const lease = await context.pool.takeRenewed(context, leaseSeconds(keepMs));
    const moved = await transport.txn({
      compare: [
        { key: keys.mine, target: 'CREATE', result: 'EQUAL', value: own.kv.createRevision },
      ],
      success: [{ put: { key: keys.mine, value: own.kv.value, lease: lease.id } }],
      failure: [],
    });
    if (!moved.succeeded) {
      revokeLater(context, lease.id);
      return false;
    }
    if (!carries) retire(context, old, known);
    return true;
  }
  const deleted = await transport.txn({
    compare: [{ key: keys.mine, target: 'CREATE', result: 'EQUAL', value: own.kv.createRevision }],
    success: [{ delete: { key: keys.mine } }],
    failure: [],
  });
  if (deleted.succeeded && !carries) retire(context, old, known);
  return held && deleted.succeeded;
}
