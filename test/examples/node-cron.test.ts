import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { builtOrSkip, serverOrSkip } from '../support/reachable.js';
import { readRuns, type Started, startNode, stop, tally } from './run.js';

const runs = (await serverOrSkip('Redis', 6379)) && builtOrSkip('example', ['index.js']);

describe.runIf(runs)('examples/node-cron: two processes on Redis', () => {
  const dir = mkdtempSync(join(tmpdir(), 'cachelock-node-cron-'));
  const started: Started[] = [];
  afterAll(async () => {
    await Promise.all(started.map(stop));
    rmSync(dir, { recursive: true, force: true });
  });

  it('runs each tick once across both processes', async () => {
    const log = join(dir, 'runs.jsonl');
    const env = {
      CACHELOCK_URL: 'redis://127.0.0.1:6379',
      LOCK_PREFIX: `cl-test-${randomBytes(4).toString('hex')}:`,
      RUN_LOG: log,
      RUN_FOR: '6',
    };
    for (const name of ['a', 'b']) {
      started.push(startNode('examples/node-cron/job.mjs', [], { ...env, INSTANCE: name }));
    }
    const codes = await Promise.all(started.map((s) => s.exited));
    expect(codes, started.map((s) => s.output()).join('\n')).toEqual([0, 0]);
    const records = readRuns(log);
    const { twice, seconds } = tally(records);
    expect(twice).toEqual([]);
    expect(seconds.length).toBeGreaterThanOrEqual(4);
    expect(seconds).toEqual(Array.from({ length: seconds.length }, (_, i) => seconds[0]! + i));
    // Both schedules ran beside each other the whole time. Which process wins a tick is a race
    // (one whose timer fires a little earlier each second may win them all), so it is not counted.
    for (const [i, name] of ['a', 'b'].entries()) {
      expect(started[i]!.output()).toContain(`${name} started`);
    }
  }, 30_000);
});
