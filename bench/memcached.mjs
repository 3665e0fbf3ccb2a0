// Memcached: the library against the floor (the raw commands without it), and 4 processes
// contending on one key. Uses the BUILT package (`npm run build` first) and its own memcached
// on a free loopback port, or MEMCACHED_URL. Prints a markdown table.
//
//   node bench/memcached.mjs [--rounds 15] [--ops 200] [--contended-ops 100]

import { fork, spawn } from 'node:child_process';
import { once } from 'node:events';
import { createServer, Socket } from 'node:net';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';

const self = fileURLToPath(import.meta.url);

if (process.argv[2] === '--contender') {
  await contender(JSON.parse(process.argv[3]));
  process.exit(0);
}

/** One process of the contended run: take the key `ops` times, waiting as long as it takes. */
async function contender({ url, key, ops }) {
  const { Lock, closeAll } = await import('cachelock');
  process.send('ready');
  await once(process, 'message');
  const started = performance.now();
  for (let i = 0; i < ops; i++) {
    const lock = new Lock(key, { cache: url, ttl: '10s', wait: 'forever' });
    await lock.acquire();
    await lock.release();
  }
  process.send({ ms: performance.now() - started });
  await closeAll();
}

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

async function freePort() {
  const server = createServer();
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const { port } = server.address();
  await new Promise((resolve) => server.close(resolve));
  return port;
}

async function startMemcached() {
  const port = await freePort();
  const args = ['-l', '127.0.0.1', '-p', String(port), '-U', '0', '-m', '64'];
  if (process.getuid?.() === 0) args.push('-u', 'root');
  const child = spawn('memcached', args, { stdio: 'ignore' });
  const error = once(child, 'error');
  for (let i = 0; i < 200; i++) {
    const socket = new Socket();
    const connected = await Promise.race([
      once(socket.connect(port, '127.0.0.1'), 'connect').then(
        () => true,
        () => false,
      ),
      error.then(([e]) => {
        throw new Error(`could not start memcached: ${e.message}`);
      }),
    ]);
    socket.destroy();
    if (connected) return { port, stop: () => child.kill('SIGKILL') };
    await new Promise((resolve) => setTimeout(resolve, 25));
  }
  child.kill('SIGKILL');
  throw new Error('memcached did not start');
}

const median = (values) => {
  const sorted = [...values].sort((a, b) => a - b);
  const middle = sorted.length >> 1;
  return sorted.length % 2 ? sorted[middle] : (sorted[middle - 1] + sorted[middle]) / 2;
};

/**
 * Run the memcached benchmark and return its rows; `url` defaults to a memcached this function
 * starts and stops.
 */
export async function benchMemcached({ rounds = 15, ops = 200, contendedOps = 100, url } = {}) {
  const { Lock, closeAll, newOwner } = await import('cachelock');
  const { memcachedStore } = await import('cachelock/memcached');
  const own = url ? undefined : await startMemcached();
  url ??= `memcached://127.0.0.1:${own.port}`;
  const port = Number(new URL(url).port || 11211);
  const raw = new RawMemcached(port);
  await raw.connect();
  const store = memcachedStore(url);
  const run = Math.random().toString(36).slice(2);

  const variants = {
    'floor: raw add + delete': async (i) => {
      const key = `bench:${run}:floor:${i}`;
      const [added] = await raw.command(`ms ${key} 1 T31 ME\r\nx\r\n`);
      if (!added.startsWith('HD')) throw new Error('add');
      const [deleted] = await raw.command(`md ${key}\r\n`);
      if (!deleted.startsWith('HD')) throw new Error('delete');
    },
    // What the store sends, without its parsing, checks and bookkeeping: add, fence count and
    // read in one write, then the fence written under the CAS, then delete under the CAS.
    "raw: the store's own commands": async (i) => {
      const key = `bench:${run}:same:${i}`;
      const value = `${Date.now() + 30_000} - owner`;
      const [added] = await raw.command(
        `ms ${key} ${value.length} T31 ME c\r\n${value}\r\n` +
          `ma ${key}#fence N0 J${Date.now() * 1000} v\r\nmg ${key} v c\r\n`,
        5,
      );
      const cas = added.split(' ')[1].slice(1);
      const [stored] = await raw.command(`ms ${key} ${value.length} T31 C${cas} c\r\n${value}\r\n`);
      const [deleted] = await raw.command(`md ${key} C${stored.split(' ')[1].slice(1)}\r\n`);
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
  const samples = Object.fromEntries(Object.keys(variants).map((name) => [name, []]));
  try {
    // Warm up connections and JIT, then interleave the variants round by round so that drift
    // of the machine affects them alike.
    for (const fn of Object.values(variants)) for (let i = 0; i < 500; i++) await fn(-i - 1);
    let counter = 0;
    for (let round = 0; round < rounds; round++) {
      for (const [name, fn] of Object.entries(variants)) {
        globalThis.gc?.();
        const started = performance.now();
        for (let i = 0; i < ops; i++) await fn(counter++);
        samples[name].push(((performance.now() - started) * 1000) / ops);
      }
    }

    // 4 processes, one key: total acquisitions per second, median of 3 runs.
    const contended = [];
    for (let attempt = 0; attempt < 3; attempt++) {
      const key = `bench:${run}:contended:${attempt}`;
      const children = Array.from({ length: 4 }, () =>
        fork(self, ['--contender', JSON.stringify({ url, key, ops: contendedOps })], {
          stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
        }),
      );
      const exited = Promise.all(children.map((child) => once(child, 'exit')));
      // A contender that dies early must fail the run, not leave it waiting for its message.
      const died = new Promise((_, reject) => {
        for (const child of children) {
          child.once('exit', (code) => code !== 0 && reject(new Error(`contender exited ${code}`)));
        }
      });
      const all = (event) =>
        Promise.race([died, Promise.all(children.map((child) => once(child, event)))]);
      await all('message');
      const started = performance.now();
      for (const child of children) child.send('go');
      await all('message');
      contended.push((4 * contendedOps * 1000) / (performance.now() - started));
      await exited;
    }

    const floor = median(samples['floor: raw add + delete']);
    const rows = Object.entries(samples).map(([name, values]) => ({
      name,
      usPerOp: median(values),
      vsFloor: median(values) / floor,
    }));
    rows.push({ name: '4 processes, 1 key (Lock, polling)', opsPerSec: median(contended) });
    return rows;
  } finally {
    raw.close();
    await store.close();
    await closeAll();
    own?.stop();
  }
}

export function markdown(rows) {
  const lines = [
    '| memcached | median µs per acquire+release | vs floor | contended acquisitions/s |',
    '|---|---:|---:|---:|',
  ];
  for (const row of rows) {
    lines.push(
      `| ${row.name} | ${row.usPerOp?.toFixed(1) ?? ''} | ${row.vsFloor ? `${row.vsFloor.toFixed(2)}×` : ''} | ${row.opsPerSec?.toFixed(0) ?? ''} |`,
    );
  }
  return lines.join('\n');
}

if (process.argv[1] === self) {
  const { values } = parseArgs({
    options: {
      rounds: { type: 'string', default: '15' },
      ops: { type: 'string', default: '200' },
      'contended-ops': { type: 'string', default: '100' },
    },
  });
  const rows = await benchMemcached({
    rounds: Number(values.rounds),
    ops: Number(values.ops),
    contendedOps: Number(values['contended-ops']),
    url: process.env.MEMCACHED_URL,
  });
  console.log(markdown(rows));
}
