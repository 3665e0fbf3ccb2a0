// The contended case every backend's benchmark shares: WORKERS processes take one key in a
// loop, hold it 1 ms and pause 0-2 ms between sections, for a fixed time. Its ceiling is the
// same loop in one process on async-mutex. A benchmark file calls `contendedTable` from its main
// process and `workerMain` when it is started as a worker. With `floors`, the table also has the
// least that strict first-come-first-served order between processes costs on this machine, with
// no store at all: a token passed in arrival order over Unix-domain sockets (see floor.mjs). With
// `floors: 'write'` as well the floor that writes to the store once per hand-over (FLOOR_WRITE),
// whose write the benchmark's worker gives as the second argument of `workerMain`.
//
// BENCH_WORKERS (4), BENCH_CONTENDED_MS (2000) and BENCH_WAIT_LIMIT_MS (20000: a wait longer than
// this gives up, or counts as given up where the lock cannot give up) tune it; for the long
// 5-process case: BENCH_WORKERS=5 BENCH_CONTENDED_MS=30000 BENCH_ROUNDS=1 BENCH_ONLY=contended.
// BENCH_WORKER_ARGS gives the workers Node.js flags, space-separated (`--cpu-prof
// --cpu-prof-dir=/tmp/prof` profiles each one; NODE_OPTIONS does not take those).
import { fork } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { FLOOR_DIRECT, FLOOR_SERVER, FLOOR_WRITE, floorLock, floorServer } from './floor.mjs';
import { asyncMutex, fmt, interleave, median, table } from './lib.mjs';

export const WORKERS = Number(process.env.BENCH_WORKERS ?? 4);
export const CONTENDED_MS = Number(process.env.BENCH_CONTENDED_MS ?? 2_000);
export const WAIT_LIMIT_MS = Number(process.env.BENCH_WAIT_LIMIT_MS ?? 20_000);
export const LIMIT = 'async-mutex (in-process limit)';
export { FLOOR_DIRECT, FLOOR_SERVER, FLOOR_WRITE };

/** Milliseconds on the system's monotonic clock, the same in every process of the machine. */
const clock = () => Number(process.hrtime.bigint()) / 1e6;

/**
 * Take the lock, hold it 1 ms, pause 0-2 ms, for CONTENDED_MS; count and time the waits. A wait
 * that throws `LockTimeoutError` (or lasts past WAIT_LIMIT_MS) counts as given up. `stamps` has
 * each section's asked, acquired and released times on `clock`, for the hand-over times.
 */
export async function contend(withLock) {
  const cpuBefore = process.cpuUsage();
  let sections = 0;
  let gaveUp = 0;
  let worstWaitMs = 0;
  const stamps = [];
  const stopAt = performance.now() + CONTENDED_MS;
  while (performance.now() < stopAt) {
    const asked = performance.now();
    const askedAt = clock();
    try {
      await withLock(async () => {
        const acquiredAt = clock();
        const waited = performance.now() - asked;
        worstWaitMs = Math.max(worstWaitMs, waited);
        if (waited > WAIT_LIMIT_MS) gaveUp++;
        await sleep(1);
        stamps.push(askedAt, acquiredAt, clock());
      });
      sections++;
    } catch (error) {
      if (error?.name !== 'LockTimeoutError') throw error;
      worstWaitMs = Math.max(worstWaitMs, performance.now() - asked);
      gaveUp++;
    }
    await sleep(Math.random() * 2);
  }
  const cpu = process.cpuUsage(cpuBefore);
  return { sections, gaveUp, worstWaitMs, cpuUs: cpu.user + cpu.system, stamps };
}

/**
 * From every worker's stamps: each hand-over's time, from a release to the next holder's
 * acquire resolving, where that holder was already waiting when the release began (ms); and how
 * many sections began before the one before them had ended (0 for an exclusive lock).
 */
