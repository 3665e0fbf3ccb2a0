import { execFile } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { runConformance } from 'cachelock/testing';
import { describe, expect, it } from 'vitest';
import { builtOrSkip } from '../support/reachable.js';

const root = fileURLToPath(new URL('../../', import.meta.url));
const file = fileURLToPath(new URL('./node-test-runner.mjs', import.meta.url));

/** Run the file under `node --test` and read the TAP summary. */
function nodeTest(
  env: Record<string, string>,
): Promise<{ pass: number; fail: number; output: string }> {
  return new Promise((resolve) => {
    execFile(
      process.execPath,
      ['--test', '--test-reporter=tap', file],
      { cwd: root, env: { ...process.env, ...env }, timeout: 120_000 },
      (_error, stdout, stderr) => {
        const count = (name: string) =>
          Number(new RegExp(`^# ${name} (\\d+)$`, 'm').exec(stdout)?.[1] ?? Number.NaN);
        resolve({ pass: count('pass'), fail: count('fail'), output: stdout + stderr });
      },
    );
  });
}

const caseCount = (() => {
  let count = 0;
  runConformance({
    name: 'count',
    describe: (_n, body) => body(),
    it: () => void count++,
    makeStore: () => ({}) as never,
  });
  return count;
})();

describe.runIf(builtOrSkip('node:test conformance', ['index.js', 'testing/index.js']))(
  'conformance suite under node:test (built package)',
  () => {
    it('runs every case and passes against the memory store', async () => {
      const { pass, fail, output } = await nodeTest({});
      expect(fail, output).toBe(0);
      expect(pass, output).toBe(caseCount);
    }, 130_000);

    it('fails against a store whose release ignores the owner', async () => {
      const { pass, fail, output } = await nodeTest({ CONFORMANCE_BROKEN: '1' });
      expect(fail, output).toBeGreaterThan(0);
      expect(pass + fail, output).toBe(caseCount);
    }, 130_000);
  },
);
