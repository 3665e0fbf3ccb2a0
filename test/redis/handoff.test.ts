import KeyvRedis from '@keyv/redis';
import { Lock, type LockStore, newOwner } from 'cachelock';
import { keyvStore } from 'cachelock/keyv';
import { leaseKey, redisStore } from 'cachelock/redis';
import { Cluster, Redis } from 'ioredis';
import Keyv from 'keyv';
import { createClient } from 'redis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ACQUIRE } from '../../src/redis/acquire.js';
import { RELEASE } from '../../src/redis/release.js';
import { binaryOrSkip } from '../support/reachable.js';
import { RedisCluster, RedisServer, sleep } from '../support/redis-server.js';
import { TcpProxy } from '../support/tcp-proxy.js';

const runs = await binaryOrSkip('Redis hand-off', 'redis-server');
let counter = 0;
const key = (label: string) => `handoff:${process.pid}:${label}:${++counter}`;

/** A store whose every connection goes to `port`, and the prefix it adds to keys. */
interface Client {
  name: string;
  open(port: number): Promise<{ store: LockStore; keyPrefix: string; close(): Promise<void> }>;
}

const clients: Client[] = [
  {
    name: 'ioredis',
    async open(port) {
      const client = new Redis(port, '127.0.0.1');
      const store = redisStore(client);
      return {
        store,
        keyPrefix: '',
        close: async () => {
          await store.close();
          client.disconnect();
        },
      };
    },
  },
  {
    name: 'node-redis',
    async open(port) {
      const client = createClient({ url: `redis://127.0.0.1:${port}` });
      client.on('error', () => {});
      await client.connect();
      const store = redisStore(client);
      return {
        store,
        keyPrefix: '',
        close: async () => {
          await store.close();
          await client.close();
        },
      };
    },
  },
  {
    name: 'a Keyv over @keyv/redis, unwrapped',
    async open(port) {
      const keyv = new Keyv({
        store: new KeyvRedis(`redis://127.0.0.1:${port}`),
        namespace: 'jobs',
      });
      const store = await keyvStore(keyv);
      return {
        store,
        keyPrefix: 'jobs:',
        close: async () => {
          await store.close?.();
          await keyv.disconnect();
        },
      };
    },
  },
];

describe.runIf(runs)('redis hand-offs that arrive late', () => {
  let server: RedisServer;
  let direct: Redis;

  beforeAll(async () => {
    server = await RedisServer.start();
    direct = new Redis(server.port, '127.0.0.1');
  });
  afterAll(async () => {
    direct?.disconnect();
    await server?.dispose();
  });

  for (const client of clients) {
    it(`a waiter held back past its claim does not hold a key another owner took meanwhile (${client.name})`, async () => {
      // Everything the waiter sends and hears goes through a proxy that can hold it back, as
      // if its process were paused: the hand-off then reaches it after its claim ran out.
      const proxy = await TcpProxy.start(server.port);
      const opened = await client.open(proxy.port);
      try {
        await lateHandoff(direct, opened.store, opened.keyPrefix, [proxy]);
      } finally {
        await opened.close();
        await proxy.close();
      }
    });
  }
});

describe.runIf(runs)('redis hand-offs that arrive late, on a 3-master Cluster', () => {
  let cluster: RedisCluster;
  let direct: Cluster;

  beforeAll(async () => {
    cluster = await RedisCluster.start(3);
    direct = new Cluster(cluster.nodes);
  });
  afterAll(async () => {
    await direct?.quit();
    await cluster?.dispose();
  });

  it('a waiter held back past its claim does not hold a key another owner took meanwhile', async () => {
    // The waiter's Cluster client reaches every master through its own proxy.
    const proxies = await Promise.all(cluster.nodes.map((node) => TcpProxy.start(node.port)));
    const natMap = Object.fromEntries(
      cluster.nodes.map((node, i) => [
        `${node.host}:${node.port}`,
        { host: '127.0.0.1', port: proxies[i]!.port },
      ]),
    );
    const client = new Cluster(
      proxies.map((proxy) => ({ host: '127.0.0.1', port: proxy.port })),
      { natMap },
    );
    const store = redisStore(client);
    try {
      await lateHandoff(direct, store, '', proxies);
    } finally {
      await store.close();
      client.disconnect();
      await Promise.all(proxies.map((proxy) => proxy.close()));
    }
  });
});

