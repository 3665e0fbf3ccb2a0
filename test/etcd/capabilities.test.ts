import { randomBytes } from 'node:crypto';
import {
  Lock,
  type LockStore,
  newOwner,
  ReadWriteLock,
  RW_LIMIT,
  Semaphore,
  type SharedLeases,
} from 'cachelock';
import { etcdStore, storeFromUrl } from 'cachelock/etcd';
import { Etcd3 } from 'etcd3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { EtcdCluster } from '../support/etcd-cluster.js';
import { binaryOrSkip } from '../support/reachable.js';

const installed = await binaryOrSkip('etcd', 'etcd');
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
const b64 = (bytes: Buffer | string) => Buffer.from(bytes).toString('base64');

interface RawKey {
  key: string;
  lease: string;
  createRevision: bigint;
  value: string;
}

// The capabilities' etcd layout, checked on the keys themselves: the conformance suite checks
// their behaviour on both transports (conformance.test.ts).
describe.runIf(installed)('etcd: several keys, permits, readers and writers', () => {
  let cluster: EtcdCluster;
  let client: Etcd3;
  const namespace = `caps-${randomBytes(4).toString('hex')}/`;
  const stores: LockStore[] = [];
  const open = (): LockStore => {
    const store = storeFromUrl(new URL(`${cluster.url}?namespace=${namespace}`));
    stores.push(store);
    return store;
  };

  beforeAll(async () => {
    cluster = await EtcdCluster.start(1);
    client = new Etcd3({ hosts: cluster.hosts });
  }, 60_000);

  afterAll(async () => {
    for (const store of stores) await store.close?.();
    client?.close();
    await cluster?.dispose();
  });

  async function post(path: string, body: object): Promise<any> {
    const response = await fetch(`${cluster.hosts[0]}${path}`, {
      method: 'POST',
      body: JSON.stringify(body),
    });
    return response.json();
  }

  /** Every key that starts with `prefix` (after the namespace), oldest first. */
  async function keysUnder(prefix: string): Promise<RawKey[]> {
    const start = Buffer.from(namespace + prefix);
    const end = Buffer.from(start);
    end[end.length - 1]! += 1;
    const reply = await post('/v3/kv/range', {
      key: b64(start),
      range_end: b64(end),
      sort_order: 'ASCEND',
      sort_target: 'CREATE',
    });
    return (reply.kvs ?? []).map((kv: any) => ({
      key: Buffer.from(kv.key, 'base64').toString().slice(namespace.length),
      lease: String(kv.lease ?? '0'),
      createRevision: BigInt(kv.create_revision),
      value: Buffer.from(kv.value ?? '', 'base64').toString(),
    }));
  }

  const leaseTtl = async (id: string) =>
    Number((await post('/v3/lease/timetolive', { ID: id })).TTL ?? -1);

  it('several keys: one transaction puts our key under each lock prefix, on one lease', async () => {
    const store = open();
    const many = store.capabilities!.keys!;
    const [a, b] = [newOwner(), newOwner()];
    const got = await many.acquire(['k1', 'k2', 'k3'], a, 10_000);
    expect(got).not.toBeNull();
    // One transaction: one revision, the create revision of every key it put.
    expect(new Set(got!.fences).size).toBe(1);
    const put = [
      ...(await keysUnder('k1/')),
      ...(await keysUnder('k2/')),
      ...(await keysUnder('k3/')),
    ];
    expect(put.map((k) => k.key)).toEqual([`k1/${a}`, `k2/${a}`, `k3/${a}`]);
    expect(new Set(put.map((k) => k.lease)).size).toBe(1);
    expect(put.every((k) => k.createRevision === got!.fences[0])).toBe(true);
    for (const key of ['k1', 'k2', 'k3']) {
      expect(await store.inspect(key)).toMatchObject({ owner: a, fence: got!.fences[0] });
    }
    // A set that overlaps by one key takes nothing; nor does the single-key lock.
    expect(await many.acquire(['k3', 'k4'], b, 10_000)).toBeNull();
    expect(await keysUnder('k4/')).toEqual([]);
    expect(await store.acquire('k2', b, 10_000)).toBeNull();
    expect(await keysUnder('k2/')).toHaveLength(1);
    // Another TTL moves the keys together onto a new lease, keeping their create revisions.
    expect(await many.extend(['k1', 'k2', 'k3'], a, 20_000)).toBe(true);
    const moved = [...(await keysUnder('k1/')), ...(await keysUnder('k3/'))];
    expect(new Set(moved.map((k) => k.lease)).size).toBe(1);
    expect(moved[0]!.lease).not.toBe(put[0]!.lease);
    expect(await leaseTtl(moved[0]!.lease)).toBeGreaterThan(10);
    expect(moved.every((k) => k.createRevision === got!.fences[0])).toBe(true);
    // holdAtLeast: the keys stay on a short lease.
    expect(await many.release(['k1', 'k2', 'k3'], a, 2_000)).toBe(true);
    const kept = await keysUnder('k2/');
    expect(kept).toHaveLength(1);
    expect(await leaseTtl(kept[0]!.lease)).toBeLessThanOrEqual(2);
    expect(await many.release(['k1', 'k2', 'k3'], a)).toBe(true);
    expect(await keysUnder('k')).toEqual([]);
  });

  it('Lock(["x", "y"]) and Lock("y") exclude each other; a waiting set holds nothing until it has all', async () => {
    const cache = open();
    const single = await new Lock('y', { cache, ttl: '10s' }).acquire();
    const both = new Lock(['x', 'y'], { cache, ttl: '10s', wait: '10s' });
    const waited = both.acquire();
    await sleep(300);
    // Waiting, it holds no key of its set.
    expect(await keysUnder('x/')).toEqual([]);
    await single.release();
    await waited;
    // Each key's fence is its key's create revision: y's from its place in y's line, which
    // came after the single lock's, x's when the set was taken.
    expect(both.fences.get('y')! > single.fence!).toBe(true);
    expect(both.fences.get('x')! >= both.fences.get('y')!).toBe(true);
    expect(await new Lock('x', { cache }).tryAcquire()).toBe(false);
    await both.release();
  });

  it('permits and readers/writers: their own prefixes, a key per contender, the last write fence aside', async () => {
    const store = open();
    const permits = store.capabilities!.permits!;
    const rw = store.capabilities!.readersWriters!;
    const [p, w, l] = [newOwner(), newOwner(), newOwner()];
    // One name, three locks.
    expect(await permits.acquire('same', p, 10_000, { limit: 1, weight: 1 })).not.toBeNull();
    const written = await rw.acquire('same', w, 10_000, { limit: RW_LIMIT, weight: RW_LIMIT });
    expect(written?.fence).toBeTypeOf('bigint');
    expect(await store.acquire('same', l, 10_000)).not.toBeNull();
    expect((await keysUnder('%Ssame/')).map((k) => k.key)).toEqual([`%Ssame/${p}`]);
    const [writer] = await keysUnder('%Rsame/');
    expect(writer!.key).toBe(`%Rsame/${w}`);
    expect(writer!.createRevision).toBe(written!.fence);
    const [record] = await keysUnder('%Wsame');
    expect(record!.lease).toBe(writer!.lease);
    expect(await rw.release('same', w)).toBe(true);
    // The writer's key is gone; its fence stays for the readers that come next.
    expect(await keysUnder('%Rsame/')).toEqual([]);
    const reader = newOwner();
    const read = await rw.acquire('same', reader, 10_000, {
      limit: RW_LIMIT,
      weight: 1,
      shareFence: true,
    });
    expect(read).toEqual(written);
    // The reader carries the record on its own lease now.
    const [readerKey] = await keysUnder('%Rsame/');
    expect((await keysUnder('%Wsame'))[0]!.lease).toBe(readerKey!.lease);
    expect(await rw.release('same', reader)).toBe(true);
    expect(await permits.release('same', p)).toBe(true);
    expect(await store.release('same', l)).toBe(true);
  });

  it("a writer's extension onto a new lease keeps the fence readers will share", async () => {
    const rw = open().capabilities!.readersWriters!;
    const writer = newOwner();
    const write = { limit: RW_LIMIT, weight: RW_LIMIT };
    const written = await rw.acquire('moved', writer, 10_000, write);
    // Another TTL: the key and the fence record move onto a new lease, at a later revision.
    expect(await rw.extend('moved', writer, 3_000)).toBe(true);
    const [record] = await keysUnder('%Wmoved');
    expect(record!.lease).toBe((await keysUnder('%Rmoved/'))[0]!.lease);
    expect(await rw.release('moved', writer)).toBe(true);
    const reader = newOwner();
    const read = { limit: RW_LIMIT, weight: 1, shareFence: true };
    expect(await rw.acquire('moved', reader, 10_000, read)).toEqual(written);
    expect(await rw.release('moved', reader)).toBe(true);
  });

  it('a permit whose lease runs out wakes the waiter through the watch', async () => {
    const store = open();
    const permits: SharedLeases = store.capabilities!.permits!;
    let calls = 0;
    const stop = permits.onRelease!('expiry', () => calls++);
    try {
      // The first call says the watch is active.
      while (calls === 0) await sleep(10);
      const dead = newOwner();
      expect(await permits.acquire('expiry', dead, 1_000, { limit: 1, weight: 1 })).not.toBeNull();
      const waiter = newOwner();
      const line = { limit: 1, weight: 1, lineMs: 10_000 };
      expect(await permits.acquire('expiry', waiter, 10_000, line)).toBeNull();
      const before = calls;
      // etcd's smallest lease here is 1 s, and the leader looks for expired ones every 500 ms.
      const deadline = performance.now() + 8_000;
      while (calls === before && performance.now() < deadline) await sleep(20);
      expect(calls).toBeGreaterThan(before);
      expect(await permits.acquire('expiry', waiter, 10_000, line)).not.toBeNull();
      expect(await permits.release('expiry', waiter)).toBe(true);
    } finally {
      stop();
    }
  });

  it('a release wakes only the waiters it may admit: the next in line, not the one behind it', async () => {
    const [holderStore, firstStore, secondStore] = [open(), open(), open()];
    const permitsOf = (store: LockStore) => store.capabilities!.permits!;
    const count = (store: LockStore) => {
      const seen = { calls: 0, stop: () => {} };
      seen.stop = permitsOf(store).onRelease!('herd', () => seen.calls++);
      return seen;
    };
    const first = count(firstStore);
    const second = count(secondStore);
    const [h, w1, w2] = [newOwner(), newOwner(), newOwner()];
    const line = { limit: 1, weight: 1, lineMs: 10_000 };
    try {
      // Each watch says once that it is active.
      while (first.calls === 0 || second.calls === 0) await sleep(10);
      expect(
        await permitsOf(holderStore).acquire('herd', h, 10_000, { limit: 1, weight: 1 }),
      ).not.toBeNull();
      expect(await permitsOf(firstStore).acquire('herd', w1, 10_000, line)).toBeNull();
      expect(await permitsOf(secondStore).acquire('herd', w2, 10_000, line)).toBeNull();
      const [firstBefore, secondBefore] = [first.calls, second.calls];
      expect(await permitsOf(holderStore).release('herd', h)).toBe(true);
      while (first.calls === firstBefore) await sleep(10);
      expect(await permitsOf(firstStore).acquire('herd', w1, 10_000, line)).not.toBeNull();
      expect(await permitsOf(firstStore).release('herd', w1)).toBe(true);
      // The second waiter's watch sees both deletions in order; only the second may admit it.
      while (second.calls === secondBefore) await sleep(10);
      await sleep(200);
      expect(second.calls - secondBefore).toBe(1);
      expect(await permitsOf(secondStore).acquire('herd', w2, 10_000, line)).not.toBeNull();
      expect(await permitsOf(secondStore).release('herd', w2)).toBe(true);
    } finally {
      first.stop();
      second.stop();
    }
  });

  it('readers let in together by a write’s release each get in at their next attempt, whoever re-recorded the fence first', async () => {
    const [writerStore, ...readerStores] = [open(), open(), open(), open()];
    const rwOf = (store: LockStore) => store.capabilities!.readersWriters!;
    const write = { limit: RW_LIMIT, weight: RW_LIMIT };
    const read = { limit: RW_LIMIT, weight: 1, shareFence: true, lineMs: 10_000 };
    let ready = 0;
    const stops = readerStores.map((store) => rwOf(store).onRelease!('together', () => ready++));
    try {
      while (ready < readerStores.length) await sleep(10);
      // Several rounds: the readers' confirmations race each time.
      for (let round = 0; round < 4; round++) {
        const writer = newOwner();
        const written = await rwOf(writerStore).acquire('together', writer, 10_000, write);
        expect(written?.fence).toBeDefined();
        const readers = readerStores.map(() => newOwner());
        for (const [i, store] of readerStores.entries()) {
          expect(await rwOf(store).acquire('together', readers[i]!, 10_000, read)).toBeNull();
        }
        const before = ready;
        expect(await rwOf(writerStore).release('together', writer)).toBe(true);
        while (ready < before + readerStores.length) await sleep(10);
        // Each is admitted by the line now: one attempt each, at once, lets every one in.
        const got = await Promise.all(
          readerStores.map((store, i) =>
            rwOf(store).acquire('together', readers[i]!, 10_000, read),
          ),
        );
        expect(got.map((g) => g?.fence)).toEqual(readers.map(() => written!.fence));
        for (const [i, store] of readerStores.entries()) {
          expect(await rwOf(store).release('together', readers[i]!)).toBe(true);
        }
      }
    } finally {
      for (const stop of stops) stop();
    }
  });

  it('Semaphore and ReadWriteLock on an etcd3 client: never more inside than allowed, a fence each, readers the last write’s', async () => {
    const cache = etcdStore(client, { namespace });
    stores.push(cache);
    const semaphore = new Semaphore('render', { permits: 2, cache, ttl: '5s', wait: '20s' });
    let inside = 0;
    let most = 0;
    const fences: bigint[] = [];
    await Promise.all(
      Array.from({ length: 6 }, async () => {
        for (let i = 0; i < 3; i++) {
          await using permit = await semaphore.acquire();
          fences.push(permit.fence!);
          most = Math.max(most, ++inside);
          // Longer than an acquisition takes (this process's waiters take turns at the store).
          await sleep(40);
          inside--;
        }
      }),
    );
    expect(most).toBeLessThanOrEqual(2);
    expect(most).toBe(2);
    expect(new Set(fences).size).toBe(18);

    const catalog = new ReadWriteLock('catalog', { cache, ttl: '5s', wait: '20s' });
    let readers = 0;
    let writing = false;
    let overlap = 0;
    let lastWrite: bigint | undefined;
    const stale: bigint[] = [];
    await Promise.all(
      Array.from({ length: 6 }, async (_, n) => {
        for (let i = 0; i < 3; i++) {
          if (n % 3 === 0) {
            await using w = await catalog.write();
            if (writing || readers > 0) overlap++;
            writing = true;
            lastWrite = w.fence;
            await sleep(5);
            writing = false;
          } else {
            await using r = await catalog.read();
            if (writing) overlap++;
            readers++;
            if (r.fence !== lastWrite) stale.push(r.fence!);
            await sleep(5);
            readers--;
          }
        }
      }),
    );
    expect(overlap).toBe(0);
    expect(stale).toEqual([]);
  });

  it('leaves no key behind, and no lease once the last term granted has run out', async () => {
    const store = open();
    const many = store.capabilities!.keys!;
    const permits = store.capabilities!.permits!;
    const rw = store.capabilities!.readersWriters!;
    const o = newOwner();
    await many.acquire(['g1', 'g2'], o, 3_000);
    await many.release(['g1', 'g2'], o);
    const held = newOwner();
    const waiter = newOwner();
    await permits.acquire('gone', held, 3_000, { limit: 1, weight: 1 });
    await permits.acquire('gone', waiter, 3_000, { limit: 1, weight: 1, lineMs: 3_000 });
    await permits.acquire('gone', newOwner(), 2_000, { limit: 1, weight: 1, lineMs: 2_000 });
    await permits.release('gone', held);
    await permits.release('gone', waiter);
    const writer = newOwner();
    await rw.acquire('gone', writer, 2_000, { limit: RW_LIMIT, weight: RW_LIMIT });
    await rw.release('gone', writer);
    const reader = newOwner();
    await rw.acquire('gone', reader, 2_000, { limit: RW_LIMIT, weight: 1, shareFence: true });
    await rw.release('gone', reader);
    for (const s of stores) await s.close?.();
    stores.length = 0;
    const deadline = Date.now() + 15_000;
    const left = async () =>
      (await keysUnder('')).length + ((await post('/v3/lease/leases', {})).leases ?? []).length;
    while ((await left()) > 0 && Date.now() < deadline) await sleep(200);
    expect(await keysUnder('')).toEqual([]);
    expect((await post('/v3/lease/leases', {})).leases ?? []).toEqual([]);
  }, 30_000);
});
