// Small helpers shared by the benchmarks: interleaved rounds, medians, a markdown table.

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
  const samples = new Map(cases.map((c) => [c.name, { values: [], cpu: [] }]));
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
    }
  }
  return new Map(
    [...samples].map(([name, { values, cpu }]) => [
      name,
      {
        median: median(values),
        min: Math.min(...values),
        max: Math.max(...values),
        values,
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
