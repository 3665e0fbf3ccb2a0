import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { builtOrSkip, serverOrSkip } from '../support/reachable.js';
import { compile, readRuns, type Started, startNode, stop, tally } from './run.js';

const runs =
  (await serverOrSkip('Redis', 6379)) && builtOrSkip('example', ['index.js', 'nestjs/index.d.ts']);

describe.runIf(runs)(
  'examples/nestjs-cron: two instances sharing Redis through CacheModule',
  () => {
    const dir = mkdtempSync(join(tmpdir(), 'cachelock-nestjs-cron-'));
    const started: Started[] = [];
    afterAll(async () => {
      await Promise.all(started.map(stop));
      rmSync(dir, { recursive: true, force: true });
    });

    it('runs each @Cron tick exactly once across both instances over ten seconds', async () => {
      compile('examples/nestjs-cron');
      const log = join(dir, 'runs.jsonl');
      const env = {
        RUN_LOG: log,
        RUN_FOR: '11',
        CACHE_NAMESPACE: `cl-test-${randomBytes(4).toString('hex')}`,
      };
      for (const name of ['a', 'b']) {
        started.push(
          startNode('examples/nestjs-cron/dist/main.js', [], { ...env, INSTANCE: name }),
        );
      }
      await Promise.all(started.map((s) => s.waitFor(/started/)));
      const codes = await Promise.all(started.map((s) => s.exited));
      expect(codes, started.map((s) => s.output()).join('\n')).toEqual([0, 0]);

      const records = readRuns(log);
      const { twice, seconds } = tally(records);
      expect(twice).toEqual([]);
      // Every second from the first run to the last ran (one tick per second, none skipped by
      // both instances), over about ten seconds.
      const first = seconds[0]!;
      const last = seconds.at(-1)!;
      expect(last - first).toBeGreaterThanOrEqual(8);
      expect(seconds).toEqual(Array.from({ length: last - first + 1 }, (_, i) => first + i));
      // Both instances scheduled every tick the whole time (both said they started, and both
      // ran until the end); which one wins a tick is a race, so it is not counted.
      console.log(
        `nestjs-cron: ${records.length} runs in ${seconds.length} seconds`,
        Object.fromEntries(
          ['a', 'b'].map((n) => [n, records.filter((r) => r.instance === n).length]),
        ),
      );
    }, 60_000);
  },
);
