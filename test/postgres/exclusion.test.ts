import { randomBytes } from 'node:crypto';
import pg from 'pg';
import { afterAll, describe, expect, it } from 'vitest';
import { assertExclusive, runExclusion } from '../harness/exclusion.js';
import { builtOrSkip, serverOrSkip } from '../support/reachable.js';

const reachable = await serverOrSkip('PostgreSQL', 5432);

describe.runIf(
  reachable && builtOrSkip('postgres multi-process', ['index.js', 'postgres/index.js']),
)('postgres store across processes (built package)', () => {
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