export function handovers(reports) {
  const sections = [];
  for (const { stamps } of reports)
    for (let i = 0; i < stamps.length; i += 3)
      sections.push([stamps[i], stamps[i + 1], stamps[i + 2]]);
  sections.sort((a, b) => a[1] - b[1]);
  const gaps = [];
  let overlaps = 0;
  for (let i = 1; i < sections.length; i++) {
    const [asked, acquired] = sections[i];
    const released = sections[i - 1][2];
    if (acquired < released) overlaps++;
    else if (asked < released) gaps.push(acquired - released);
  }
  return { gaps, overlaps };
}

/** The same loop in this process on an in-memory mutex: the ceiling. */
function inProcessLimit() {
  const mutex = new asyncMutex.Mutex();
  return Promise.all(
    Array.from({ length: WORKERS }, () => contend((fn) => mutex.runExclusive(fn))),
  );
}

/**
 * Start WORKERS copies of `script` as workers, let them go at once, collect their reports.
 * `around.before()` runs once they are ready, `around.after(reports)` once they have reported
 * and before they close, so that it sees the loops' work alone.
 */
async function runWorkers(script, config, around) {
  const children = Array.from({ length: WORKERS }, (_, index) =>
    fork(script, ['worker', JSON.stringify(config), String(index)], {
      execArgv: process.env.BENCH_WORKER_ARGS?.split(' ').filter(Boolean) ?? [],
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
  await around?.before?.();
  const reports = children.map(next);
  for (const child of children) child.send('go');
  const done = await Promise.all(reports);
  await around?.after?.(done);
  const ended = children.map((child) => new Promise((resolve) => child.once('exit', resolve)));
  for (const child of children) child.send('close');
  await Promise.all(ended);
  return done;
}

/**
 * A floor's round: its lock server in this process, the workers of `script` around it; `write`,
 * the store's config for FLOOR_WRITE.
 */
async function floorRound(script, direct, write) {
  const dir = mkdtempSync(join(tmpdir(), 'cachelock-bench-floor-'));
  const server = await floorServer(dir, direct);
  try {
    return await runWorkers(script, { floor: { dir, write } });
  } finally {
    server.close();
    rmSync(dir, { recursive: true, force: true });
  }
}

/**
 * In a worker: `makeLock(config)` resolves `{ withLock, close }`; this runs the loop when the
 * main process says go and sends back the report. `makeWrite(config)`, for FLOOR_WRITE, resolves
 * `{ write(next), close }`: one write to the store recording `next` (an index) as the holder.
 */
export async function workerMain(makeLock, makeWrite) {
  const config = JSON.parse(process.argv[3]);
  const index = Number(process.argv[4]);
  let closeWrite;
  let write;
  if (config.floor?.write !== undefined) {
    ({ write, close: closeWrite } = await makeWrite(config.floor.write));
  }
  const { withLock, close } = config.floor
    ? await floorLock({ dir: config.floor.dir, index, write })
    : await makeLock(config);
  process.send('ready');
  await new Promise((resolve) => process.once('message', resolve));
  const report = await contend(withLock);
  process.send(report);
  await new Promise((resolve) => process.once('message', resolve));
  await close?.();
  await closeWrite?.();
  process.disconnect();
}

/** Whether this process was started as a worker by `contendedTable`. */
export const isWorker = () => process.argv[2] === 'worker';

const range = (values, digits) =>
  `${fmt(median(values), digits)} (${fmt(Math.min(...values), digits)}-${fmt(Math.max(...values), digits)})`;

const quantile = (sorted, q) =>
  sorted.length === 0
    ? Number.NaN
    : sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))];

/**
 * Measure every contender (plus the in-process limit, with `floors` the two store-free floors,
 * and with `floors: 'write'` the floor that writes to the store) in interleaved rounds and print the tables. `configFor(name, run)` gives each round's
 * worker config; `aroundFor(name)`, optional, the hooks of `runWorkers` for that contender's
 * rounds.
 */
