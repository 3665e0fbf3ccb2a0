import { randomBytes } from 'node:crypto';
import { Lock } from 'cachelock';
import { storeFromUrl } from 'cachelock/etcd';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { EtcdCluster } from '../support/etcd-cluster.js';
import { binaryOrSkip } from '../support/reachable.js';

const installed = await binaryOrSkip('etcd', 'etcd');
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
const b64 = (text: string) => Buffer.from(text).toString('base64');

// What etcd did, from its own counters: raft writes, and requests by gRPC method.
async function counts(base: string): Promise<{ writes: number; by: Record<string, number> }> {
  const text = await (await fetch(`${base}/metrics`)).text();
  const out = { writes: 0, by: {} as Record<string, number> };
  for (const line of text.split('\n')) {
    const [name, value] = line.split(' ');
    if (name === 'etcd_server_proposals_committed_total') out.writes = Number(value);
    const method = /^grpc_server_msg_received_total\{grpc_method="(\w+)"/.exec(name ?? '')?.[1];
    if (method !== undefined) out.by[method] = (out.by[method] ?? 0) + Number(value);
  }
  return out;
}

describe.runIf(installed)('etcd: what a hand-off and an uncontended lock cost', () => {
  let cluster: EtcdCluster;
  const namespace = `handoff-${randomBytes(4).toString('hex')}/`;

  beforeAll(async () => {
    cluster = await EtcdCluster.start(1);
  }, 60_000);

  afterAll(async () => {
    await cluster?.dispose();
  });

  const open = () =>
    storeFromUrl(new URL(`${cluster.url}&namespace=${namespace}`.replace('&', '?')));

  async function lineLength(key: string): Promise<number> {
    const prefix = `${namespace}cachelock:${key}/`;
    const end = `${prefix.slice(0, -1)}0`;
    const response = await fetch(`${cluster.direct(0)}/v3/kv/range`, {
      method: 'POST',
      body: JSON.stringify({ key: b64(prefix), range_end: b64(end), count_only: true }),
    });
    return Number(((await response.json()) as { count?: string }).count ?? 0);
  }

  it('a waiter handed the lock holds it on its line lease with no write of its own; its first extension moves it onto the ttl', async () => {
    const [a, b] = [open(), open()];
    const key = `k-${randomBytes(4).toString('hex')}`;
    try {
      const first = await Lock.acquire(key, { cache: a, ttl: '9s' });
      const waiting = Lock.acquire(key, { cache: b, ttl: '9s', wait: '20s' });
      for (let i = 0; i < 100 && (await lineLength(key)) < 2; i++) await sleep(50);
      expect(await lineLength(key)).toBe(2);
      // Let the waiter's watch become active and its place settle.
      await sleep(500);
      const before = await counts(cluster.direct(0));
      await first.release();
      const second = await waiting;
      const after = await counts(cluster.direct(0));
      // The release's delete is the one write: the waiter's grant costs none.
      expect(after.writes - before.writes).toBe(1);
      expect(after.by.LeaseKeepAlive ?? 0).toBe(before.by.LeaseKeepAlive ?? 0);
      expect(second.fence! > first.fence!).toBe(true);
      // Held on the line lease (3 s), then moved onto a lease of the ttl by its first extension.
      const onLine = await Lock.inspect(key, { cache: b });
      expect(onLine?.ttlMs).toBeLessThanOrEqual(3_000);
      await sleep(2_000);
      expect(second.held).toBe(true);
      const extended = await Lock.inspect(key, { cache: b });
      expect(extended?.ttlMs).toBeGreaterThan(5_000);
      expect(extended?.fence).toBe(second.fence);
      expect(await second.release()).toBe(true);
      expect(await lineLength(key)).toBe(0);
    } finally {
      await a.close?.();
      await b.close?.();
    }
  }, 60_000);

  it('an uncontended lock that extends itself takes a spare lease as it is: one transaction to acquire, one to release', async () => {
    const store = open();
    const key = `u-${randomBytes(4).toString('hex')}`;
    try {
      // The first acquisition grants a lease; its release leaves it as a spare.
      const warm = await Lock.acquire(key, { cache: store, ttl: '6s' });
      await warm.release();
      const before = await counts(cluster.direct(0));
      const lock = await Lock.acquire(key, { cache: store, ttl: '6s' });
      const held = await counts(cluster.direct(0));
      expect(held.by.Txn! - before.by.Txn!).toBe(1);
      expect(held.by.LeaseKeepAlive ?? 0).toBe(before.by.LeaseKeepAlive ?? 0);
      expect(held.by.LeaseGrant ?? 0).toBe(before.by.LeaseGrant ?? 0);
      expect(lock.fence! > warm.fence!).toBe(true);
      // The lease is what the spare had left, never more than the ttl, and the holder knows it:
      // it keeps the lock well past that by extending.
      const info = await Lock.inspect(key, { cache: store });
      expect(info?.ttlMs).toBeLessThanOrEqual(6_000);
      await sleep(7_000);
      expect(lock.held).toBe(true);
      expect((await Lock.inspect(key, { cache: store }))?.fence).toBe(lock.fence);
      expect(await lock.release()).toBe(true);
      expect(await lineLength(key)).toBe(0);
    } finally {
      await store.close?.();
    }
  }, 60_000);
});
