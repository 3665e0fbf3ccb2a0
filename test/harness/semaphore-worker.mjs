// One process of the semaphore harness (see semaphore.ts): the store's permits capability of the
// BUILT package, as a user's process would load it (`npm run build` first). It waits as the core
// does: in line, woken by the store's push or a short poll, whichever comes first.
import { appendFileSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';

const { cache, key, permits, sections, holdMs, dir, index } = JSON.parse(process.argv[2]);
const { closeAll, newOwner, resolveStore } = await import('cachelock');

const store = await resolveStore({ cache });
const leases = store.capabilities.permits;

if (process.send) {
  await new Promise((resolve) => {
    process.once('message', resolve);
    process.send('ready');
  });
  process.disconnect();
}

const log = join(dir, `events-${index}.jsonl`);
const record = (event) =>
  // CLOCK_MONOTONIC: one clock for every process on the machine.
  appendFileSync(
    log,
    `${JSON.stringify({ process: index, at: String(process.hrtime.bigint()), ...event })}\n`,
  );

for (let section = 0; section < sections; section++) {
  const owner = newOwner();
  let wake = () => {};
  const stop = leases.onRelease?.(key, () => wake()) ?? (() => {});
  const request = { limit: permits, weight: 1, lineMs: 5_000 };
  while ((await leases.acquire(key, owner, 10_000, request)) === null) {
    await new Promise((resolve) => {
      wake = resolve;
      setTimeout(resolve, 100 + Math.random() * 100);
    });
  }
  stop();
  // Inside the lease on both ends: entered after the grant, left before the release.
  record({ section, event: 'enter' });
  await sleep(holdMs);
  record({ section, event: 'leave' });
  if (!(await leases.release(key, owner))) throw new Error(`section ${section}: lease lost`);
}
await closeAll();
