import { setTimeout as sleep } from 'node:timers/promises';
import { Lock, type LockOptions } from 'cachelock';

/**
 * Two tries of one process for `key` while another holds it: 'first' starts 10 ms before
 * 'second' (a store whose first answer comes late makes 'second' the process's first waiter,
 * though 'first' joined the store's line ahead of it). Then `release` frees the key. Resolves
 * the order they were served in and how long after the release both were done.
 */
export async function twoTriesInTurn(
  key: string | string[],
  options: LockOptions,
  release: () => Promise<unknown>,
): Promise<{ served: string[]; afterReleaseMs: number }> {
  const served: string[] = [];
  const take = (name: string) =>
    new Lock(key, { ttl: '10s', wait: '10s', ...options }).run(async () => {
      served.push(name);
      await sleep(5);
    });
  const first = take('first');
  await sleep(10);
  const second = take('second');
  await sleep(200);
  const freed = performance.now();
  await release();
  await Promise.all([first, second]);
  return { served, afterReleaseMs: performance.now() - freed };
}
