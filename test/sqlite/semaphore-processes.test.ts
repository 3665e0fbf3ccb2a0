import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { runSemaphore } from '../harness/semaphore.js';
import { builtOrSkip } from '../support/reachable.js';

describe.runIf(builtOrSkip('sqlite semaphore multi-process', ['index.js', 'sqlite/index.js']))(
  'sqlite permits across processes (built package)',
  () => {
    const dir = mkdtempSync(join(tmpdir(), 'cachelock-sqlite-semaphore-'));
    afterAll(() => rmSync(dir, { recursive: true, force: true }));

    it('8 processes share a semaphore of 3 in one file: never more than 3 inside, all finish', async () => {
      const result = await runSemaphore({
        cache: `sqlite:${join(dir, 'locks.sqlite')}`,
        permits: 3,
        processes: 8,
      });
      expect(result.entered).toBe(result.expectedSections);
      expect(result.left).toBe(result.expectedSections);
      expect(result.most).toBeLessThanOrEqual(3);
      expect(result.most).toBeGreaterThan(1);
    }, 180_000);
  },
);
