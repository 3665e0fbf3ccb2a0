import type { LeaseInfo } from 'cachelock';
import type { Context } from './leases.js';
import { holding, look, type Space, sharedFence, sharedKeys } from './shared-line.js';

/**
 * The contenders that hold, oldest first, each with its lease's time to live by the leader
 * (whole seconds rounded down, so the middle of that second, never above the TTL granted).
 */
export async function inspectShared(
  context: Context,
  space: Space,
  key: string,
): Promise<LeaseInfo[]> {
  const keys = sharedKeys(context.namespace, space, key, '');
  const view = await look(context, keys);
  const holders = view.line.slice(0, holding(view.line));
  const infos = await Promise.all(
    holders.map(async (c, i): Promise<LeaseInfo | undefined> => {
      let ttlMs = Number.POSITIVE_INFINITY;
      if (c.kv.lease !== '0') {
        const { ttl, granted } = await context.transport.timeToLive(c.kv.lease);
        // Expired: etcd deletes the key in a moment.
        if (ttl < 0) return undefined;
        ttlMs = Math.min(ttl * 1000 + 500, granted * 1000);
      }
      if (c.owner === '') return { owner: '', ttlMs };
      const fence = c.shares ? (c.fence ?? sharedFence(view, i)) : c.kv.createRevision;
      return fence === undefined ? { owner: c.owner, ttlMs } : { owner: c.owner, ttlMs, fence };
    }),
  );
  return infos.filter((info) => info !== undefined);
}
