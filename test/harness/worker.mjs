// One process of the exclusion harness (see exclusion.ts). It imports the BUILT package by its
// own name, as a user's process would, so it needs `npm run build` first.
import { appendFileSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';

const config = JSON.parse(process.argv[2]);
const { cache, keys, sections, holdMs, ttl, dir, mode, index, processes } = config;
const cachelock = mode === 'lock' ? await import('cachelock') : undefined;

// Start together, so that sections of different processes really contend.
if (process.send) {
  await new Promise((resolve) => {
    process.once('message', resolve);
    process.send('ready');
  });
  process.disconnect();
}

const log = join(dir, `events-${index}.jsonl`);
for (let section = 0; section < sections; section++) {
  const slot = Math.floor(Math.random() * keys.length);
  const key = keys[slot];
  const lock = cachelock ? new cachelock.Lock(key, { cache, ttl, wait: '30s' }) : undefined;
  await lock?.acquire();

  // CLOCK_MONOTONIC is one clock for every process on the machine, so enter/exit times of
  // different processes compare directly.
  const enter = process.hrtime.bigint();
  const counterFile = join(dir, `counter-${slot}`);
  const read = Number(readFileSync(counterFile, 'utf8') || '0');
  // Without the lock, the first sections of all processes read before any of them writes, so
  // the race the checker must catch happens however the scheduler spreads the processes.
  if (!lock && section === 0) await allHaveRead();
  await sleep(holdMs);
  writeFileSync(counterFile, String(read + 1));
  const exit = process.hrtime.bigint();

  const released = lock ? await lock.release() : true;
  appendFileSync(
    log,
    `${JSON.stringify({
      process: index,
      section,
      key,
      enter: String(enter),
      exit: String(exit),
      fence: lock?.fence === undefined ? undefined : String(lock.fence),
      released,
    })}\n`,
  );
}
await cachelock?.closeAll();

async function allHaveRead() {
  writeFileSync(join(dir, `read-${index}`), '');
  while (readdirSync(dir).filter((name) => name.startsWith('read-')).length < processes) {
    await sleep(1);
  }
}
