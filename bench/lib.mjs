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

export function table(headers, rows) {
  const lines = [`| ${headers.join(' | ')} |`, `|${headers.map(() => '---').join('|')}|`];
  for (const row of rows) lines.push(`| ${row.join(' | ')} |`);
  return lines.join('\n');
}

export const fmt = (value, digits = 2) =>
  Number.isFinite(value) ? value.toFixed(digits) : String(value);
