import { describe, expect, it } from 'vitest';
import { assertExclusive, builtPackageExists, runExclusion } from '../harness/exclusion.js';
import { serverOrSkip } from '../support/reachable.js';

// The workers import the built package, as a user's processes would.
function builtOrSkip(): boolean {
  if (builtPackageExists('index.js') && builtPackageExists('redis/index.js')) return true;
  const message = 'dist/redis/index.js missing: run `npm run build` (npm test does)';
  if (process.env.CI === 'true') throw new Error(`${message} (CI=true: the harness must run)`);
  console.warn(`\n!!! SKIPPING the Redis multi-process test: ${message} !!!\n`);
  return false;
}

const runs = (await serverOrSkip('Redis', 6379)) && builtOrSkip();

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
