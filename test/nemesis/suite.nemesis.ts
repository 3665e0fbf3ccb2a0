import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mariadbBinaries } from '../support/mariadb-server.js';
import { binaryOrSkip, builtOrSkip } from '../support/reachable.js';
import { backends, type Deployment } from './backends.js';
import { nemeses } from './nemeses.js';
import {
  type CaseResult,
  canStepClocks,
  describeViolations,
  runCase,
  summary,
  writeHistory,
} from './runner.js';

// Each backend with its most telling nemeses for a few seconds each (at least five leases);
// `npm run nemesis` runs them for longer.
const durationMs = (leaseMs: number) => Math.max(6_000, 5 * leaseMs);

const built = builtOrSkip('nemesis', [
  'index.js',
  'redis/index.js',
  'redlock/index.js',
  'postgres/index.js',
  'mysql/index.js',
  'sqlite/index.js',
  'memcached/index.js',
  'keyv/index.js',
  'etcd/index.js',
]);
const servers: Record<string, boolean> = {
  redis: await binaryOrSkip('nemesis on Redis', 'redis-server'),
  postgres: await binaryOrSkip('nemesis on PostgreSQL', 'initdb'),
  memcached: await binaryOrSkip('nemesis on Memcached', 'memcached'),
  mysql: (await mariadbBinaries()) || (await binaryOrSkip('nemesis on MySQL', 'mariadbd')),
  etcd: await binaryOrSkip('nemesis on etcd', 'etcd'),
};
const needs = (backend: string) =>
  backend.includes('redis') || backend === 'redlock' ? servers.redis : (servers[backend] ?? true);
const clocks = canStepClocks();
if (!clocks) {
  const message = 'libfaketime is not installed (Debian: faketime)';
  if (process.env.CI === 'true')
    throw new Error(`${message} (CI=true: the clock-step nemesis must run)`);
  console.warn(`\n!!! SKIPPING the clock-step nemesis: ${message}. !!!\n`);
}

const results: CaseResult[] = [];
/** Print what a case found; keep the whole history of one that failed, to read afterwards. */
function report(result: CaseResult): void {
  if (result.violations.length + result.limited.length === 0) return;
  console.log(describeViolations(result));
  if (result.violations.length > 0) {
    const file = join(
      tmpdir(),
      `cachelock-nemesis-${result.backend}-${result.nemesis}-${Date.now()}.jsonl`.replaceAll(
        ' ',
        '-',
      ),
    );
    writeHistory(result, file);
    console.log(`  the whole history: ${file}`);
  }
}
afterAll(() => {
  if (results.length > 0) console.log(`\nnemesis summary\n${summary(results)}\n`);
});

for (const backend of backends) {
  describe.runIf(built && needs(backend.name))(`nemesis: ${backend.name}`, () => {
    let deployment: Deployment;
    beforeAll(async () => {
      deployment = await backend.start();
    });
    afterAll(async () => {
      await deployment?.stop();
    });

    for (const nemesis of backend.nemeses) {
      const runs = clocks || !nemeses[nemesis].clock;
      it.runIf(runs)(nemesis, async () => {
        const leaseMs = backend.leaseMs?.(backend.ttlMs) ?? backend.ttlMs;
        const result = await runCase({
          backend,
          deployment,
          nemesis,
          durationMs: durationMs(leaseMs),
        });
        results.push(result);
        report(result);
        expect(result.locks).toBeGreaterThan(0);
        expect(result.violations.map((v) => `${v.kind}: ${v.text}`)).toEqual([]);
      });
    }

    for (const [workload, nemesis] of backend.workloads ?? []) {
      it(`${workload}: ${nemesis}`, async () => {
        const leaseMs = backend.leaseMs?.(backend.ttlMs) ?? backend.ttlMs;
        const result = await runCase({
          backend,
          deployment,
          nemesis,
          workload,
          // Shorter than the lock cases: these add to a CI pass that is already minutes long.
          durationMs: Math.max(4_000, 5 * leaseMs),
        });
        results.push(result);
        report(result);
        expect(result.locks).toBeGreaterThan(0);
        expect(result.violations.map((v) => `${v.kind}: ${v.text}`)).toEqual([]);
      });
    }
  });
}
