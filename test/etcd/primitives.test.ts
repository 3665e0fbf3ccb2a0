import { randomBytes } from 'node:crypto';
import type { LockStore } from 'cachelock';
import { storeFromUrl } from 'cachelock/etcd';
import { afterAll, beforeAll, describe } from 'vitest';
import { EtcdCluster } from '../support/etcd-cluster.js';
import { binaryOrSkip } from '../support/reachable.js';
import { describePrimitives } from '../support/store-primitives.js';

const installed = await binaryOrSkip('etcd', 'etcd');

describe.runIf(installed)('etcd: the primitives over two stores', () => {
  let cluster: EtcdCluster;
  const stores: LockStore[] = [];

  beforeAll(async () => {
    cluster = await EtcdCluster.start(1);
    const namespace = `primitives-${randomBytes(4).toString('hex')}/`;
    for (let i = 0; i < 2; i++)
      stores.push(storeFromUrl(new URL(`${cluster.url}?namespace=${namespace}`)));
  }, 60_000);

  afterAll(async () => {
    for (const store of stores) await store.close?.();
    await cluster?.dispose();
  });

  describePrimitives(() => [stores[0]!, stores[1]!]);
});
