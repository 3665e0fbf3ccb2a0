// Memcached: the library against the floor (the raw commands without it), and 4 processes
// contending on one key beside the store-free floors (contention.mjs). Uses the BUILT package
// (`npm run build` first) and its own memcached on a free loopback port, or MEMCACHED_URL.
// Prints markdown tables.
//
//   node bench/memcached.mjs   (BENCH_ROUNDS, BENCH_PAIRS, BENCH_CONTENDED_MS tune it;
//                               BENCH_ONLY=uncontended or BENCH_ONLY=contended runs one section;
//                               BENCH_COMPARE=dist/memcached/other.js adds another build's rows)

import { once } from 'node:events';
import { Socket } from 'node:net';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { Lock } from 'cachelock';
import { memcachedStore } from 'cachelock/memcached';
import { cachelockWithLock, contendedTable, isWorker, workerMain } from './contention.mjs';
import { COMPARE, COMPARED, fmt, interleave, perCall, table, wanted } from './lib.mjs';
import { startMemcached } from './servers.mjs';

const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 7);
const PAIRS = Number(process.env.BENCH_PAIRS ?? 500);

/** The floor: a lock with nothing but memcached's own commands, add then delete, on one socket. */
class RawMemcached {
  constructor(port) {
    this.port = port;
    this.socket = new Socket();
    this.buffer = '';
    this.waiting = [];
  }
  async connect() {
    this.socket.connect(this.port, '127.0.0.1');
    await once(this.socket, 'connect');
    this.socket.setNoDelay(true);
    this.socket.on('data', (chunk) => {
      this.buffer += chunk.toString('latin1');
      for (let end; (end = this.buffer.indexOf('\r\n')) >= 0; ) {
        const line = this.buffer.slice(0, end);
        this.buffer = this.buffer.slice(end + 2);
        const head = this.waiting[0];
        head.lines.push(line);
        if (head.lines.length === head.expected) this.waiting.shift().resolve(head.lines);
      }
    });
  }
  /** Write `text` and resolve with the next `expected` reply lines (data lines count too). */
  command(text, expected = 1) {
    return new Promise((resolve) => {
      this.waiting.push({ expected, lines: [], resolve });
      this.socket.write(text);
    });
  }
  close() {
    this.socket.destroy();
  }
}

async function main() {
  const { newOwner } = await import('cachelock');
  const own = process.env.MEMCACHED_URL ? undefined : await startMemcached();
  const url = process.env.MEMCACHED_URL ?? `memcached://127.0.0.1:${own.port}`;
  const port = Number(new URL(url).port || 11211);
  const raw = new RawMemcached(port);
  await raw.connect();
  const store = memcachedStore(url);
  const run = Math.random().toString(36).slice(2);
  try {
    const variants = {
      'floor: raw add + delete': async (i) => {
        const key = `bench:${run}:floor:${i}`;
        const [added] = await raw.command(`ms ${key} 1 T31 ME\r\nx\r\n`);
        if (!added.startsWith('HD')) throw new Error('add');
        const [deleted] = await raw.command(`md ${key}\r\n`);
        if (!deleted.startsWith('HD')) throw new Error('delete');
      },
      // What the store sends, without its parsing, checks and bookkeeping: the add and a read of
      // the holder in one write, then a delete under the CAS of the add (no fence: see the README).
      "raw: the store's own commands": async (i) => {
        const key = `bench:${run}:same:${i}`;
        const value = `${Date.now() + 30_000} - owner`;
        const [added] = await raw.command(
          `ms ${key} ${value.length} T31 ME c\r\n${value}\r\nmg ${key} v c\r\n`,
          3,
        );
        const [deleted] = await raw.command(`md ${key} C${added.split(' ')[1].slice(1)}\r\n`);
        if (!deleted.startsWith('HD')) throw new Error('delete');
      },
      'store: acquire + release': async (i) => {
        const key = `bench:${run}:store:${i}`;
        const owner = newOwner();
        if (!(await store.acquire(key, owner, 30_000))) throw new Error('acquire');
        if (!(await store.release(key, owner))) throw new Error('release');
      },
      'Lock: acquire + release': async (i) => {
        const lock = new Lock(`bench:${run}:lock:${i}`, { cache: store, ttl: '30s' });
        await lock.acquire();
        await lock.release();
      },
    };
    console.log(`memcached at ${url}, ${ROUNDS} rounds interleaved, medians\n`);
    if (wanted('uncontended')) await uncontended(variants);
    if (wanted('contended'))
      await contendedTable({
        script: fileURLToPath(import.meta.url),
        contenders: COMPARE ? ['cachelock', COMPARED] : ['cachelock'],
        rounds: ROUNDS,
        floors: 'write',
        configFor: (name, n) => ({
          url,
          key: `bench:${run}:contended:${n}`,
          module: name === COMPARED ? COMPARE : undefined,
        }),
      });
  } finally {
    raw.close();
    await store.close();
    own?.stop();
  }
}

async function uncontended(variants) {
  const cases = Object.entries(variants).map(([name, pair]) => ({ name, pair }));
  let counter = 0;
  for (const c of cases) for (let i = 0; i < 500; i++) await c.pair(-i - 1);
  const results = await interleave(cases, ROUNDS, (c) => perCall(() => c.pair(counter++), PAIRS));
  const floor = results.get(cases[0].name);
  console.log('### Uncontended acquire+release, one process\n');
  console.log(
    table(
      ['case', 'us per acquire+release', 'vs floor'],
      cases.map((c) => [
        c.name,
        fmt(results.get(c.name), 1),
        `${fmt(results.get(c.name) / floor)}x`,
      ]),
    ),
  );
  console.log('');
}

if (isWorker()) {
  await workerMain(
    async ({ url, key, module }) => {
      const store = module
        ? (await import(pathToFileURL(module).href)).memcachedStore(url)
        : memcachedStore(url);
      return {
        withLock: cachelockWithLock(Lock, key, { cache: store, ttl: '10s' }),
        close: () => store.close(),
      };
    },
    // The write floor's one command per hand-over: a set naming the next holder.
    async ({ url, key }) => {
      const raw = new RawMemcached(Number(new URL(url).port || 11211));
      await raw.connect();
      return {
        write: async (next) => {
          const value = `holder ${next}`;
          const [stored] = await raw.command(`ms ${key} ${value.length} T10\r\n${value}\r\n`);
          if (!stored.startsWith('HD')) throw new Error(`set: ${stored}`);
        },
        close: () => raw.close(),
      };
    },
  );
} else {
  await main();
}
