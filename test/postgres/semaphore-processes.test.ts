import { randomBytes } from 'node:crypto';
import pg from 'pg';
import { afterAll, describe, expect, it } from 'vitest';
import { mostInside, runSemaphore, type SemaphoreEvent } from '../harness/semaphore.js';
import { builtOrSkip, serverOrSkip } from '../support/reachable.js';

const reachable = await serverOrSkip('PostgreSQL', 5432);

describe('semaphore log replay', () => {
  const event = (process: number, kind: 'enter' | 'leave', at: number): SemaphoreEvent => ({
    process,
    section: 0,
    event: kind,
    at: BigInt(at),
  });

  it('counts who is inside at once, a leave before an enter at the same instant', () => {
    const events = [
      event(0, 'enter', 0),
      event(1, 'enter', 1),
      event(2, 'enter', 2),
      event(0, 'leave', 5),
      event(3, 'enter', 5),
      event(1, 'leave', 6),
    ];
    expect(mostInside(events)).toBe(3);
    expect(mostInside([...events, event(4, 'enter', 3)])).toBe(4);
  });
});

describe.runIf(
  reachable && builtOrSkip('postgres semaphore multi-process', ['index.js', 'postgres/index.js']),
)('postgres permits across processes (built package)', () => {
  const table = `cachelock_semaphore_${randomBytes(4).toString('hex')}`;
  const url = `postgres://postgres@127.0.0.1:5432/test?table=${table}`;

  afterAll(async () => {
    const pool = new pg.Pool({ connectionString: 'postgres://postgres@127.0.0.1:5432/test' });
    await pool.query(`DROP TABLE IF EXISTS "${table}", "${table}_shared"`);
    await pool.end();
  });

  it('8 processes share a semaphore of 3: never more than 3 inside, all finish', async () => {
    const result = await runSemaphore({ cache: url, permits: 3, processes: 8 });
    expect(result.entered).toBe(result.expectedSections);
    expect(result.left).toBe(result.expectedSections);
    expect(result.most).toBeLessThanOrEqual(3);
    // The processes did contend: more than one was inside at some point.
    expect(result.most).toBeGreaterThan(1);
  }, 180_000);
});