export async function contendedTable({ script, contenders, rounds, configFor, aroundFor, floors }) {
  const names = [
    LIMIT,
    ...(floors ? [FLOOR_DIRECT, FLOOR_SERVER] : []),
    ...(floors === 'write' ? [FLOOR_WRITE] : []),
    ...contenders,
  ];
  const per = () => new Map(names.map((name) => [name, []]));
  const worst = per();
  const cpu = per();
  const ratesOf = per();
  const gaveUp = per();
  const turns = per();
  const gaps = per();
  const overlaps = per();
  let run = 0;
  const rates = await interleave(
    names.map((name) => ({ name })),
    rounds,
    async ({ name }) => {
      const reports =
        name === LIMIT
          ? await inProcessLimit()
          : name === FLOOR_DIRECT || name === FLOOR_SERVER
            ? await floorRound(script, name === FLOOR_DIRECT)
            : name === FLOOR_WRITE
              ? await floorRound(script, true, configFor(name, ++run))
              : await runWorkers(script, configFor(name, ++run), aroundFor?.(name));
      worst.get(name).push(Math.max(...reports.map((r) => r.worstWaitMs)));
      const sections = reports.reduce((sum, r) => sum + r.sections, 0);
      cpu.get(name).push(reports.reduce((sum, r) => sum + r.cpuUs, 0) / sections);
      gaveUp.get(name).push(reports.reduce((sum, r) => sum + r.gaveUp, 0));
      turns.get(name).push(reports.map((r) => r.sections));
      const handed = handovers(reports);
      gaps.get(name).push(...handed.gaps);
      overlaps.get(name).push(handed.overlaps);
      const rate = sections / (CONTENDED_MS / 1000);
      ratesOf.get(name).push(rate);
      return rate;
    },
  );
  const limit = ratesOf.get(LIMIT);
  const ofLimit = (name) => ratesOf.get(name).map((rate, round) => (rate / limit[round]) * 100);
  console.log(
    `### ${WORKERS} processes, one key, 1 ms hold, 0-2 ms between sections (${rounds} rounds of ${CONTENDED_MS / 1000} s, median (range))\n`,
  );
  console.log(
    table(
      [
        'library',
        'sections/s',
        '% of in-process limit',
        'worst wait (ms)',
        'CPU us per section (all workers)',
      ],
      names.map((name) => [
        name,
        range(ratesOf.get(name), 0),
        `${range(ofLimit(name), 0)}%`,
        range(worst.get(name), 1),
        fmt(median(cpu.get(name)), 0),
      ]),
    ),
  );
  console.log(`\n(the limit: ${WORKERS} workers in one process on async-mutex, the same loop)\n`);
  console.log(
    `Turns per process, waits past ${WAIT_LIMIT_MS} ms (given up), and hand-over: from a release to the acquire of a process already waiting, all rounds pooled\n`,
  );
  console.log(
    table(
      [
        'library',
        'turns per process (all rounds)',
        'gave up',
        'hand-overs',
        'hand-over p50 / p90 / p99 / max (ms)',
        'overlapping sections',
      ],
      names.map((name) => {
        const all = turns.get(name).flat();
        const sorted = gaps.get(name).sort((a, b) => a - b);
        return [
          name,
          `${Math.min(...all)}-${Math.max(...all)}`,
          String(gaveUp.get(name).reduce((a, b) => a + b, 0)),
          String(sorted.length),
          [0.5, 0.9, 0.99, 1].map((q) => fmt(quantile(sorted, q), 3)).join(' / '),
          String(overlaps.get(name).reduce((a, b) => a + b, 0)),
        ];
      }),
    ),
  );
  console.log('');
  return { rates, worst, cpu };
}

/** `withLock` for a cachelock store: acquire with a wait, run, release. */
export function cachelockWithLock(Lock, key, options) {
  return async (fn) => {
    const lock = new Lock(key, { wait: WAIT_LIMIT_MS, ...options });
    await lock.acquire();
    try {
      await fn();
    } finally {
      await lock.release();
    }
  };
}
