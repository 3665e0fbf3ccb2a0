import { randomBytes } from 'node:crypto';
import { etcdStore } from 'cachelock/etcd';
import { Etcd3 } from 'etcd3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { EtcdCluster } from '../support/etcd-cluster.js';
import { binaryOrSkip } from '../support/reachable.js';

const installed = await binaryOrSkip('etcd', 'etcd');
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
const b64 = (text: string) => Buffer.from(text).toString('base64');

async function until(done: () => boolean, ms: number): Promise<boolean> {
  const deadline = performance.now() + ms;
  while (!done() && performance.now() < deadline) await sleep(50);
  return done();
}

// The etcd3 client resumes a watch from the last revision it saw; when that revision was
// compacted while the client was cut off, etcd cancels the watch instead.
describe.runIf(installed)('etcd watches on an etcd3 client', () => {
  let cluster: EtcdCluster;
  let client: Etcd3;
  const namespace = `watch-${randomBytes(4).toString('hex')}/`;

  beforeAll(async () => {
    cluster = await EtcdCluster.start(1);
    client = new Etcd3({ hosts: cluster.hosts });
  }, 60_000);

  afterAll(async () => {
    client?.close();
    await cluster?.dispose();
  });

  async function post(path: string, body: object): Promise<any> {
    const response = await fetch(`${cluster.direct(0)}${path}`, {
      method: 'POST',
      body: JSON.stringify(body),
    });
    return response.json();
  }

  it('a watch etcd cancels because its revision was compacted is made again: releases still wake', async () => {
    const store = etcdStore(client, { namespace });
    let calls = 0;
    const stop = store.onRelease!('k', () => calls++);
    try {
      // Active: the watch calls its listeners once it is.
      expect(await until(() => calls > 0, 10_000)).toBe(true);
      const proxy = cluster.members[0]!.clientProxy;
      proxy.cut();
      await sleep(500);
      // Meanwhile the store's revision moves on and the history is compacted past the watch's.
      for (let i = 0; i < 5; i++)
        await post('/v3/kv/put', { key: b64('elsewhere'), value: b64(`${i}`) });
      const revision = (await post('/v3/kv/range', { key: b64('elsewhere') })).header.revision;
      await post('/v3/kv/compaction', { revision, physical: true });
      proxy.restore();
      // The client is back (it answers), and has had time to resume its watch.
      await client.get('elsewhere').string();
      await sleep(3_000);
      calls = 0;
      // A release under the lock's prefix, made by another client.
      const key = `${namespace}k/${randomBytes(4).toString('hex')}`;
      await post('/v3/kv/put', { key: b64(key), value: b64('x') });
      await post('/v3/kv/deleterange', { key: b64(key) });
      expect(await until(() => calls > 0, 10_000)).toBe(true);
    } finally {
      stop();
      await store.close?.();
    }
  }, 60_000);
});
