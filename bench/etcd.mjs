// etcd: the library against etcd's own lock service (v3lock: /v3/lock/lock and /v3/lock/unlock
// on the JSON gateway, with a lease), uncontended and with 4 processes on one key. Uses the
// BUILT package (`npm run build` first) and its own single-member etcd on free loopback ports,
// or ETCD_URL (etcd://host:2379). Prints a markdown table.
//
//   node bench/etcd.mjs   (BENCH_ROUNDS, BENCH_PAIRS, BENCH_CONTENDED_MS tune it)

import { fileURLToPath } from 'node:url';
import { Lock } from 'cachelock';
import { etcdStore, storeFromUrl } from 'cachelock/etcd';
import { Etcd3 } from 'etcd3';
import { cachelockWithLock, contendedTable, isWorker, workerMain } from './contention.mjs';
import { fmt, interleave, perCall, table } from './lib.mjs';
import { startEtcd } from './servers.mjs';

const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 5);
const PAIRS = Number(process.env.BENCH_PAIRS ?? 200);
const TTL_S = 10;
const SESSION_S = 3_600;
const b64 = (text) => Buffer.from(text).toString('base64');

/** etcd's lock service over the gateway, with Node's fetch, as the store speaks to etcd. */
class LockService {
  constructor(base) {
    this.base = base;
  }
  async post(path, body) {
    const response = await fetch(`${this.base}${path}`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify(body),
    });
    const reply = await response.json();
    if (!response.ok || reply.error) throw new Error(`${path}: ${JSON.stringify(reply)}`);
    return reply;
  }
  /** A lease of `ttl` s; one reused across locks (a session) gets a long one, never renewed. */
  async grant(ttl = TTL_S) {
    return (await this.post('/v3/lease/grant', { TTL: ttl })).ID;
  }
  revoke(lease) {
    return this.post('/v3/lease/revoke', { ID: lease });
  }
  async lock(name, lease) {
    return (await this.post('/v3/lock/lock', { name: b64(name), lease })).key;
  }
  unlock(key) {
    return this.post('/v3/lock/unlock', { key });
  }
}

const baseOf = (url) => `http://${new URL(url).host}`;

async function main() {
  const { newOwner } = await import('cachelock');
  const own = process.env.ETCD_URL ? undefined : await startEtcd();
  const url = process.env.ETCD_URL ?? `etcd://127.0.0.1:${own.port}`;
  const service = new LockService(baseOf(url));
  const sharedLease = await service.grant(SESSION_S);
  const store = storeFromUrl(new URL(url));
  const client = new Etcd3({ hosts: baseOf(url) });
  const viaEtcd3 = etcdStore(client);
  const run = Math.random().toString(36).slice(2);
  try {
    const variants = {
      'etcd lock service: lock + unlock on one lease': async (i) => {
        const key = await service.lock(`bench:${run}:v3lock:${i}`, sharedLease);
        await service.unlock(key);
      },
      'etcd lock service: grant + lock + unlock + revoke': async (i) => {
        const lease = await service.grant();
        const key = await service.lock(`bench:${run}:v3lease:${i}`, lease);
        await service.unlock(key);
        await service.revoke(lease);
      },
      'store (JSON gateway): acquire + release': async (i) => {
        const key = `bench:${run}:store:${i}`;
        const owner = newOwner();
        if (!(await store.acquire(key, owner, TTL_S * 1000))) throw new Error('acquire');
        if (!(await store.release(key, owner))) throw new Error('release');
      },
      'store (etcd3 client): acquire + release': async (i) => {
        const key = `bench:${run}:etcd3:${i}`;
        const owner = newOwner();
        if (!(await viaEtcd3.acquire(key, owner, TTL_S * 1000))) throw new Error('acquire');
        if (!(await viaEtcd3.release(key, owner))) throw new Error('release');
      },
      'Lock (JSON gateway): acquire + release': async (i) => {
        const lock = new Lock(`bench:${run}:lock:${i}`, { cache: store, ttl: `${TTL_S}s` });
        await lock.acquire();
        await lock.release();
      },
    };
    const cases = Object.entries(variants).map(([name, pair]) => ({ name, pair }));
    let counter = 0;
    for (const c of cases) for (let i = 0; i < 50; i++) await c.pair(-i - 1);
    const results = await interleave(cases, ROUNDS, (c) => perCall(() => c.pair(counter++), PAIRS));
    const base = results.get(cases[0].name);
    console.log(`etcd at ${url} (one member), ${ROUNDS} rounds interleaved, medians\n`);
    console.log('### Uncontended acquire+release, one process\n');
    console.log(
      table(
        ['case', 'us per acquire+release', 'vs lock service on one lease'],
        cases.map((c) => [
          c.name,
          fmt(results.get(c.name), 1),
          `${fmt(results.get(c.name) / base)}x`,
        ]),
      ),
    );
    console.log('');
    await contendedTable({
      script: fileURLToPath(import.meta.url),
      contenders: ['etcd lock service', 'cachelock (watches)'],
      rounds: ROUNDS,
      configFor: (name, n) => ({ url, name, key: `bench:${run}:contended:${n}` }),
    });
  } finally {
    await service.revoke(sharedLease).catch(() => {});
    await store.close();
    await viaEtcd3.close();
    client.close();
    own?.stop();
  }
}

if (isWorker()) {
  await workerMain(async ({ url, name, key }) => {
    if (name === 'etcd lock service') {
      const service = new LockService(baseOf(url));
      const lease = await service.grant(SESSION_S);
      return {
        withLock: async (fn) => {
          const held = await service.lock(key, lease);
          try {
            await fn();
          } finally {
            await service.unlock(held);
          }
        },
        close: () => service.revoke(lease),
      };
    }
    const store = storeFromUrl(new URL(url));
    return {
      withLock: cachelockWithLock(Lock, key, { cache: store, ttl: `${TTL_S}s` }),
      close: () => store.close(),
    };
  });
} else {
  await main();
}
