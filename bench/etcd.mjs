// etcd: the library against etcd's own lock service (v3lock: /v3/lock/lock and /v3/lock/unlock
// on the JSON gateway, with a lease), uncontended and with 4 processes on one key; two keys at
// once against one key; a semaphore of 3 with 8 workers against the same loop in-process. Uses
// the BUILT package (`npm run build` first) and its own single-member etcd on free loopback
// ports, or ETCD_URL (etcd://host:2379). Prints markdown tables.
//
//   node bench/etcd.mjs   (BENCH_ROUNDS, BENCH_PAIRS, BENCH_CONTENDED_MS tune it;
//                          BENCH_ONLY=uncontended,contended,manyKeys,semaphore picks sections)

import { fileURLToPath } from 'node:url';
import { Lock, Semaphore } from 'cachelock';
import { etcdStore, storeFromUrl } from 'cachelock/etcd';
import { Etcd3 } from 'etcd3';
import {
  CONTENDED_MS,
  cachelockWithLock,
  contendedTable,
  isWorker,
  workerMain,
} from './contention.mjs';
import {
  fmt,
  inProcessSemaphore,
  interleaveStats,
  median,
  perCall,
  permitTaker,
  ratio,
  semaphoreRound,
  table,
} from './lib.mjs';
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

// What etcd did, from its /metrics: requests as the gRPC server received them (the gateway's
// included, since it calls the gRPC server; the lock service's own KV calls are in-process and
// show only in the mvcc and raft counters), raft writes (proposals committed), and the mvcc and
// lease operations behind them.
const COUNTERS = {
  writes: 'etcd_server_proposals_committed_total',
  puts: 'etcd_mvcc_put_total',
  deletes: 'etcd_mvcc_delete_total',
  grants: 'etcd_debugging_lease_granted_total',
  revokes: 'etcd_debugging_lease_revoked_total',
  renewals: 'etcd_debugging_lease_renewed_total',
};
const REQUESTS = /^grpc_server_msg_received_total\{grpc_method="(\w+)"/;

async function etcdCounts(base) {
  const text = await (await fetch(`${base}/metrics`)).text();
  const counts = { requests: 0, by: {} };
  for (const line of text.split('\n')) {
    if (line.startsWith('#')) continue;
    const [name, value] = line.split(' ');
    const method = REQUESTS.exec(name)?.[1];
    if (method !== undefined) {
      counts.requests += Number(value);
      counts.by[method] = (counts.by[method] ?? 0) + Number(value);
    }
    for (const [what, metric] of Object.entries(COUNTERS)) {
      if (name === metric) counts[what] = Number(value);
    }
  }
  return counts;
}

/** The counts between two snapshots, per section. */
function perSection(before, after, sections) {
  const out = { by: {} };
  for (const what of ['requests', ...Object.keys(COUNTERS)]) {
    out[what] = ((after[what] ?? 0) - (before[what] ?? 0)) / sections;
  }
  for (const [method, value] of Object.entries(after.by)) {
    const n = (value - (before.by[method] ?? 0)) / sections;
    if (n > 0.005) out.by[method] = n;
  }
  return out;
}

/** Per case, the median of each count over the rounds. */
function countsTable(names, samples) {
  const mid = (name, what) => median(samples.get(name).map((s) => s[what]));
  return table(
    [
      'case',
      'requests',
      'raft writes',
      'puts',
      'deletes',
      'grants',
      'revokes',
      'keep-alives',
      'requests by method',
    ],
    names.map((name) => {
      const methods = new Set(samples.get(name).flatMap((s) => Object.keys(s.by)));
      const by = [...methods]
        .map((m) => `${m} ${fmt(median(samples.get(name).map((s) => s.by[m] ?? 0)))}`)
        .join(', ');
      return [
        name,
        ...['requests', 'writes', 'puts', 'deletes', 'grants', 'revokes', 'renewals'].map((w) =>
          fmt(mid(name, w)),
        ),
        by,
      ];
    }),
  );
}

const only = process.env.BENCH_ONLY?.split(',');
const wanted = (section) => !only || only.includes(section);

async function main() {
  const own = process.env.ETCD_URL ? undefined : await startEtcd();
  const url = process.env.ETCD_URL ?? `etcd://127.0.0.1:${own.port}`;
  const service = new LockService(baseOf(url));
  const sharedLease = await service.grant(SESSION_S);
  const store = storeFromUrl(new URL(url));
  const client = new Etcd3({ hosts: baseOf(url) });
  const viaEtcd3 = etcdStore(client);
  const run = Math.random().toString(36).slice(2);
  const setup = { url, service, sharedLease, store, client, viaEtcd3, run };
  console.log(`etcd at ${url} (one member), ${ROUNDS} rounds interleaved, medians\n`);
  try {
    if (wanted('uncontended')) await uncontended(setup);
    if (wanted('contended')) await contended(setup);
    if (wanted('manyKeys')) await manyKeys(setup);
    if (wanted('semaphore')) await semaphore(setup);
  } finally {
    await service.revoke(sharedLease).catch(() => {});
    await store.close();
    await viaEtcd3.close();
    client.close();
    own?.stop();
  }
}

async function uncontended({ url, service, sharedLease, store, client, viaEtcd3, run }) {
  const { newOwner } = await import('cachelock');
  {
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
      "etcd3's Lock (grant + put, revoke): acquire + release": async (i) => {
        const lock = client.lock(`bench:${run}:etcd3lock:${i}`).ttl(TTL_S);
        await lock.acquire();
        await lock.release();
      },
      'Lock (JSON gateway): acquire + release': async (i) => {
        const lock = new Lock(`bench:${run}:lock:${i}`, { cache: store, ttl: `${TTL_S}s` });
        await lock.acquire();
        await lock.release();
      },
      'Lock (etcd3 client): acquire + release': async (i) => {
        const lock = new Lock(`bench:${run}:lock3:${i}`, { cache: viaEtcd3, ttl: `${TTL_S}s` });
        await lock.acquire();
        await lock.release();
      },
    };
    const cases = Object.entries(variants).map(([name, pair]) => ({ name, pair }));
    let counter = 0;
    for (const c of cases) for (let i = 0; i < 50; i++) await c.pair(-i - 1);
    const counts = new Map(cases.map((c) => [c.name, []]));
    const results = await interleaveStats(cases, ROUNDS, async (c) => {
      const before = await etcdCounts(baseOf(url));
      const cpuBefore = process.cpuUsage();
      const value = await perCall(() => c.pair(counter++), PAIRS);
      const cpu = process.cpuUsage(cpuBefore);
      counts.get(c.name).push(perSection(before, await etcdCounts(baseOf(url)), PAIRS));
      return { value, cpuUs: (cpu.user + cpu.system) / PAIRS };
    });
    const base = results.get(cases[0].name);
    console.log('### Uncontended acquire+release, one process\n');
    console.log(
      table(
        [
          'case',
          'us per acquire+release',
          'vs lock service on one lease (range)',
          'client CPU us per pair',
        ],
        cases.map((c) => [
          c.name,
          fmt(results.get(c.name).median, 1),
          ratio(results.get(c.name), base),
          fmt(results.get(c.name).cpuUs, 1),
        ]),
      ),
    );
    console.log('\netcd per acquire+release (medians of rounds):\n');
    console.log(
      countsTable(
        cases.map((c) => c.name),
        counts,
      ),
    );
    console.log('');
  }
}

