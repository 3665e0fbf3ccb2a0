// A node-cron job that runs once per tick however many processes schedule it.
//
//   npm run build && CACHELOCK_URL=redis://127.0.0.1:6379 node examples/node-cron/job.mjs
//
// Start it in two terminals: each second, one of them prints "cleanup ran". The locks go to
// CACHELOCK_URL (process memory without it, which only dedupes within one process). Optional:
// LOCK_PREFIX (a namespace in the shared cache), RUN_FOR (stop after that many seconds),
// RUN_LOG (a file to append each run to, as JSON lines).
import { appendFileSync } from 'node:fs';
import { closeAll, once } from 'cachelock';
import cron from 'node-cron';

const name = process.env.INSTANCE ?? `pid-${process.pid}`;

// holdAtLeast keeps the key a little past a fast run, so that a process whose timer fires a few
// milliseconds later skips this tick instead of running it again. Half the period: a tick that
// fires up to that late still finds the previous tick's key gone.
const cleanup = once(
  { key: 'cleanup', holdAtLeast: '500ms', prefix: process.env.LOCK_PREFIX ?? 'cachelock:' },
  async () => {
    const second = Math.floor(Date.now() / 1000);
    console.log(`${name}: cleanup ran for ${new Date(second * 1000).toISOString()}`);
    if (process.env.RUN_LOG) {
      appendFileSync(process.env.RUN_LOG, `${JSON.stringify({ instance: name, second })}\n`);
    }
  },
);

// Connect to the cache before the first tick, so that the first run is not late: holdAtLeast
// counts from the acquisition, and a late one could cover the next tick.
await cleanup.isLocked();
const task = cron.schedule('* * * * * *', () => cleanup());
console.log(`${name} started`);

async function shutdown() {
  await task.stop();
  await closeAll();
}
const runFor = Number(process.env.RUN_FOR ?? 0);
if (runFor > 0) setTimeout(shutdown, runFor * 1000);
process.once('SIGTERM', shutdown);
process.once('SIGINT', shutdown);
