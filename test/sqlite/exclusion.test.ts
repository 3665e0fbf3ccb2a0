import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { assertExclusive, runExclusion } from '../harness/exclusion.js';
import { builtOrSkip } from '../support/reachable.js';

describe.runIf(builtOrSkip('sqlite multi-process', ['index.js', 'sqlite/index.js']))(
  'sqlite store across processes (built package)',
  () => {
    const dir = mkdtempSync(join(tmpdir(), 'cachelock-sqlite-exclusion-'));
    afterAll(() => rmSync(dir, { recursive: true, force: true }));

    it('keeps 12 processes exclusive on one key of a file none of them created', async () => {
      // A folder that does not exist yet: the processes race to create it, the file and the tables.
      const result = await runExclusion({
        cache: `sqlite:${join(dir, 'new', 'locks.sqlite')}`,
        processes: 12,
        sectionsPerProcess: 8,
        keys: 1,
        holdMs: 2,
      });
      assertExclusive(result);
      expect(result.sections).toBe(96);
      expect(result.perKey[0]!.counter).toBe(96);
    }, 180_000);
  },
);
