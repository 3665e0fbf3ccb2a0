import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { assertExclusive, runExclusion } from '../harness/exclusion.js';
import { EtcdCluster } from '../support/etcd-cluster.js';
import { binaryOrSkip, builtOrSkip } from '../support/reachable.js';

const installed = await binaryOrSkip('etcd', 'etcd');

describe.runIf(installed && builtOrSkip('etcd multi-process', ['index.js', 'etcd/index.js']))(
  'etcd store across processes (built package)',
  () => {
    let cluster: EtcdCluster;

    beforeAll(async () => {
      cluster = await EtcdCluster.start(3);
    }, 60_000);

    afterAll(async () => {
      await cluster?.dispose();
    });

    it('keeps 8 processes exclusive on 2 keys, fences rising, over a 3-member cluster', async () => {
      const namespace = `exclusion-${randomBytes(4).toString('hex')}/`;
      const result = await runExclusion({
        // Every member named, as a user would.
        cache: `${cluster.url}&namespace=${namespace}`,
        processes: 8,
        sectionsPerProcess: 10,
        keys: 2,
      });
      assertExclusive(result);
      expect(result.sections).toBe(80);
      expect(result.perKey.reduce((sum, k) => sum + k.counter, 0)).toBe(80);
    }, 180_000);
  },
);
