// One process of the fairness harness (see fairness.ts): takes one key of the BUILT package in a
// loop, as a user's process would (`npm run build` first), and writes down how long each wait
// took.
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';

const { cache, key, durationMs, holdMs, dir, index } = JSON.parse(process.argv[2]);
const { closeAll, Lock } = await import('cachelock');

if (process.send) {
  await new Promise((resolve) => {
    process.once('message', resolve);
    process.send('ready');
  });
  process.disconnect();
}

const waits = [];
const stopAt = performance.now() + durationMs;
while (performance.now() < stopAt) {
  const lock = new Lock(key, { cache, ttl: '10s', wait: '30s' });
  const asked = performance.now();
  await lock.acquire();
  waits.push(performance.now() - asked);
  await sleep(holdMs);
  if (!(await lock.release())) throw new Error('lease lost');
  await sleep(Math.random() * 2);
}
writeFileSync(join(dir, `waits-${index}.json`), JSON.stringify(waits));
await closeAll();
