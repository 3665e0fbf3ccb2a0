import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { assertExclusive, runExclusion } from '../harness/exclusion.js';
import { MemcachedServer } from '../support/memcached-server.js';
import { binaryOrSkip, builtOrSkip } from '../support/reachable.js';

const installed = await binaryOrSkip('memcached', 'memcached');

describe.runIf(
  installed && builtOrSkip('memcached multi-process', ['index.js', 'memcached/index.js']),
)('memcached across processes', () => {
  let server: MemcachedServer;
  beforeAll(async () => {
    server = await MemcachedServer.start();
  });
  afterAll(async () => {
    await server?.kill();
  });

  it('keeps 8 processes exclusive on 2 keys (memcached gives no fences)', async () => {
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
