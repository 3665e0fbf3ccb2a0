import { randomBytes } from 'node:crypto';
import { Lock, type LockStore, newOwner } from 'cachelock';
import { etcdStore, storeFromUrl } from 'cachelock/etcd';
import { Etcd3 } from 'etcd3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { EtcdCluster } from '../support/etcd-cluster.js';
import { binaryOrSkip } from '../support/reachable.js';

const installed = await binaryOrSkip('etcd faults', 'etcd');
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
const b64 = (text: string) => Buffer.from(text).toString('base64');

/** Retry `operation` until it answers, proving recovery. */
async function recovered<T>(operation: () => Promise<T>, ms = 20_000): Promise<T> {
  const deadline = Date.now() + ms;
  for (;;) {
    try {
      return await operation();
    } catch (error) {
      if (Date.now() > deadline) throw error;
      await sleep(100);
    }
  }
}

/** A resource that refuses any write whose fence is below the highest it has seen. */
class FencedResource {
  highest = -1n;
  write(fence: bigint): boolean {
    if (fence < this.highest) return false;
    this.highest = fence;
    return true;
  }
}

// One throwaway 3-member cluster for the file; the cases run in order and each leaves the
// cluster whole (every member up, a leader elected) for the next.
describe.runIf(installed)('etcd store under faults (throwaway 3-member cluster)', () => {
  let cluster: EtcdCluster;
  const stores: LockStore[] = [];
  const open = (url = cluster.url, timeoutMs = 1_000) => {
    const store = storeFromUrl(
      new URL(`${url}${url.includes('?') ? '&' : '?'}timeout=${timeoutMs}`),
    );
    stores.push(store);
    return store;
  };

  beforeAll(async () => {
    cluster = await EtcdCluster.start(3);
  });

  afterAll(async () => {
    for (const store of stores) await store.close?.();
    await cluster?.dispose();
  });

  async function post(path: string, body: object, member = 0): Promise<any> {
    const response = await fetch(`${cluster.hosts[member]}${path}`, {
      method: 'POST',
      body: JSON.stringify(body),
    });
    return response.json();
  }

  const allKeys = async () =>
    Number(
      (await post('/v3/kv/range', { key: b64('\0'), range_end: b64('\0'), count_only: true }))
        .count ?? 0,
    );
  const allLeases = async () => ((await post('/v3/lease/leases', {})).leases ?? []).length;

  it('leaves no key and no lease behind: released, held at least, waited for, or expired', async () => {
    const store = open();
    const released = Array.from({ length: 50 }, (_, i) => `released:${i}`);
    for (const key of released) {
      const owner = newOwner();
      expect(await store.acquire(key, owner, 5_000)).not.toBeNull();
      expect(await store.release(key, owner)).toBe(true);
    }
    const kept = newOwner();
    expect(await store.acquire('kept', kept, 5_000)).not.toBeNull();
    expect(await store.release('kept', kept, 500)).toBe(true);
    expect(await store.acquire('expiring', newOwner(), 500)).not.toBeNull();
    // A waiter in line, then the hand-off, then its release.
    const holder = newOwner();
    const waiter = newOwner();
    expect(await store.acquire('line', holder, 5_000)).not.toBeNull();
    expect(await store.acquire('line', waiter, 5_000, { lineMs: 3_000 })).toBeNull();
    expect(await store.release('line', holder)).toBe(true);
    const handed = await store.acquire('line', waiter, 5_000, { lineMs: 3_000 });
    expect(handed).not.toBeNull();
    expect(await store.release('line', waiter)).toBe(true);
    // A waiter that gives up leaves the line.
    const other = newOwner();
    expect(await store.acquire('line', holder, 5_000)).not.toBeNull();
    expect(await store.acquire('line', other, 5_000, { lineMs: 3_000 })).toBeNull();
    expect(await store.release('line', other)).toBe(false);
    expect(await store.release('line', holder)).toBe(true);
    // Spare leases go with the store; revokes of replaced ones run in the background, and
    // expiry takes a second or two.
    await store.close?.();
    const deadline = Date.now() + 10_000;
    while ((await allKeys()) + (await allLeases()) > 0 && Date.now() < deadline) await sleep(200);
    expect(await allKeys()).toBe(0);
    expect(await allLeases()).toBe(0);
  });

  it('interoperates with etcd lock service: each excludes the other', async () => {
    const store = open();
    const name = `cachelock:interop-${randomBytes(3).toString('hex')}`;
    const lease = (await post('/v3/lease/grant', { TTL: 10 })).ID;
    const locked = await post('/v3/lock/lock', { name: b64(name), lease });
    expect(locked.key).toBeDefined();
    expect(await store.acquire(name, newOwner(), 5_000)).toBeNull();
    const info = await store.inspect(name);
    expect(info?.owner).toBe('');
    expect(info!.ttlMs).toBeGreaterThan(5_000);
    await post('/v3/lock/unlock', { key: locked.key });
    const owner = newOwner();
    expect(await store.acquire(name, owner, 5_000)).not.toBeNull();
    // etcd's lock waits behind cachelock's holder until it releases.
    let granted = false;
    const theirs = post('/v3/lock/lock', { name: b64(name), lease }).then((reply) => {
      granted = true;
      return reply;
    });
    await sleep(500);
    expect(granted).toBe(false);
    expect(await store.release(name, owner)).toBe(true);
    const reply = await theirs;
    expect(reply.key).toBeDefined();
    await post('/v3/lease/revoke', { ID: lease });
  });

  it('fences keep rising across a restart of every member (etcd keeps its revision on disk)', async () => {
    const store = open();
    const owner = newOwner();
    const before = await store.acquire('restart', owner, 5_000);
    expect(before?.fence).toBeTypeOf('bigint');
    expect(await store.release('restart', owner)).toBe(true);
    for (const index of cluster.members.keys()) await cluster.kill(index);
    for (const index of cluster.members.keys()) void cluster.restart(index);
    await cluster.waitHealthy();
    const after = await recovered(() => store.acquire('restart', newOwner(), 5_000));
    expect(after?.fence).toBeGreaterThan(before!.fence!);
  });

  it('the leader killed: the holder keeps its lock and extends, the others are refused', async () => {
    const store = open();
    const peer = open();
    const [a, b] = [newOwner(), newOwner()];
    const first = await store.acquire('killed', a, 3_000);
    expect(first).not.toBeNull();
    const leader = await cluster.leader();
    await cluster.kill(leader);
    try {
      expect(await recovered(() => store.extend('killed', a, 3_000))).toBe(true);
      expect(await recovered(() => peer.acquire('killed', b, 3_000))).toBeNull();
      expect((await recovered(() => peer.inspect('killed')))?.owner).toBe(a);
      expect(await recovered(() => store.release('killed', a))).toBe(true);
      const next = await recovered(() => peer.acquire('killed', b, 3_000));
      expect(next?.fence).toBeGreaterThan(first!.fence!);
      expect(await peer.release('killed', b)).toBe(true);
    } finally {
      await cluster.restart(leader);
    }
  });

  it('the leader partitioned: a Lock keeps its lease through the election, then hands over', async () => {
    const store = open();
    const lock = new Lock('partitioned', { cache: store, ttl: '2s' });
    await lock.acquire();
    let lost = false;
    lock.signal.addEventListener('abort', () => {
      lost = true;
    });
    const leader = await cluster.leader();
    cluster.partition(leader);
    try {
      // Past the lease: only extensions through the new leader keep it.
      await sleep(4_000);
      expect(lost).toBe(false);
      expect(lock.held).toBe(true);
      const other = new Lock('partitioned', { cache: open(), ttl: '2s', wait: '10s' });
      expect(await other.tryAcquire()).toBe(false);
      expect(await lock.release()).toBe(true);
      await other.acquire();
      expect(other.fence).toBeGreaterThan(lock.fence!);
      await other.release();
    } finally {
      cluster.heal(leader);
      await cluster.waitHealthy();
    }
  });

  it('a request made while the cluster has no leader waits for the election instead of failing', async () => {
    const alone = ((await cluster.leader()) + 1) % cluster.members.length;
    const others = [...cluster.members.keys()].filter((index) => index !== alone);
    // Only the member that stays up, so that every answer is its "no leader".
    const store = open(`etcd://127.0.0.1:${cluster.members[alone]!.clientPort}`, 5_000);
    for (const index of others) cluster.pause(index);
    try {
      const deadline = Date.now() + 10_000;
      while ((await cluster.status(alone)) !== undefined && Date.now() < deadline) await sleep(50);
      expect(await cluster.status(alone)).toBeUndefined();
      const owner = newOwner();
      const asked = Date.now();
      const acquired = store.acquire('leaderless', owner, 5_000);
      await sleep(800);
      for (const index of others) cluster.resume(index);
      const lease = await acquired;
      expect(lease?.fence).toBeTypeOf('bigint');
      expect(Date.now() - asked).toBeGreaterThanOrEqual(800);
      expect(await store.release('leaderless', owner)).toBe(true);
    } finally {
      for (const index of others) cluster.resume(index);
      await cluster.waitHealthy();
    }
  });

  it("a paused holder's late write is refused by a fence-checking resource", async () => {
    const store = open();
    const resource = new FencedResource();
    const [paused, next] = [newOwner(), newOwner()];
    const first = await store.acquire('paused', paused, 1_000);
    expect(resource.write(first!.fence!)).toBe(true);
    // The holder "pauses": it neither extends nor releases, and etcd expires its lease.
    let second = null;
    const deadline = Date.now() + 10_000;
    while (second === null && Date.now() < deadline) {
      second = await store.acquire('paused', next, 5_000);
      if (second === null) await sleep(200);
    }
    expect(second?.fence).toBeGreaterThan(first!.fence!);
    expect(resource.write(second!.fence!)).toBe(true);
    // It wakes up and writes with its old fence: refused.
    expect(resource.write(first!.fence!)).toBe(false);
    expect(await store.extend('paused', paused, 5_000)).toBe(false);
    expect(await store.release('paused', paused)).toBe(false);
    expect(await store.release('paused', next)).toBe(true);
  });

  it('takes an etcd3 client given as cache, and leaves it open on closeAll', async () => {
    const client = new Etcd3({ hosts: cluster.hosts });
    try {
      const lock = new Lock(`etcd3-${randomBytes(3).toString('hex')}`, { cache: client });
      await lock.acquire();
      expect(lock.fence).toBeTypeOf('bigint');
      const info = await Lock.inspect(lock.key, { cache: client });
      expect(info?.fence).toBe(lock.fence);
      expect(await lock.release()).toBe(true);
      const store = etcdStore(client);
      expect(store.kind).toBe('etcd');
      await store.close();
      expect(await client.get('anything')).toBeNull();
    } finally {
      client.close();
    }
  });
});
