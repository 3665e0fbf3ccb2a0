import { randomBytes } from 'node:crypto';
import { describe } from 'vitest';
import { serverOrSkip } from '../support/reachable.js';
import { cliSuite } from './suite.js';

// The shared server, with a key prefix of this run's own.
const reachable = await serverOrSkip('PostgreSQL', 5432);

describe.runIf(reachable)('postgres', () => {
  cliSuite({
    name: 'PostgreSQL',
    args: [
      '--cache',
      'postgres://postgres@127.0.0.1:5432/test',
      '--prefix',
      `cachelock-cli-test-${randomBytes(4).toString('hex')}:`,
    ],
    env: {},
  });
});
