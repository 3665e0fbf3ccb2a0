// One worker of the nemesis suite (see runner.ts). It takes ONE key over and over with a short
// ttl and autoExtend, does a read-modify-write on the runner's resource inside each critical
// section, and writes every event to its history file. It imports the BUILT package by its own
// name, as a user's process would, so it needs `npm run build` first.
import { appendFileSync } from 'node:fs';
import { connect } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import {
  closeAll,
  Lock,
  LockTimeoutError,
  ReadWriteLock,
  registerScheme,
  Semaphore,
  StoreError,
} from 'cachelock';

const {
  worker,
  key,
  ttlMs,
  history,
  cache: cacheConfig,
  workload = 'lock',
  permits,
} = JSON.parse(process.argv[2]);
const now = () => process.hrtime.bigint();
const record = (event) =>
  appendFileSync(
    history,
    `${JSON.stringify({ ...event, worker, t: event.t ?? now() }, (_, v) =>
      typeof v === 'bigint' ? String(v) : v,
    )}\n`,
  );

// --- the runner's resource, over IPC -----------------------------------------------------------
let nextId = 0;
const replies = new Map();
let stopping = false;
const stop = new AbortController();
process.on('message', (message) => {
  if (message.kind === 'reply') {
    replies.get(message.id)?.(message);
    replies.delete(message.id);
  } else if (message.kind === 'stop') {
    stopping = true;
    stop.abort(new Error('stopping'));
  }
});
const ask = (message) =>
  new Promise((resolve) => {
    const id = ++nextId;
    replies.set(id, resolve);
    process.send({ ...message, id });
  });
const tell = (state) => process.send({ kind: 'state', state });

// --- the cache each worker opens for itself ----------------------------------------------------
const closers = [];
async function openCache(config) {
  switch (config.kind) {
    case 'url':
      return config.url;
    case 'redlock': {
      const { storeFromUrl } = await import('cachelock/redlock');
      registerScheme('redlock', storeFromUrl);
      return config.url;
    }
    case 'cluster': {
      const { Cluster } = await import('ioredis');
      const cluster = new Cluster(config.nodes);
      cluster.on('error', () => {});
      closers.push(() => cluster.quit());
      return cluster;
    }
    case 'keyv': {
      const { default: Keyv } = await import('keyv');
      const { default: KeyvRedis } = await import('@keyv/redis');
      const keyv = new Keyv({ store: new KeyvRedis(config.url), namespace: config.namespace });
      keyv.on('error', () => {});
      closers.push(() => keyv.disconnect());
      return keyv;
    }
    case 'plain':
      return plainCache(config.port, config.maxDelayMs);
    default:
      throw new Error(`unknown cache kind ${config.kind}`);
  }
}

/**
 * A plain cache (get, set, delete, add, compareAndSet, compareAndDelete) over the runner's
 * shared cache server, with a random delay before and after every call, as a slow network
 * cache would have. The adapter uses whichever of these methods it knows.
 */
function plainCache(port, maxDelayMs) {
  const socket = connect(port, '127.0.0.1');
  socket.setNoDelay(true);
  closers.push(() => socket.end());
  const pending = new Map();
  let buffer = '';
  let id = 0;
  socket.on('data', (chunk) => {
    buffer += chunk;
    let newline = buffer.indexOf('\n');
    while (newline >= 0) {
      const reply = JSON.parse(buffer.slice(0, newline));
      buffer = buffer.slice(newline + 1);
      pending.get(reply.id)?.(reply.result);
      pending.delete(reply.id);
      newline = buffer.indexOf('\n');
    }
  });
  const jitter = () => sleep(Math.random() * maxDelayMs);
  const call = async (op, ...args) => {
    await jitter();
    const result = await new Promise((resolve) => {
      const callId = ++id;
      pending.set(callId, resolve);
      socket.write(`${JSON.stringify({ id: callId, op, args })}\n`);
    });
    await jitter();
    return result ?? undefined;
  };
  return {
    get: (k) => call('get', k),
    set: (k, value, ttl) => call('set', k, value, ttl),
    delete: (k) => call('delete', k),
    add: (k, value, ttl) => call('add', k, value, ttl),
    compareAndSet: (k, expected, value, ttl) => call('compareAndSet', k, expected, value, ttl),
    compareAndDelete: (k, expected) => call('compareAndDelete', k, expected),
  };
}

const cache = await openCache(cacheConfig);

// --- the loop ----------------------------------------------------------------------------------
await new Promise((resolve) => {
  process.once('message', resolve);
  process.send({ kind: 'ready', pid: process.pid });
});

let acquisition = 0;
const options = { cache, ttl: ttlMs, autoExtend: true, wait: '30s', signal: stop.signal };
// A semaphore's permits and a read/write lock's sides have the members the loop uses.
const semaphore =
  workload === 'semaphore' ? new Semaphore(key, { ...options, permits }) : undefined;
const rw = workload === 'rw' ? new ReadWriteLock(key, options) : undefined;
while (!stopping) {
  const role = rw === undefined ? undefined : Math.random() < 0.35 ? 'writer' : 'reader';
  let lock = workload === 'lock' ? new Lock(key, options) : undefined;
  // Only one writer at a time may do the read-modify-write: permit holders and readers share.
  const writes = workload === 'lock' || role === 'writer';
  const a = ++acquisition;
  tell('waiting');
  record({ type: 'requested', acquisition: a });
  try {
    if (lock !== undefined) await lock.acquire();
    else if (semaphore !== undefined) lock = await semaphore.acquire();
    else lock = role === 'writer' ? await rw.write() : await rw.read();
  } catch (error) {
    if (stopping) break;
    // A store that cannot be reached, or a wait that ran out, is what faults are for.
    if (!(error instanceof StoreError || error instanceof LockTimeoutError)) throw error;
    record({ type: 'acquire-failed', acquisition: a, code: error.code });
    tell('idle');
    await sleep(20);
    continue;
  }
  record({ type: 'granted', acquisition: a, fence: lock.fence, role });
  tell('holding');
  // Read after the grant: the signal of this acquisition.
  const signal = lock.signal;
  signal.addEventListener('abort', () =>
    record({ type: 'lost', acquisition: a, reason: String(signal.reason?.message) }),
  );
  const believes = (where) => {
    const t = now();
    const held = lock.held;
    const aborted = signal.aborted;
    record({ type: 'check', t, acquisition: a, held, aborted, where });
    return held && !aborted;
  };

  if (believes('granted')) {
    const read = writes
      ? await ask({ kind: 'read', acquisition: a, fence: lock.fence?.toString() })
      : undefined;
    // A few short awaits, some longer than a third of the lease, so that autoExtend runs.
    let holding = believes('read');
    for (let step = Math.floor(Math.random() * 4); holding && step >= 0; step--) {
      await sleep(Math.random() * ttlMs * 0.25);
      holding = believes('work');
    }
    if (writes && holding && believes('write')) {
      await ask({
        kind: 'write',
        acquisition: a,
        fence: lock.fence?.toString(),
        value: read.value + 1,
        version: read.version,
      });
      believes('written');
    }
  }
  const releasedAt = now();
  let ok = null;
  try {
    ok = await lock.release();
  } catch (error) {
    if (!(error instanceof StoreError)) throw error;
  }
  record({ type: 'released', t: releasedAt, acquisition: a, ok });
  tell('idle');
}

tell('done');
await closeAll();
await Promise.allSettled(closers.map((close) => close()));
// Nothing else may keep the process alive: a lock library that leaves a timer or a socket
// open is what the runner's exit check catches.
process.disconnect();
