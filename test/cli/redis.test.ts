import { randomBytes } from 'node:crypto';
import { describe } from 'vitest';
import { serverOrSkip } from '../support/reachable.js';
import { cliSuite } from './suite.js';

// The shared server, with a key prefix of this run's own.
const reachable = await serverOrSkip('Redis', 6379);

describe.runIf(reachable)('redis', () => {
  cliSuite({
    name: 'Redis',
    args: [
      '--cache',
      'redis://127.0.0.1:6379',
      '--prefix',
      `cachelock-cli-test-${randomBytes(4).toString('hex')}:`,
    ],
    env: {},
  });
});
