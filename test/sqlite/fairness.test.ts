import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { runFairness } from '../harness/fairness.js';
import { builtOrSkip } from '../support/reachable.js';

describe.runIf(builtOrSkip('sqlite fairness', ['index.js', 'sqlite/index.js']))(
  'sqlite waiters across processes (built package)',
  () => {
    const dir = mkdtempSync(join(tmpdir(), 'cachelock-sqlite-fairness-'));
    afterAll(() => rmSync(dir, { recursive: true, force: true }));

    it('5 processes cycling on one key are served first come, first served: none is starved', async () => {
      const result = await runFairness({ cache: `sqlite:${join(dir, 'locks.sqlite')}` });
      console.log('sqlite fairness', result);
      expect(result.sections).toHaveLength(5);
      // In turn, each process gets about a fifth; a process that could be passed over gets less.
      const mean = result.sections.reduce((a, b) => a + b, 0) / 5;
      for (const sections of result.sections) expect(sections).toBeGreaterThan(mean * 0.5);
      // Its turn comes after the four others' (10 ms each): seconds only on a starving store.
      expect(result.worstWaitMs).toBeLessThan(2_000);
    }, 120_000);
  },
);
