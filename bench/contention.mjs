// The contended case every backend's benchmark shares: WORKERS processes take one key in a
// loop, hold it 1 ms and pause 0-2 ms between sections, for a fixed time. Its ceiling is the
// same loop in one process on async-mutex. A benchmark file calls `contendedTable` from its main
// process and `workerMain` when it is started as a worker.
import { fork } from 'node:child_process';
import { setTimeout as sleep } from 'node:timers/promises';
import { Mutex } from 'async-mutex';
import { fmt, interleave, median, table } from './lib.mjs';

export const WORKERS = 4;
export const CONTENDED_MS = Number(process.env.BENCH_CONTENDED_MS ?? 2_000);
export const LIMIT = 'async-mutex (in-process limit)';

/** Take the lock, hold it 1 ms, pause 0-2 ms, for CONTENDED_MS; count and time the waits. */
export async function contend(withLock) {
  let sections = 0;
  let worstWaitMs = 0;
  const stopAt = performance.now() + CONTENDED_MS;
  while (performance.now() < stopAt) {
    const asked = performance.now();
    await withLock(async () => {
      worstWaitMs = Math.max(worstWaitMs, performance.now() - asked);
      await sleep(1);
    });
    sections++;
    await sleep(Math.random() * 2);
  }
  return { sections, worstWaitMs };
}

/** The same loop in this process on an in-memory mutex: the ceiling. */
function inProcessLimit() {
  const mutex = new Mutex();
  return Promise.all(
    Array.from({ length: WORKERS }, () => contend((fn) => mutex.runExclusive(fn))),
  );
}

/** Start WORKERS copies of `script` as workers, let them go at once, collect their reports. */
async function runWorkers(script, config) {
  const children = Array.from({ length: WORKERS }, () =>
    fork(script, ['worker', JSON.stringify(config)], {
      execArgv: [],
      stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
    }),
  );
  const exited = children.map(
    (child) =>
      new Promise((_, reject) =>
        child.once('exit', (code) => code !== 0 && reject(new Error(`worker exited with ${code}`))),
      ),
  );
  const next = (child) =>
    Promise.race([new Promise((resolve) => child.once('message', resolve)), ...exited]);
  await Promise.all(children.map(next));
  const reports = children.map(next);
  for (const child of children) child.send('go');
  return Promise.all(reports);
}

/**
 * In a worker: `makeLock(config)` resolves `{ withLock, close }`; this runs the loop when the
 * main process says go and sends back the report.
 */
export async function workerMain(makeLock) {
  const config = JSON.parse(process.argv[3]);
  const { withLock, close } = await makeLock(config);
  process.send('ready');
  await new Promise((resolve) => process.once('message', resolve));
  const report = await contend(withLock);
  await close?.();
  process.send(report, () => process.disconnect());
}

/** Whether this process was started as a worker by `contendedTable`. */
export const isWorker = () => process.argv[2] === 'worker';

/**
 * Measure every contender (plus the in-process limit) in interleaved rounds and print the
 * table. `configFor(name, run)` gives each round's worker config.
 */
export async function contendedTable({ script, contenders, rounds, configFor }) {
  const names = [LIMIT, ...contenders];
  const worst = new Map(names.map((name) => [name, []]));
  let run = 0;
  const rates = await interleave(
    names.map((name) => ({ name })),
    rounds,
    async ({ name }) => {
      const reports =
        name === LIMIT ? await inProcessLimit() : await runWorkers(script, configFor(name, ++run));
      worst.get(name).push(Math.max(...reports.map((r) => r.worstWaitMs)));
      return reports.reduce((sum, r) => sum + r.sections, 0) / (CONTENDED_MS / 1000);
    },
  );
  const limit = rates.get(LIMIT);
  console.log(`### ${WORKERS} processes, one key, 1 ms hold, 0-2 ms between sections\n`);
  console.log(
    table(
      ['library', 'sections/s', '% of in-process limit', 'worst wait (ms, median of rounds)'],
      names.map((name) => [
        name,
        fmt(rates.get(name), 0),
        `${fmt((rates.get(name) / limit) * 100, 0)}%`,
        fmt(median(worst.get(name)), 1),
      ]),
    ),
  );
  console.log(`\n(the limit: ${WORKERS} workers in one process on async-mutex, the same loop)\n`);
  return { rates, worst };
}

/** `withLock` for a cachelock store: acquire with a wait, run, release. */
export function cachelockWithLock(Lock, key, options) {
  return async (fn) => {
    const lock = new Lock(key, { wait: '30s', ...options });
    await lock.acquire();
    try {
      await fn();
    } finally {
      await lock.release();
    }
  };
}
