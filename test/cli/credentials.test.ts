import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { closedPort } from '../support/reachable.js';
import { RedisServer } from '../support/redis-server.js';
import { assertBuilt, cachelock, uniqueKey } from './bin.js';

// Distinctive, so that finding it anywhere on stderr means it leaked.
const PASSWORD = 's3cr3t-Pa55';

beforeAll(assertBuilt);

describe('the command never prints a cache password', () => {
  const bad = `redis://user:${PASSWORD}@[not-a-host`;

  it('a malformed --cache URL', async () => {
    const result = await cachelock(['status', uniqueKey('pw'), '--cache', bad]);
    expect(result.code).toBe(64);
    expect(result.stderr).toContain('redis://user:***@[not-a-host');
    expect(result.stderr + result.stdout).not.toContain(PASSWORD);
  });

  it('a malformed CACHELOCK_URL', async () => {
    const result = await cachelock(['run', uniqueKey('pw'), '--', 'true'], { CACHELOCK_URL: bad });
    expect(result.code).toBe(64);
    expect(result.stderr).toContain('CACHELOCK_URL');
    expect(result.stderr + result.stdout).not.toContain(PASSWORD);
  });

  it('a cache where nothing listens', async () => {
    const port = await closedPort();
    const result = await cachelock([
      'status',
      uniqueKey('pw'),
      '--cache',
      `postgres://postgres:${PASSWORD}@127.0.0.1:${port}/test`,
    ]);
    expect(result.code).toBe(69);
    expect(result.stderr).toContain(`127.0.0.1:${port}`);
    expect(result.stderr + result.stdout).not.toContain(PASSWORD);
  });

  describe('a Redis server that refuses the password', () => {
    let server: RedisServer;
    beforeAll(async () => {
      server = await RedisServer.start(['--requirepass', 'the-right-one-Q7']);
    });
    afterAll(async () => {
      await server?.dispose();
    });

    it('run and release --force report WRONGPASS without it', async () => {
      const cache = `redis://:${PASSWORD}@127.0.0.1:${server.port}`;
      for (const args of [
        ['run', uniqueKey('pw'), '--cache', cache, '--', 'true'],
        ['release', uniqueKey('pw'), '--force', '--cache', cache],
      ]) {
        const result = await cachelock(args);
        expect(result.code).toBe(69);
        expect(result.stderr).toContain('WRONGPASS');
        expect(result.stderr + result.stdout).not.toContain(PASSWORD);
      }
    });
  });
});