/**
 * A waiter on `store` joins the line; every connection of its store is held back; the holder
 * releases (handing it the key with a 300 ms claim); the claim runs out and another owner takes
 * the key; the connections come back. The waiter must not hold the key until that owner
 * releases it, and then holds it with a higher fence.
 */
async function lateHandoff(
  direct: Redis | Cluster,
  store: LockStore,
  keyPrefix: string,
  proxies: TcpProxy[],
): Promise<void> {
  const k = key('late');
  const lease = leaseKey(keyPrefix + k);
  // The holder and the other owner are other processes: they run the scripts directly, so
  // that only the channel tells the waiter.
  const run = (script: { text: string }, ...args: string[]) =>
    direct.eval(script.text, 1, lease, ...args);
  const [holder, other] = [newOwner(), newOwner()];
  // A ttl of 300 ms makes the hand-off's claim 300 ms.
  const waiter = new Lock(k, { cache: store, prefix: '', ttl: 300, wait: '20s' });
  let settledAt: { held: boolean; aborted: boolean; otherHolds: boolean } | undefined;
  let otherHolds = false;
  try {
    expect(await run(ACQUIRE, holder, '30000', '0')).not.toBeNull();
    const waiting = waiter.acquire().then(() => {
      settledAt = { held: waiter.held, aborted: waiter.signal.aborted, otherHolds };
    });
    waiting.catch(() => {});
    // Each node counts only its own subscribers: ask every one.
    const nodes = direct instanceof Cluster ? direct.nodes('master') : [direct];
    await until(async () => {
      let subscribers = 0;
      for (const node of nodes) {
        subscribers += ((await node.pubsub('NUMSUB', lease)) as [string, number])[1];
      }
      return subscribers >= 1 && (await direct.zcard(`${lease}:v2:line`)) >= 1;
    });
    for (const proxy of proxies) proxy.stall();
    const handoff = String(await run(RELEASE, holder, '0'));
    const handedFence = BigInt(handoff.slice(0, handoff.indexOf(':')));
    // The claim runs out and another owner takes the key with a higher fence.
    let taken = await run(ACQUIRE, other, '30000', '0');
    while (taken === null) {
      await sleep(10);
      taken = await run(ACQUIRE, other, '30000', '0');
    }
    otherHolds = true;
    expect(BigInt(String(taken))).toBeGreaterThan(handedFence);
    for (const proxy of proxies) proxy.restore();
    // The late hand-off and the late replies arrive now; the key is the other owner's.
    await Promise.race([waiting, sleep(1_000)]);
    expect(settledAt).toBeUndefined();
    expect(waiter.held).toBe(false);
    otherHolds = false;
    expect(await run(RELEASE, other, '0')).not.toBe(0);
    await waiting;
    expect(settledAt).toEqual({ held: true, aborted: false, otherHolds: false });
    expect(waiter.fence!).toBeGreaterThan(BigInt(String(taken)));
    expect(await waiter.release()).toBe(true);
  } finally {
    for (const proxy of proxies) proxy.restore();
    await waiter.release().catch(() => {});
  }
}

async function until(probe: () => boolean | Promise<boolean>, withinMs = 5_000): Promise<void> {
  const deadline = Date.now() + withinMs;
  while (!(await probe())) {
    if (Date.now() > deadline) throw new Error(`condition not met within ${withinMs} ms`);
    await sleep(10);
  }
}
