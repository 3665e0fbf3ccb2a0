import { createRequire } from 'node:module';
import { resolve } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';

// async-mutex's CommonJS build (lib/index.js) is about 3x faster than its ESM build
// (index.mjs) on Node.js 20-24: every case measures its anchor through the fastest build.
export const asyncMutex = createRequire(import.meta.url)('async-mutex');
// Small helpers shared by the benchmarks: interleaved rounds, medians, a markdown table.

/** BENCH_ONLY=uncontended or BENCH_ONLY=contended: whether `section` runs (all by default). */
export function wanted(section) {
  const only = process.env.BENCH_ONLY?.split(',');
  return only === undefined || only.includes(section);
}

/**
 * BENCH_COMPARE=dist/<backend>/other.js: another build's entry for the backend (a copy kept inside
 * dist, so that it finds the same core), run in the 4-process rounds beside this build's, under
 * the name COMPARED. Undefined when not asked for.
 */
export const COMPARE = process.env.BENCH_COMPARE && resolve(process.env.BENCH_COMPARE);
export const COMPARED = 'cachelock [compare]';

export const median = (values) => {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  return sorted.length % 2 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2;
};

/** Time `iterations` sequential awaits of `fn`, in microseconds per call. */
export async function perCall(fn, iterations) {
  const started = performance.now();
  for (let i = 0; i < iterations; i++) await fn();
  return ((performance.now() - started) * 1000) / iterations;
}

/**
 * Run every case once per round, in a rotating order, for `rounds` rounds; return the median of
 * each case. Interleaving spreads the machine's noise over all cases alike.
 */
export async function interleave(cases, rounds, measure) {
  const samples = new Map(cases.map((c) => [c.name, []]));
  for (let round = 0; round < rounds; round++) {
    for (let i = 0; i < cases.length; i++) {
      const c = cases[(i + round) % cases.length];
      samples.get(c.name).push(await measure(c));
    }
  }
  return new Map([...samples].map(([name, values]) => [name, median(values)]));
}

/**
 * As `interleave`, but each case's `measure` resolves `{ value, cpuUs? }` or a number, and each
 * case reports the median, the range over rounds and the median CPU time (`process.cpuUsage`)
 * per round, which moves much less with the neighbours' load than the wall clock.
 */
export async function interleaveStats(cases, rounds, measure) {
  const samples = new Map(cases.map((c) => [c.name, { values: [], cpu: [], servers: [] }]));
  for (let round = 0; round < rounds; round++) {
    for (let i = 0; i < cases.length; i++) {
      const c = cases[(i + round) % cases.length];
      const cpuBefore = process.cpuUsage();
      const result = await measure(c);
      const cpu = process.cpuUsage(cpuBefore);
      const entry = samples.get(c.name);
      const value = typeof result === 'number' ? result : result.value;
      entry.values.push(value);
      entry.cpu.push(typeof result === 'number' ? cpu.user + cpu.system : result.cpuUs);
      if (typeof result === 'object' && result.serverUs !== undefined) {
        entry.servers.push(result.serverUs);
      }
    }
  }
  return new Map(
    [...samples].map(([name, { values, cpu, servers }]) => [
      name,
      {
        median: median(values),
        min: Math.min(...values),
        max: Math.max(...values),
        values,
        cpus: cpu,
        servers,
        cpuUs: median(cpu),
      },
    ]),
  );
}

/** `1.23x (1.10-1.40)`: the median of the per-round ratios to `floor`, and their range. */
export function ratio(stats, floor) {
  const ratios = stats.values.map((value, round) => value / floor.values[round]);
  return `${fmt(median(ratios))}x (${fmt(Math.min(...ratios))}-${fmt(Math.max(...ratios))})`;
}

export function table(headers, rows) {
  const lines = [`| ${headers.join(' | ')} |`, `|${headers.map(() => '---').join('|')}|`];
  for (const row of rows) lines.push(`| ${row.join(' | ')} |`);
  return lines.join('\n');
}

export const fmt = (value, digits = 2) =>
  Number.isFinite(value) ? value.toFixed(digits) : String(value);

/**
 * One round of the semaphore case: each of `takers` (`() => Promise<release>`) loops for `ms`,
 * holding 1 ms and pausing 0-2 ms between sections, checking that at most `permits` are inside.
 * Returns the sections, the worst wait (ms) and this process's CPU time per section (us).
 */
export async function semaphoreRound(name, takers, permits, ms) {
  let sections = 0;
  let worstWait = 0;
  let inside = 0;
  const cpuBefore = process.cpuUsage();
  const stopAt = performance.now() + ms;
  await Promise.all(
    takers.map(async (take) => {
      while (performance.now() < stopAt) {
        const asked = performance.now();
        const release = await take();
        worstWait = Math.max(worstWait, performance.now() - asked);
        if (++inside > permits) throw new Error(`${name}: too many holders`);
        await sleep(1);
        inside--;
        await release();
        sections++;
        await sleep(Math.random() * 2);
      }
    }),
  );
  const cpu = process.cpuUsage(cpuBefore);
  return { sections, worstWait, cpuUs: (cpu.user + cpu.system) / sections };
}

/** The semaphore case's in-process limit: `workers` takers of one async-mutex `Semaphore`. */
export function inProcessSemaphore(permits, workers) {
  const shared = new asyncMutex.Semaphore(permits);
  return {
    takers: Array.from({ length: workers }, () => async () => {
      const [, release] = await shared.acquire();
      return release;
    }),
    close: async () => {},
  };
}

/** A taker for `semaphoreRound`: a permit of `semaphore`, and the function that releases it. */
export function permitTaker(semaphore) {
  return async () => {
    const permit = await semaphore.acquire();
    return () => permit.release();
  };
}
