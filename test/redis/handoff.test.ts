import KeyvRedis from '@keyv/redis';
import { Lock, type LockStore, newOwner } from 'cachelock';
import { keyvStore } from 'cachelock/keyv';
import { leaseKey, redisStore } from 'cachelock/redis';
import { Redis } from 'ioredis';
import Keyv from 'keyv';
import { createClient } from 'redis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ACQUIRE } from '../../src/redis/acquire.js';
import { RELEASE } from '../../src/redis/release.js';
import { binaryOrSkip } from '../support/reachable.js';
import { RedisServer, sleep } from '../support/redis-server.js';
import { StallingProxy } from './fixtures/stalling-proxy.js';

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
      const proxy = await StallingProxy.start(server.port);
      const opened = await client.open(proxy.port);
      const k = key('late');
      const lease = leaseKey(opened.keyPrefix + k);
      // The holder and the other owner are other processes: they run the scripts directly, so
      // that only the channel tells the waiter.
      const run = (script: { text: string }, ...args: string[]) =>
        direct.eval(script.text, 1, lease, ...args);
      const [holder, other] = [newOwner(), newOwner()];
      // A ttl of 300 ms makes the hand-off's claim 300 ms.
      const waiter = new Lock(k, { cache: opened.store, prefix: '', ttl: 300, wait: '20s' });
      let settledAt: { held: boolean; aborted: boolean; otherHolds: boolean } | undefined;
      let otherHolds = false;
      try {
        expect(await run(ACQUIRE, holder, '30000', '0')).not.toBeNull();
        const waiting = waiter.acquire().then(() => {
          settledAt = { held: waiter.held, aborted: waiter.signal.aborted, otherHolds };
        });
        waiting.catch(() => {});
        await until(async () => {
          const [, subscribers] = (await direct.pubsub('NUMSUB', lease)) as [string, number];
          return subscribers >= 1 && (await direct.zcard(`${lease}:v2:line`)) >= 1;
        });
        proxy.stall();
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
        proxy.resume();
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
        proxy.resume();
        await waiter.release().catch(() => {});
        await opened.close();
        await proxy.close();
      }
    });
  }
});

async function until(probe: () => boolean | Promise<boolean>, withinMs = 5_000): Promise<void> {
  const deadline = Date.now() + withinMs;
  while (!(await probe())) {
    if (Date.now() > deadline) throw new Error(`condition not met within ${withinMs} ms`);
    await sleep(10);
  }
}
