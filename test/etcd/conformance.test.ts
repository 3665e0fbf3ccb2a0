import { randomBytes } from 'node:crypto';
import { etcdStore, storeFromUrl } from 'cachelock/etcd';
import { runConformance } from 'cachelock/testing';
import { Etcd3 } from 'etcd3';
import { afterAll, beforeAll, describe, it } from 'vitest';
import { EtcdCluster } from '../support/etcd-cluster.js';
import { binaryOrSkip } from '../support/reachable.js';

// A throwaway 3-member cluster; each run's keys under a namespace of its own.
const installed = await binaryOrSkip('etcd', 'etcd');
const namespace = `conformance-${randomBytes(4).toString('hex')}/`;
// etcd leases count whole seconds; the test cluster grants leases down to 1 s.
const leaseMs = 1_000;

describe.runIf(installed)('etcd store on a 3-member cluster', () => {
  let cluster: EtcdCluster;
  let client: Etcd3;

  beforeAll(async () => {
    cluster = await EtcdCluster.start(3);
    client = new Etcd3({ hosts: cluster.hosts });
  });

  afterAll(async () => {
    client?.close();
    await cluster?.dispose();
  });

  runConformance({
    name: 'on an etcd:// URL (the JSON gateway, no client library)',
    describe,
    it,
    leaseMs,
    makeStore: () => storeFromUrl(new URL(`${cluster.url}&namespace=${namespace}`)),
  });
  runConformance({
    name: 'on an etcd3 client',
    describe,
    it,
    leaseMs,
    makeStore: () => etcdStore(client, { namespace }),
  });
  runConformance({
    name: 'on an etcd3 namespace, without watches (polling)',
    describe,
    it,
    leaseMs,
    makeStore: () => etcdStore(client.namespace(namespace), { watch: false }),
  });
});
