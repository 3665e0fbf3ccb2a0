import { describeOwner, type Holder } from 'cachelock';

/** `2.5s`, `45s`, `3m 20s`, `2h 5m`: a lease or a wait, for people. */
export function formatMs(ms: number): string {
  if (ms === Number.POSITIVE_INFINITY) return 'forever';
  const whole = Math.max(0, Math.ceil(ms));
  if (whole < 10_000) return `${(whole / 1000).toFixed(1)}s`;
  const seconds = Math.ceil(whole / 1000);
  if (seconds < 120) return `${seconds}s`;
  const minutes = Math.floor(seconds / 60);
  if (minutes < 120) return `${minutes}m ${seconds % 60}s`;
  return `${Math.floor(minutes / 60)}h ${minutes % 60}m`;
}

/** `pid 123 on web-1 for 25s more (fence 7)`. */
export function describeHolder(holder: { owner: string; ttlMs: number; fence?: bigint }): string {
  const fence = holder.fence === undefined ? '' : ` (fence ${holder.fence})`;
  return `${describeOwner(holder.owner)} for ${formatMs(holder.ttlMs)} more${fence}`;
}

/** What `status --json` prints: bigints as strings, so that any JSON reader keeps them exact. */
export function holderJson(key: string, holder: Holder | null): Record<string, unknown> {
  if (holder === null) return { key, held: false };
  return {
    key,
    held: true,
    owner: holder.owner,
    host: holder.host ?? null,
    pid: holder.pid ?? null,
    ttlMs: Math.max(0, Math.round(holder.ttlMs)),
    fence: holder.fence === undefined ? null : holder.fence.toString(),
  };
}
