import { type ChildProcess, spawn } from 'node:child_process';
import { copyFileSync, mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { basename, join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { closeAll, Lock, LockLostError, StoreError } from 'cachelock';
import { lockKeys, redisStore } from 'cachelock/redis';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { bundleChild } from '../support/bundle.js';
import { binaryOrSkip, closedPort } from '../support/reachable.js';
import { RedisServer, sleep } from '../support/redis-server.js';
import { TcpProxy } from '../support/tcp-proxy.js';
import { writeWithFence } from './fixtures/resource.js';

const runs = await binaryOrSkip('Redis fault', 'redis-server');
const repo = fileURLToPath(new URL('../../', import.meta.url));
let counter = 0;
const key = (label: string) => `faults:${process.pid}:${label}:${++counter}`;

/** Bundle a fixture with the current sources, placed inside the repo so it finds node_modules. */
async function fixture(name: string): Promise<string> {
  const bundled = await bundleChild(
    fileURLToPath(new URL(`./fixtures/${name}.ts`, import.meta.url)),
  );
  mkdirSync(join(repo, '.tmp'), { recursive: true });
  const dir = mkdtempSync(join(repo, '.tmp', 'redis-fixture-'));
  const target = join(dir, basename(bundled));
  copyFileSync(bundled, target);
  return target;
}

interface Child {
  process: ChildProcess;
  next(): Promise<Record<string, unknown>>;
}

function start(script: string, args: string[]): Child {
  const child = spawn(process.execPath, [script, ...args], {
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  const lines = createInterface({ input: child.stdout! });
  const queue: string[] = [];
  let waiting: ((line: string) => void) | undefined;
  lines.on('line', (line) => {
    if (waiting) {
      const resolve = waiting;
      waiting = undefined;
      resolve(line);
    } else queue.push(line);
  });
  return {
    process: child,
    next: () =>
      new Promise((resolve, reject) => {
        const timer = setTimeout(
          () => reject(new Error('the child said nothing for 10 s')),
          10_000,
        );
        const take = (line: string) => {
          clearTimeout(timer);
          resolve(JSON.parse(line));
        };
        const queued = queue.shift();
        if (queued !== undefined) take(queued);
        else waiting = take;
      }),
  };
}

describe.runIf(runs)('redis faults, on throwaway servers', () => {
  let server: RedisServer;
  let holder: string;
  let waiter: string;
  const children: ChildProcess[] = [];

  beforeAll(async () => {
    server = await RedisServer.start();
    holder = await fixture('holder');
    waiter = await fixture('waiter');
  });
  afterAll(async () => {
    for (const child of children) if (child.exitCode === null) child.kill('SIGKILL');
    await closeAll();
    await server?.dispose();
    for (const script of [holder, waiter]) {
      if (script) rmSync(join(script, '..'), { recursive: true, force: true });
    }
  });

  it('a holder killed with SIGKILL frees the lock within its lease', async () => {
    const k = key('sigkill');
    const ttl = 1_000;
    const child = start(holder, [server.url, k, String(ttl)]);
    children.push(child.process);
    const { acquired } = await child.next();
    child.process.kill('SIGKILL');
    const killedAt = Date.now();
    const next = await Lock.acquire(k, { cache: server.url, wait: '10s', ttl: '5s' });
    // The lease ran out on the server; nobody released it.
    expect(Date.now() - killedAt).toBeLessThan(ttl + 1_000);
    expect(next.fence!).toBeGreaterThan(BigInt(acquired as string));
    expect(await next.release()).toBe(true);
  });

  it('a holder paused past its lease is told after SIGCONT, and its stale write is turned away', async () => {
    const k = key('sigstop');
    const ttl = 600;
    const child = start(holder, [server.url, k, String(ttl)]);
    children.push(child.process);
    const paused = BigInt((await child.next()).acquired as string);
    child.process.kill('SIGSTOP');
    const next = await Lock.acquire(k, { cache: server.url, wait: '10s', ttl: '10s' });
    expect(next.fence!).toBeGreaterThan(paused);
    const resource = new Redis(server.port, '127.0.0.1');
    try {
      expect(await writeWithFence(resource, k, next.fence!, 'from the next holder')).toBe(
        'accepted',
      );
      child.process.kill('SIGCONT');
      const report = await child.next();
      expect(report).toMatchObject({
        resumed: true,
        aborted: true,
        reason: 'LOST',
        write: 'rejected',
      });
      expect(await resource.get(`resource:${k}`)).toBe('from the next holder');
      expect(next.held).toBe(true);
      expect(await next.release()).toBe(true);
    } finally {
      child.process.kill('SIGKILL');
      resource.disconnect();
    }
  });

  it('a waiter paused in line past its hand-off claim does not hold the key another process took', async () => {
    const k = key('paused-waiter');
    const names = lockKeys(`cachelock:${k}`);
    const observer = new Redis(server.port, '127.0.0.1');
    const first = await Lock.acquire(k, { cache: server.url, ttl: '30s' });
    // A ttl of 300 ms makes the hand-off's claim 300 ms.
    const child = start(waiter, [server.url, k, '300']);
    children.push(child.process);
    try {
      await waitUntil(async () => {
        const [, subscribers] = (await observer.pubsub('NUMSUB', names.channel)) as [
          string,
          number,
        ];
        return subscribers >= 1 && (await observer.zcard(names.line)) >= 1;
      }, 10_000);
      child.process.kill('SIGSTOP');
      expect(await first.release()).toBe(true);
      expect((await Lock.inspect(k, { cache: server.url }))?.pid).toBe(child.process.pid);
      // The claim runs out while the waiter sleeps; this process takes the key.
      const next = await Lock.acquire(k, { cache: server.url, ttl: '30s', wait: '10s' });
      expect(next.fence!).toBeGreaterThan(first.fence!);
      child.process.kill('SIGCONT');
      const early = await Promise.race([child.next(), sleep(1_500).then(() => undefined)]);
      expect(early).toBeUndefined();
      expect(next.held).toBe(true);
      expect(await next.release()).toBe(true);
      const report = early ?? (await child.next());
      expect(report).toMatchObject({ held: true, aborted: false });
      expect(BigInt(report.acquired as string)).toBeGreaterThan(next.fence!);
    } finally {
      child.process.kill('SIGKILL');
      observer.disconnect();
    }
  });

  it('a server restart while a lock is held loses the lease, and new locks work again', async () => {
    const own = await RedisServer.start();
    const unhandled: unknown[] = [];
    const onUnhandled = (reason: unknown) => unhandled.push(reason);
    process.on('unhandledRejection', onUnhandled);
    try {
      const k = key('restart');
      const lost: LockLostError[] = [];
      const lock = await Lock.acquire(k, { cache: own.url, ttl: 600, onLost: (e) => lost.push(e) });
      await own.restart();
      await waitUntil(() => lock.signal.aborted, 10_000);
      expect(lock.signal.reason).toBeInstanceOf(LockLostError);
      expect(lost).toHaveLength(1);
      expect(await lock.release()).toBe(false);
      const again = await Lock.acquire(k, { cache: own.url, ttl: 5_000, wait: '5s' });
      expect(again.held).toBe(true);
      expect(await again.release()).toBe(true);
      await sleep(50);
      expect(unhandled).toEqual([]);
    } finally {
      process.off('unhandledRejection', onUnhandled);
      await own.dispose();
    }
  });

  it('a connection cut mid-hold gives a store error and a lost lease, then recovers', async () => {
    const proxy = await TcpProxy.start(server.port);
    try {
      const k = key('cut');
      const lost: LockLostError[] = [];
      const lock = await Lock.acquire(k, {
        cache: proxy.url,
        ttl: 900,
        onLost: (e) => lost.push(e),
      });
      proxy.cut();
      await waitUntil(() => lock.signal.aborted, 10_000);
      expect(lost).toHaveLength(1);
      expect(lost[0]).toBeInstanceOf(LockLostError);
      const during = new Lock(key('cut-other'), { cache: proxy.url });
      await expect(during.acquire()).rejects.toBeInstanceOf(StoreError);
      proxy.restore();
      await waitUntil(
        async () => await new Lock(k, { cache: proxy.url }).tryAcquire().catch(() => false),
        10_000,
      );
    } finally {
      await proxy.close();
    }
  });

  it('a server that stops answering: operations reject after commandTimeout, then work again', async () => {
    const own = await RedisServer.start();
    const client = new Redis(own.port, '127.0.0.1', { maxRetriesPerRequest: null });
    client.on('error', () => {});
    const store = redisStore(client, { commandTimeout: '300ms' });
    try {
      const k = key('stopped');
      await client.ping();
      process.kill(own.pid!, 'SIGSTOP');
      const started = Date.now();
      const results = await Promise.allSettled(
        Array.from({ length: 3 }, () => new Lock(k, { cache: store }).acquire()),
      );
      const elapsed = Date.now() - started;
      for (const result of results) {
        expect(result.status).toBe('rejected');
        expect((result as PromiseRejectedResult).reason).toBeInstanceOf(StoreError);
      }
      // commandTimeout, give or take the sweep's quarter
      expect(elapsed).toBeGreaterThanOrEqual(290);
      expect(elapsed).toBeLessThan(1_000);
      process.kill(own.pid!, 'SIGCONT');
      const lock = await Lock.acquire(k, { cache: store });
      expect(lock.fence).toBeGreaterThan(0n);
      expect(await lock.release()).toBe(true);
    } finally {
      process.kill(own.pid!, 'SIGCONT');
      await store.close();
      client.disconnect();
      await own.dispose();
    }
  });

  it('a server that is not there: acquire rejects with StoreError within a bounded time', async () => {
    const port = await closedPort();
    const started = Date.now();
    await expect(
      Lock.acquire(key('absent'), { cache: `redis://127.0.0.1:${port}` }),
    ).rejects.toBeInstanceOf(StoreError);
    expect(Date.now() - started).toBeLessThan(6_000);
  });
});

async function waitUntil(probe: () => boolean | Promise<boolean>, withinMs: number): Promise<void> {
  const deadline = Date.now() + withinMs;
  while (!(await probe())) {
    if (Date.now() > deadline) throw new Error(`condition not met within ${withinMs} ms`);
    await sleep(20);
  }
}
