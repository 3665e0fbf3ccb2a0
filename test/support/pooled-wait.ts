import type { Lock } from 'cachelock';
import { expect } from 'vitest';

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/**
 * `waiter` waits for the key `holder` holds without holding a connection of its app's pool
 * (`inUse` counts the pool's connections checked out), and the holder's release wakes it on a
 * connection of the store's own, not by a poll; then both let go, with the fences in order.
 * `settled` runs once the wait has begun (by default, 300 ms go by).
 */
export async function waitsOffThePool(
  holder: Lock,
  waiter: Lock,
  inUse: () => number,
  settled: () => Promise<unknown> = () => sleep(300),
): Promise<void> {
  const waiting = waiter.acquire();
  await settled();
  let held = 0;
  const samples = 40;
  for (let i = 0; i < samples; i++) {
    held += inUse();
    await sleep(25);
  }
  // A poll borrows a connection for a moment; a held one would show in every sample.
  expect(held).toBeLessThanOrEqual(samples / 10);

  const released = Date.now();
  expect(await holder.release()).toBe(true);
  await waiting;
  // Woken by the release on the waiter's own connection, not by a poll.
  expect(Date.now() - released).toBeLessThan(900);
  expect(waiter.fence! > holder.fence!).toBe(true);
  expect(await waiter.release()).toBe(true);
}
