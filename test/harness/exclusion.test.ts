import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';
import { builtOrSkip } from '../support/reachable.js';
import {
  assertExclusive,
  checkExclusion,
  type ExclusionResult,
  runExclusion,
  type Section,
} from './exclusion.js';

function section(
  process: number,
  key: string,
  enter: number,
  exit: number,
  fence?: number,
): Section {
  return {
    process,
    section: 0,
    key,
    enter: BigInt(enter),
    exit: BigInt(exit),
    fence: fence === undefined ? undefined : BigInt(fence),
    released: true,
  };
}

describe('exclusion checker', () => {
  const counters = (entries: [string, number][]) => new Map(entries);

  it('accepts sections that follow one another, per key', () => {
    const verdict = checkExclusion(
      [
        section(0, 'a', 0, 10, 1),
        section(1, 'a', 11, 20, 2),
        section(2, 'b', 5, 15, 1),
        section(3, 'a', 21, 30, 3),
      ],
      counters([
        ['a', 3],
        ['b', 1],
      ]),
    );
    expect(verdict).toEqual({ overlaps: [], lostUpdates: [], fenceInversions: [], lostLeases: [] });
  });

  it('finds an overlap, even one hidden behind a shorter section in between', () => {
    const long = section(0, 'a', 0, 100);
    const verdict = checkExclusion(
      [long, section(1, 'a', 101, 110), section(2, 'a', 50, 60)],
      counters([['a', 3]]),
    );
    expect(verdict.overlaps).toHaveLength(1);
    expect(verdict.overlaps[0]).toMatchObject({ first: long, second: { process: 2 } });
  });

  it('counts touching sections (exit == enter) as overlapping', () => {
    const verdict = checkExclusion(
      [section(0, 'a', 0, 10), section(1, 'a', 10, 20)],
      counters([['a', 2]]),
    );
    expect(verdict.overlaps).toHaveLength(1);
  });

  it('finds lost updates, fence inversions and lost leases', () => {
    const lost = { ...section(2, 'a', 30, 40, 3), released: false };
    const verdict = checkExclusion(
      [section(0, 'a', 0, 10, 5), section(1, 'a', 20, 25, 4), lost],
      counters([
        ['a', 2],
        ['c', 1],
      ]),
    );
    expect(verdict.lostUpdates).toEqual([
      { key: 'a', sections: 3, counter: 2 },
      { key: 'c', sections: 0, counter: 1 },
    ]);
    expect(verdict.fenceInversions.map((f) => f.second.fence)).toEqual([4n, 3n]);
    expect(verdict.lostLeases).toEqual([lost]);
  });
});

describe('multi-process exclusion harness', () => {
  const temp = mkdtempSync(join(tmpdir(), 'cachelock-exclusion-test-'));
  afterAll(() => rmSync(temp, { recursive: true, force: true }));

  it('reports overlaps and lost updates when the workers skip the lock', async () => {
    const result = await runExclusion({
      cache: 'memory:',
      mode: 'unlocked',
      processes: 4,
      sectionsPerProcess: 10,
      keys: 1,
      holdMs: 20,
    });
    expect(result.sections).toBe(40);
    expect(result.overlaps.length).toBeGreaterThan(0);
    expect(result.lostUpdates).toHaveLength(1);
    // The four first sections all read 0 before any writes, so at least three updates are lost.
    expect(result.lostUpdates[0]!.counter).toBeLessThanOrEqual(37);
    expect(() => assertExclusive(result)).toThrow(/overlap on .*lost update/s);
  }, 120_000);

  it.runIf(builtOrSkip('multi-process exclusion', ['index.js']))(
    "fails with the first worker's error when the workers cannot lock",
    async () => {
      await expect(
        runExclusion({
          cache: 'nope://127.0.0.1/',
          processes: 3,
          sectionsPerProcess: 2,
          timeoutMs: 60_000,
        }),
      ).rejects.toThrow(/exited with 1:[\s\S]*unknown URL scheme "nope:"/);
    },
    90_000,
  );

  it.runIf(builtOrSkip('multi-process exclusion', ['index.js', 'sqlite/index.js']))(
    'keeps 8 processes exclusive on 2 keys through a sqlite: file',
    async () => {
      const url = `sqlite:${pathToFileURL(join(temp, 'locks.sqlite')).pathname}`;
      const result: ExclusionResult = await runExclusion({
        cache: url,
        processes: 8,
        sectionsPerProcess: 10,
        keys: 2,
      });
      assertExclusive(result);
      expect(result.sections).toBe(80);
      expect(result.perKey.reduce((sum, k) => sum + k.counter, 0)).toBe(80);
    },
    180_000,
  );
});
