import { randomBytes } from 'node:crypto';
import { Lock } from 'cachelock';
import { etcdStore } from 'cachelock/etcd';
import { Etcd3 } from 'etcd3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { EtcdCluster } from '../support/etcd-cluster.js';
import { binaryOrSkip } from '../support/reachable.js';

const installed = await binaryOrSkip('etcd', 'etcd');
const namespace = `several-${randomBytes(4).toString('hex')}/`;
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

// Several keys are taken in one transaction; single-key waiters stand in each key's line, and
// the key goes to them first when its holder leaves.
describe.runIf(installed)('several keys on etcd beside single-key locks', () => {
  let cluster: EtcdCluster;
  let client: Etcd3;

  beforeAll(async () => {
    cluster = await EtcdCluster.start(1);
    client = new Etcd3({ hosts: cluster.hosts });
  }, 60_000);

  afterAll(async () => {
    client?.close();
    await cluster?.dispose();
  });

  it('a set waiting for its keys holds none of them meanwhile', async () => {
    const cache = etcdStore(client, { namespace });
    try {
      const held = await new Lock('b', { cache, ttl: '20s' }).acquire();
      const both = new Lock(['a', 'b'], { cache, ttl: '20s', wait: '15s' }).acquire();
      await sleep(500); // refused: b is held
      const a = await new Lock('a', { cache, ttl: '20s', wait: '5s' }).acquire();
      await held.release(); // b is free, but a is held: the set takes neither
      await sleep(1_000);
      const b = new Lock('b', { cache, ttl: '20s' });
      expect(await b.tryAcquire()).toBe(true);
      await b.release();
      await a.release();
      const got = await both;
      expect([...got.fences.keys()]).toEqual(['a', 'b']);
      await got.release();
    } finally {
      await cache.close?.();
    }
  }, 60_000);

  it('a lock on more keys than one transaction takes gets them all, one at a time, and leaves nothing', async () => {
    const cache = etcdStore(client, { namespace });
    try {
      const keys = Array.from({ length: 100 }, (_, i) => `wide-${i}`);
      const wide = await Lock.acquire(keys, { cache, ttl: '20s' });
      expect([...wide.fences.keys()]).toEqual(keys);
      expect([...wide.fences.values()].every((fence) => typeof fence === 'bigint')).toBe(true);
      // Each key is held, alone and in a set of the transaction's kind.
      expect(await new Lock('wide-99', { cache }).tryAcquire()).toBe(false);
      expect(await new Lock(['wide-0', 'narrow'], { cache }).tryAcquire()).toBe(false);
      await wide.extend('30s');
      expect(await wide.release()).toBe(true);
      const narrow = await Lock.acquire(['wide-0', 'wide-99'], { cache, ttl: '20s' });
      expect(await narrow.release()).toBe(true);
      const left = await client.getAll().prefix(`${namespace}wide-`).keys();
      expect(left).toEqual([]);
    } finally {
      await cache.close?.();
    }
  }, 60_000);
});
