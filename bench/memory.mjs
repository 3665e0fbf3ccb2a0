// The in-memory store through the public Lock API against async-mutex, the in-process floor.
import { pathToFileURL } from 'node:url';
import * as current from 'cachelock';
import { asyncMutex, fmt, interleaveStats, perCall, ratio, table } from './lib.mjs';

const { Mutex } = asyncMutex;

const ITERATIONS = Number(process.env.BENCH_ITERATIONS ?? 100_000);
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 7);

// BENCH_COMPARE=path/to/another/dist/index.js adds that build's rows, suffixed "[compare]",
// interleaved with this build's: a before/after comparison in one run.
const builds = [{ suffix: '', lib: current }];
if (process.env.BENCH_COMPARE) {
  builds.push({
    suffix: ' [compare]',
    lib: await import(pathToFileURL(process.env.BENCH_COMPARE).href),
  });
}
const { Lock, memoryStore } = current;

const mutex = new Mutex();
const runMutex = new Mutex();
let keyIndex = 0;

// Each case's ratio is to its `floor`: `run()` is compared with `runExclusive`, its equivalent.
const uncontended = [
  { name: 'async-mutex', run: async () => (await mutex.acquire())() },
  { name: 'async-mutex runExclusive', run: () => runMutex.runExclusive(() => undefined) },
];
for (const { suffix, lib } of builds) {
  const cache = lib.memoryStore();
  const reused = new lib.Lock('bench', { cache });
  uncontended.push(
    {
      name: `cachelock, one Lock reused${suffix}`,
      run: async () => {
        await reused.acquire();
        await reused.release();
      },
    },
    {
      name: `cachelock, new Lock per call${suffix}`,
      run: async () => {
        const lock = new lib.Lock('bench-new', { cache });
        await lock.acquire();
        await lock.release();
      },
    },
    {
      name: `cachelock, run()${suffix}`,
      floor: 'async-mutex runExclusive',
      run: () => new lib.Lock('bench-run', { cache }).run(() => undefined),
    },
  );
}

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
  ...builds.map(({ suffix, lib }) => ({
    name: `cachelock${suffix}`,
    run: async () => {
      const store = lib.memoryStore();
      let left = SECTIONS;
      const worker = async () => {
        const lock = new lib.Lock('contended', { cache: store, wait: 'forever' });
        while (left > 0) {
          await lock.acquire();
          left--;
          await lock.release();
        }
      };
      await Promise.all(Array.from({ length: WORKERS }, worker));
    },
  })),
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
const rows = (cases, results) =>
  cases.map(({ name, floor = 'async-mutex' }) => {
    const s = results.get(name);
    return [
      name,
      fmt(s.median, 3),
      `${fmt(s.min, 3)}-${fmt(s.max, 3)}`,
      `${ratio(s, results.get(floor))}${floor === 'async-mutex' ? '' : ` vs ${floor}`}`,
      fmt(s.cpuUs, 3),
    ];
  });

const u = await interleaveStats(uncontended, ROUNDS, measureUncontended);
console.log(
  `\n### In-process: uncontended acquire+release (${ROUNDS} interleaved rounds of ${ITERATIONS}; async-mutex ${Mutex.name} from its CommonJS build)\n`,
);
console.log(table(headers('us per acquire+release'), rows(uncontended, u)));

const c = await interleaveStats(contended, ROUNDS, measureContended);
console.log(
  `\n### In-process: ${WORKERS} workers on one key, hand-off cost (${ROUNDS} interleaved rounds)\n`,
);
console.log(table(headers('us per section'), rows(contended, c)));

// Memory after a million distinct keys locked and released once.
if (typeof globalThis.gc === 'function' && process.env.BENCH_HEAP !== '0') {
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
