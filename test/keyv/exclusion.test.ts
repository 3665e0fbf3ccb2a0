import { randomBytes } from 'node:crypto';
import { fileURLToPath } from 'node:url';
import { afterEach, describe, expect, it } from 'vitest';
import { assertExclusive, runExclusion } from '../harness/exclusion.js';
import { builtOrSkip, serverOrSkip } from '../support/reachable.js';

const runs =
  (await serverOrSkip('Redis', 6379)) &&
  builtOrSkip('Keyv multi-process', ['index.js', 'keyv/index.js']);
const preload = fileURLToPath(new URL('./fixtures/keyv-scheme.mjs', import.meta.url));

describe.runIf(runs)('keyv + @keyv/redis across 6 processes', () => {
  const nodeOptions = process.env.NODE_OPTIONS;
  afterEach(() => {
    if (nodeOptions === undefined) delete process.env.NODE_OPTIONS;
    else process.env.NODE_OPTIONS = nodeOptions;
  });

  it('keeps sections on 2 keys exclusive, with rising fences and no lost update', async () => {
    // The harness forks its workers with this process's environment.
    process.env.NODE_OPTIONS = `${nodeOptions ?? ''} --import ${preload}`.trim();
    const namespace = `cl-test-${randomBytes(4).toString('hex')}`;
    const result = await runExclusion({
      cache: `keyv+redis://127.0.0.1:6379/?namespace=${namespace}`,
      processes: 6,
      sectionsPerProcess: 30,
      keys: 2,
      holdMs: 2,
    });
    assertExclusive(result);
    expect(result.sections).toBe(180);
    expect(result.perKey.reduce((sum, k) => sum + k.counter, 0)).toBe(180);
    expect(result.fenceInversions).toEqual([]);
  }, 180_000);
});
