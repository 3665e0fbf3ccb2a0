// The in-memory store through the public Lock API against async-mutex, the in-process floor.
import { createRequire } from 'node:module';
import { Lock, memoryStore } from 'cachelock';
import { fmt, interleaveStats, perCall, ratio, table } from './lib.mjs';

// async-mutex's CommonJS build (lib/index.js) is about 3x faster than its ESM build
// (index.mjs) on Node.js 20-24: the anchor is measured through its fastest build.
const { Mutex } = createRequire(import.meta.url)('async-mutex');

const ITERATIONS = Number(process.env.BENCH_ITERATIONS ?? 100_000);
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 7);

const mutex = new Mutex();
const cache = memoryStore();
const reused = new Lock('bench', { cache });
let keyIndex = 0;

const uncontended = [
  { name: 'async-mutex', run: async () => (await mutex.acquire())() },
  {
    name: 'cachelock, one Lock reused',
    run: async () => {
      await reused.acquire();
      await reused.release();
    },
  },
  {
    name: 'cachelock, new Lock per call',
    run: async () => {
      const lock = new Lock('bench-new', { cache });
      await lock.acquire();
      await lock.release();
    },
  },
  {
    name: 'cachelock, run()',
    run: () => new Lock('bench-run', { cache }).run(() => undefined),
  },
];

// Contended: WORKERS async workers take one key in turn; sections per second.
const WORKERS = 4;
const SECTIONS = 20_000;
const contended = [
  {
    name: 'async-mutex',
    run: async () => {
      const m = new Mutex();
      let left = SECTIONS;
      const worker = async () => {
        while (left > 0) {
          const release = await m.acquire();
          left--;
          release();
        }
      };
      await Promise.all(Array.from({ length: WORKERS }, worker));
    },
  },
  {
    name: 'cachelock',
    run: async () => {
      const store = memoryStore();
      let left = SECTIONS;
      const worker = async () => {
        const lock = new Lock('contended', { cache: store, wait: 'forever' });
        while (left > 0) {
          await lock.acquire();
          left--;
          await lock.release();
        }
      };
      await Promise.all(Array.from({ length: WORKERS }, worker));
    },
  },
];

async function measureUncontended(c) {
  for (let i = 0; i < 2_000; i++) await c.run();
  const cpu = process.cpuUsage();
  const value = await perCall(c.run, ITERATIONS);
  const used = process.cpuUsage(cpu);
  return { value, cpuUs: (used.user + used.system) / ITERATIONS };
}

async function measureContended(c) {
  const cpu = process.cpuUsage();
  const started = performance.now();
  await c.run();
  const used = process.cpuUsage(cpu);
  return {
    value: ((performance.now() - started) * 1000) / SECTIONS,
    cpuUs: (used.user + used.system) / SECTIONS,
  };
}

const headers = (unit) => [
  'case',
  `${unit} (median)`,
  'range over rounds',
  'x async-mutex (range)',
  'CPU us per op',
];
const rows = (results, floor) =>
  [...results].map(([name, s]) => [
    name,
    fmt(s.median, 3),
    `${fmt(s.min, 3)}-${fmt(s.max, 3)}`,
    ratio(s, floor),
    fmt(s.cpuUs, 3),
  ]);

const u = await interleaveStats(uncontended, ROUNDS, measureUncontended);
console.log(
  `\n### In-process: uncontended acquire+release (${ROUNDS} interleaved rounds of ${ITERATIONS}; async-mutex ${Mutex.name} from its CommonJS build)\n`,
);
console.log(table(headers('us per acquire+release'), rows(u, u.get('async-mutex'))));

const c = await interleaveStats(contended, ROUNDS, measureContended);
console.log(
  `\n### In-process: ${WORKERS} workers on one key, hand-off cost (${ROUNDS} interleaved rounds)\n`,
);
console.log(table(headers('us per section'), rows(c, c.get('async-mutex'))));

// Memory after a million distinct keys locked and released once.
if (typeof globalThis.gc === 'function') {
  const store = memoryStore();
  const heap = () => {
    globalThis.gc();
    return process.memoryUsage().heapUsed / 1024 / 1024;
  };
  const before = heap();
  const samples = [];
  for (let i = 1; i <= 1_000_000; i++) {
    const lock = new Lock(`distinct-${i}-${keyIndex++}`, { cache: store });
    await lock.acquire();
    await lock.release();
    if (i % 250_000 === 0) samples.push([i, heap() - before]);
  }
  console.log('\n### Heap growth while 1,000,000 distinct keys are locked and released once\n');
  console.log(
    table(
      ['keys so far', 'heap growth (MiB)'],
      samples.map(([n, mib]) => [n.toLocaleString('en'), fmt(mib)]),
    ),
  );
  console.log(`\nleases left in the store: ${store.size}`);
}
