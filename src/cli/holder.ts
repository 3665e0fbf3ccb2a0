import { describeOwner, formatDuration, type Holder } from 'cachelock';

/** `pid 123 on web-1 for 25s more (fence 7)`. */
export function describeHolder(holder: { owner: string; ttlMs: number; fence?: bigint }): string {
  const fence = holder.fence === undefined ? '' : ` (fence ${holder.fence})`;
  return `${describeOwner(holder.owner)} for ${formatDuration(holder.ttlMs)} more${fence}`;
}

/** What `status --json` prints: bigints as strings, so that any JSON reader keeps them exact. */
export function holderJson(key: string, holder: Holder | null): Record<string, unknown> {
  if (holder === null) return { key, held: false };
  return { key, held: true, ...holderFields(holder) };
}

/** What `status --permits N --json` prints: the permits, how many are free, every holder. */
export function holdersJson(
  key: string,
  permits: number,
  holders: readonly Holder[],
): Record<string, unknown> {
  return {
    key,
    permits,
    free: Math.max(0, permits - holders.length),
    holders: holders.map(holderFields),
  };
}

function holderFields(holder: Holder): Record<string, unknown> {
  return {
    owner: holder.owner,
    host: holder.host ?? null,
    pid: holder.pid ?? null,
    ttlMs: Math.max(0, Math.round(holder.ttlMs)),
    fence: holder.fence === undefined ? null : holder.fence.toString(),
  };
}
