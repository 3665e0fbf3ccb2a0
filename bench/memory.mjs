// The in-memory store through the public Lock API against async-mutex, the in-process floor.
import { Mutex } from 'async-mutex';
import { Lock, memoryStore } from 'cachelock';
import { fmt, interleave, perCall, table } from './lib.mjs';

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
  return perCall(c.run, ITERATIONS);
}

async function measureContended(c) {
  const started = performance.now();
  await c.run();
  return ((performance.now() - started) * 1000) / SECTIONS;
}

const u = await interleave(uncontended, ROUNDS, measureUncontended);
const floor = u.get('async-mutex');
console.log(
  `\n### In-process: uncontended acquire+release (median of ${ROUNDS} interleaved rounds of ${ITERATIONS})\n`,
);
console.log(
  table(
    ['case', 'us per acquire+release', 'x async-mutex'],
    [...u].map(([name, us]) => [name, fmt(us, 3), fmt(us / floor)]),
  ),
);

const c = await interleave(contended, ROUNDS, measureContended);
const cFloor = c.get('async-mutex');
console.log(
  `\n### In-process: ${WORKERS} workers on one key, hand-off cost (median of ${ROUNDS} rounds)\n`,
);
console.log(
  table(
    ['case', 'us per section', 'x async-mutex'],
    [...c].map(([name, us]) => [name, fmt(us, 3), fmt(us / cFloor)]),
  ),
);

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
