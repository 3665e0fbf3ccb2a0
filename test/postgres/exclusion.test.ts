import { randomBytes } from 'node:crypto';
import pg from 'pg';
import { afterAll, describe, expect, it } from 'vitest';
import { assertExclusive, builtPackageExists, runExclusion } from '../harness/exclusion.js';
import { serverOrSkip } from '../support/reachable.js';

const reachable = await serverOrSkip('PostgreSQL', 5432);

/** The workers import the built package; under CI=true its absence fails. */
function built(): boolean {
  if (builtPackageExists('index.js') && builtPackageExists('postgres/index.js')) return true;
  const message = 'dist/ is missing: run `npm run build` (npm test does)';
  if (process.env.CI === 'true') throw new Error(`${message} (CI=true: the harness must run)`);
  console.warn(`\n!!! SKIPPING postgres multi-process exclusion: ${message} !!!\n`);
  return false;
}

describe.runIf(reachable && built())('postgres store across processes (built package)', () => {
  // A table of this run's own, which the processes race to create.
  const table = `cachelock_exclusion_${randomBytes(4).toString('hex')}`;
  const url = `postgres://postgres@127.0.0.1:5432/test?table=${table}`;

  afterAll(async () => {
    const pool = new pg.Pool({ connectionString: 'postgres://postgres@127.0.0.1:5432/test' });
    await pool.query(`DROP TABLE IF EXISTS "${table}"`);
    await pool.end();
  });

  it('keeps 8 processes exclusive on 2 keys, fences rising', async () => {
    const result = await runExclusion({
      cache: url,
      processes: 8,
      sectionsPerProcess: 10,
      keys: 2,
    });
    assertExclusive(result);
    expect(result.sections).toBe(80);
    expect(result.perKey.reduce((sum, k) => sum + k.counter, 0)).toBe(80);
  }, 180_000);
});
