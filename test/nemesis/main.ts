/**
 * `npm run nemesis -- [--backend redis] [--nemesis pause] [--duration 10m] [--workers 5]
 *   [--workload lock|semaphore|rw] [--keep DIR]` (the workload: one lock, a semaphore of 2,
 *   readers/writers; DIR: where each case with a violation leaves its whole history)
 * Without --backend, every backend; without --nemesis, each backend's CI set. Both repeat. Prints the
 * summary table and every violation; exits 1 when a violation is not a documented limit.
 */
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { type Backend, backendNamed, backends } from './backends.js';
import type { NemesisName } from './nemeses.js';
import { type CaseResult, describeViolations, runCase, summary, writeHistory } from './runner.js';

const { values } = parseArgs({
  options: {
    backend: { type: 'string', multiple: true },
    nemesis: { type: 'string', multiple: true },
    duration: { type: 'string', default: '6s' },
    workers: { type: 'string' },
    workload: { type: 'string', default: 'lock' },
    keep: { type: 'string' },
  },
});

function parseDuration(text: string): number {
  const match = /^(\d+(?:\.\d+)?)(ms|s|m|h)?$/.exec(text);
  if (!match) throw new Error(`--duration: expected 30s, 10m, 1h or milliseconds, got ${text}`);
  const unit = { ms: 1, s: 1_000, m: 60_000, h: 3_600_000 }[match[2] ?? 'ms']!;
  return Number(match[1]) * unit;
}

/**
 * A nemesis by name, or every one this backend can take whose name starts with it (`pause`:
 * pause-holder, pause-waiter, pause-server), or `all` of them.
 */
function expand(backend: Backend, name: string): NemesisName[] {
  if (name === 'none') return ['none'];
  const matching = backend.possible.filter(
    (n) => name === 'all' || n === name || n.startsWith(`${name}-`),
  );
  if (matching.length === 0) {
    throw new Error(
      `${backend.name} cannot take ${name}; it can take ${backend.possible.join(', ')} (or none, all)`,
    );
  }
  return matching;
}

const durationMs = parseDuration(values.duration!);
const workload = values.workload as 'lock' | 'semaphore' | 'rw';
if (!['lock', 'semaphore', 'rw'].includes(workload)) {
  throw new Error(`--workload: expected lock, semaphore or rw, got ${workload}`);
}
const chosen: Backend[] = values.backend ? values.backend.map(backendNamed) : backends;
const results: CaseResult[] = [];
const started = performance.now();
for (const backend of chosen) {
  const names = values.nemesis
    ? values.nemesis.flatMap((name) => expand(backend, name))
    : backend.nemeses;
  const deployment = await backend.start();
  try {
    for (const nemesis of names) {
      const result = await runCase({
        backend,
        deployment,
        nemesis,
        durationMs,
        workload,
        workers: values.workers === undefined ? undefined : Number(values.workers),
      });
      results.push(result);
      console.log(
        `${backend.name} / ${nemesis}: ${result.locks} locks, ${result.faults} faults, ${result.violations.length} violations`,
      );
    }
  } finally {
    await deployment.stop();
  }
}
console.log(`\n${summary(results)}\n`);
for (const result of results.filter((r) => r.violations.length + r.limited.length > 0)) {
  console.log(describeViolations(result));
  if (values.keep !== undefined && result.violations.length > 0) {
    mkdirSync(values.keep, { recursive: true });
    const file = join(values.keep, `${result.backend}-${result.nemesis}-${Date.now()}.jsonl`);
    writeHistory(result, file);
    console.log(`  history: ${file}`);
  }
}
console.log(`\nwall time ${((performance.now() - started) / 1_000).toFixed(0)} s`);
process.exitCode = results.some((r) => r.violations.length > 0) ? 1 : 0;
