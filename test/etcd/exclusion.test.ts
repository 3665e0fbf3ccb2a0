import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { assertExclusive, runExclusion } from '../harness/exclusion.js';
import { runSemaphore } from '../harness/semaphore.js';
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

    it('8 processes share a semaphore of 3: never more than 3 inside, all finish', async () => {
      const namespace = `semaphore-${randomBytes(4).toString('hex')}/`;
      const result = await runSemaphore({
        cache: `${cluster.url}&namespace=${namespace}`,
        permits: 3,
        processes: 8,
      });
      expect(result.entered).toBe(result.expectedSections);
      expect(result.left).toBe(result.expectedSections);
      expect(result.most).toBeLessThanOrEqual(3);
      // The processes did contend: more than one was inside at some point.
      expect(result.most).toBeGreaterThan(1);
    }, 180_000);
  },
);