const CONTENDERS = ['etcd lock service', 'cachelock (JSON gateway)', 'cachelock (etcd3 client)'];

/** 4 processes on one key; per round, the sections, the workers' CPU and etcd's counts. */
async function contended({ url, run }) {
  const rounds = new Map(CONTENDERS.map((name) => [name, []]));
  const counts = new Map(CONTENDERS.map((name) => [name, []]));
  const { cpu } = await contendedTable({
    script: fileURLToPath(import.meta.url),
    contenders: CONTENDERS,
    rounds: ROUNDS,
    configFor: (name, n) => ({ url, name, key: `bench:${run}:contended:${n}` }),
    aroundFor: (name) => {
      let before;
      return {
        before: async () => {
          before = await etcdCounts(baseOf(url));
        },
        after: async (reports) => {
          const sections = reports.reduce((sum, r) => sum + r.sections, 0);
          rounds.get(name).push(sections / (CONTENDED_MS / 1000));
          counts.get(name).push(perSection(before, await etcdCounts(baseOf(url)), sections));
        },
      };
    },
  });
  const anchor = { values: rounds.get(CONTENDERS[0]) };
  console.log('Against the lock service, round by round:\n');
  console.log(
    table(
      ['library', 'sections/s', 'vs lock service (range)', 'CPU us per section (all workers)'],
      CONTENDERS.map((name) => [
        name,
        fmt(median(rounds.get(name)), 0),
        ratio({ values: rounds.get(name) }, anchor),
        fmt(median(cpu.get(name)), 0),
      ]),
    ),
  );
  console.log('\netcd per section (medians of rounds):\n');
  console.log(countsTable(CONTENDERS, counts));
  console.log('');
}

/** The store with its exclusive lock only: `Lock([...])` then takes the keys one at a time. */
function withoutCapabilities(store) {
  return {
    kind: store.kind,
    atomic: store.atomic,
    acquire: (...args) => store.acquire(...args),
    release: (...args) => store.release(...args),
    extend: (...args) => store.extend(...args),
    inspect: (...args) => store.inspect(...args),
    onRelease: store.onRelease,
  };
}

