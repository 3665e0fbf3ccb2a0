import { memcachedStore } from 'cachelock/memcached';
import { runConformance } from 'cachelock/testing';
import { afterAll, beforeAll, describe, it } from 'vitest';
import { MemcachedServer } from '../support/memcached-server.js';
import { binaryOrSkip } from '../support/reachable.js';

const installed = await binaryOrSkip('memcached', 'memcached');

describe.runIf(installed)('memcached store', () => {
  let server: MemcachedServer;
  beforeAll(async () => {
    server = await MemcachedServer.start();
  });
  afterAll(async () => {
    await server?.kill();
  });

  // Memcached's expiry is whole seconds, so the suite's expiry cases use a 1 s lease.
  runConformance({
    name: 'conformance',
    describe,
    it,
    makeStore: () => memcachedStore(server.url),
    leaseMs: 1000,
  });
});
