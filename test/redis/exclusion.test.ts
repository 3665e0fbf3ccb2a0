import { describe, expect, it } from 'vitest';
import { assertExclusive, runExclusion } from '../harness/exclusion.js';
import { builtOrSkip, serverOrSkip } from '../support/reachable.js';

const runs =
  (await serverOrSkip('Redis', 6379)) &&
  builtOrSkip('Redis multi-process', ['index.js', 'redis/index.js']);

describe.runIf(runs)('redis across 8 processes', () => {
  it('keeps hundreds of sections on 2 keys exclusive, with rising fences and no lost update', async () => {
    // The harness's keys are unique per run, so the shared server is fine here.
    const result = await runExclusion({
      cache: 'redis://127.0.0.1:6379',
      processes: 8,
      sectionsPerProcess: 40,
      keys: 2,
      holdMs: 2,
    });
    assertExclusive(result);
    expect(result.sections).toBe(320);
    expect(result.perKey.reduce((sum, k) => sum + k.counter, 0)).toBe(320);
    expect(result.fenceInversions).toEqual([]);
  }, 180_000);
});