/** Two keys against one, uncontended: the etcd lock service on one key is the anchor. */
async function manyKeys({ service, sharedLease, store, viaEtcd3, run }) {
  const oneByOne = withoutCapabilities(store);
  const ttl = `${TTL_S}s`;
  const lockPair = (cache, keys) => async () => {
    const lock = new Lock(keys, { cache, ttl });
    await lock.acquire();
    await lock.release();
  };
  let n = 0;
  const fresh = (label) => `bench:${run}:${label}:${n++}`;
  const cases = [
    {
      name: 'etcd lock service: lock + unlock on one lease, one key',
      pair: async () => service.unlock(await service.lock(fresh('v3'), sharedLease)),
    },
    { name: "Lock('a') (JSON gateway)", pair: () => lockPair(store, fresh('one'))() },
    {
      name: "Lock(['a', 'b']) (JSON gateway): one transaction",
      pair: () => lockPair(store, [fresh('a'), fresh('b')])(),
    },
    {
      name: "Lock(['a', 'b']) (JSON gateway), without the keys capability: one key at a time",
      pair: () => lockPair(oneByOne, [fresh('a'), fresh('b')])(),
    },
    { name: "Lock('a') (etcd3 client)", pair: () => lockPair(viaEtcd3, fresh('one3'))() },
    {
      name: "Lock(['a', 'b']) (etcd3 client): one transaction",
      pair: () => lockPair(viaEtcd3, [fresh('a3'), fresh('b3')])(),
    },
  ];
  for (const c of cases) for (let i = 0; i < 50; i++) await c.pair();
  const results = await interleaveStats(cases, ROUNDS, async (c) => {
    const cpuBefore = process.cpuUsage();
    const value = await perCall(c.pair, PAIRS);
    const cpu = process.cpuUsage(cpuBefore);
    return { value, cpuUs: (cpu.user + cpu.system) / PAIRS };
  });
  const anchor = results.get(cases[0].name);
  console.log('### Two keys against one, uncontended acquire+release, one process\n');
  console.log(
    table(
      ['case', 'us per acquire+release', 'vs lock service (range)', 'CPU us per pair'],
      cases.map((c) => [
        c.name,
        fmt(results.get(c.name).median, 1),
        ratio(results.get(c.name), anchor),
        fmt(results.get(c.name).cpuUs, 1),
      ]),
    ),
  );
  console.log('');
}

// A semaphore of 3 permits, 8 workers each with a store of its own (as 8 processes would have),
// 1 ms hold, 0-2 ms between sections.
const PERMITS = 3;
const SEM_WORKERS = 8;

async function semaphore({ url, client, run }) {
  let n = 0;
  const contenders = [
    {
      name: `async-mutex Semaphore(${PERMITS}) in one process (the limit)`,
      open: () => inProcessSemaphore(PERMITS, SEM_WORKERS),
    },
    ...[
      ['JSON gateway', () => storeFromUrl(new URL(url))],
      ['etcd3 client', () => etcdStore(client)],
    ].map(([how, makeStore]) => ({
      name: `cachelock Semaphore (${how})`,
      open: () => {
        const key = `bench:${run}:semaphore:${n++}`;
        const stores = Array.from({ length: SEM_WORKERS }, makeStore);
        return {
          takers: stores.map((cache) => {
            const semaphore = new Semaphore(key, {
              cache,
              permits: PERMITS,
              ttl: `${TTL_S}s`,
              wait: '30s',
            });
            return permitTaker(semaphore);
          }),
          close: () => Promise.all(stores.map((store) => store.close())),
        };
      },
    })),
  ];
  const worst = new Map(contenders.map((c) => [c.name, []]));
  const counts = new Map(contenders.map((c) => [c.name, []]));
  const rates = await interleaveStats(contenders, ROUNDS, async (contender) => {
    const { takers, close } = contender.open();
    // Watches and spare leases set up before the clock starts.
    for (const take of takers) await (await take())();
    const before = await etcdCounts(baseOf(url));
    const { sections, worstWait, cpuUs } = await semaphoreRound(
      contender.name,
      takers,
      PERMITS,
      CONTENDED_MS,
    );
    counts.get(contender.name).push(perSection(before, await etcdCounts(baseOf(url)), sections));
    await close();
    worst.get(contender.name).push(worstWait);
    return { value: sections / (CONTENDED_MS / 1000), cpuUs };
  });
  const limit = rates.get(contenders[0].name);
  console.log(
    `### Semaphore of ${PERMITS} permits, ${SEM_WORKERS} workers each with its own store, 1 ms hold, 0-2 ms between sections\n`,
  );
  console.log(
    table(
      [
        'library',
        'sections/s',
        'vs in-process limit (range)',
        'CPU us per section',
        'worst wait (ms, median of rounds)',
      ],
      contenders.map((c) => [
        c.name,
        fmt(rates.get(c.name).median, 0),
        ratio(rates.get(c.name), limit),
        fmt(rates.get(c.name).cpuUs, 0),
        fmt(median(worst.get(c.name)), 1),
      ]),
    ),
  );
  console.log('\netcd per section (medians of rounds; the in-process limit makes none):\n');
  console.log(
    countsTable(
      contenders.slice(1).map((c) => c.name),
      counts,
    ),
  );
  console.log('');
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
    const client =
      name === 'cachelock (etcd3 client)' ? new Etcd3({ hosts: baseOf(url) }) : undefined;
    const store = client ? etcdStore(client) : storeFromUrl(new URL(url));
    return {
      withLock: cachelockWithLock(Lock, key, { cache: store, ttl: `${TTL_S}s` }),
      close: async () => {
        await store.close();
        client?.close();
      },
    };
  });
} else {
  await main();
}
