import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { assertExclusive, builtPackageExists, runExclusion } from '../harness/exclusion.js';
import { MemcachedServer } from '../support/memcached-server.js';
import { binaryOrSkip } from '../support/reachable.js';

/** The workers import the built package; under CI=true a missing build fails the suite. */
function built(): boolean {
  if (builtPackageExists('index.js') && builtPackageExists('memcached/index.js')) return true;
  const message = 'dist/index.js or dist/memcached/index.js missing: run `npm run build`';
  if (process.env.CI === 'true') throw new Error(`${message} (CI=true: the harness must run)`);
  console.warn(`\n!!! SKIPPING memcached multi-process exclusion: ${message} !!!\n`);
  return false;
}

const installed = await binaryOrSkip('memcached', 'memcached');

describe.runIf(installed && built())('memcached across processes', () => {
  let server: MemcachedServer;
  beforeAll(async () => {
    server = await MemcachedServer.start();
  });
  afterAll(async () => {
    await server?.kill();
  });

  it('keeps 8 processes exclusive on 2 keys, with rising fences', async () => {
    const result = await runExclusion({
      cache: server.url,
      processes: 8,
      sectionsPerProcess: 10,
      keys: 2,
    });
    assertExclusive(result);
    expect(result.sections).toBe(80);
    expect(result.perKey.reduce((sum, k) => sum + k.counter, 0)).toBe(80);
  }, 180_000);

  it('keeps 4 processes exclusive on one key with a lease of 1 s that the watchdog extends', async () => {
    const result = await runExclusion({
      cache: server.url,
      processes: 4,
      sectionsPerProcess: 3,
      keys: 1,
      ttl: '1s',
      holdMs: 500,
    });
    assertExclusive(result);
    expect(result.sections).toBe(12);
  }, 180_000);
});
