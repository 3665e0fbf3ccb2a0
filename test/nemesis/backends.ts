import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import mysql from 'mysql2/promise';
import pg from 'pg';
import { EtcdCluster } from '../support/etcd-cluster.js';
import { startMariadbServer } from '../support/mariadb-server.js';
import { MemcachedServer } from '../support/memcached-server.js';
import { startPostgresServer } from '../support/postgres-server.js';
import { RedisCluster, RedisServer } from '../support/redis-server.js';
import { TcpProxy } from '../support/tcp-proxy.js';
import type { ViolationKind } from './checker.js';
import type { NemesisName } from './nemeses.js';

/** What a worker is told to open as its `cache` (see worker.mjs). */
export type CacheConfig =
  | { kind: 'url'; url: string }
  | { kind: 'redlock'; url: string }
  | { kind: 'cluster'; nodes: { host: string; port: number }[] }
  | { kind: 'keyv'; url: string; namespace: string }
  | { kind: 'plain'; port: number; maxDelayMs: number };

/** A server a nemesis may pause or restart. */
export interface ServerHandle {
  pid(): number | undefined;
  /** Kill it and start it again on the same port, empty where it keeps nothing on disk. */
  restart(): Promise<void>;
}

/** A backend started for a run: what the workers open, and what the nemeses can hit. */
export interface Deployment {
  cache: CacheConfig;
  /** The server, when the backend has one the suite owns. */
  server?: ServerHandle;
  /** Every client connection goes through this proxy, when the backend has one. */
  proxy?: TcpProxy;
  /** Redlock: the member servers, any of which may go down. */
  members?: RedisServer[];
  /** etcd: the cluster, whose members may be killed or partitioned. */
  cluster?: EtcdCluster;
  /**
   * PostgreSQL: end every other connection with pg_terminate_backend; MySQL: KILL them. Resolves
   * how many.
   */
  terminateBackends?(): Promise<number>;
  stop(): Promise<void>;
}

export interface Limit {
  kinds: ViolationKind[];
  why: string;
}

export interface Backend {
  name: string;
  /** Whether the backend promises fences that only rise (the checker then holds it to that). */
  fences: boolean;
  /** Whether waiters are woken by push: their longest poll is then 1 s, else 200 ms (src/wait.ts). */
  push: boolean;
  ttlMs: number;
  /** Worker processes, when not the runner's 5. */
  workers?: number;
  /** The lease as the store keeps it, when it is longer than the ttl asked for. */
  leaseMs?(ttlMs: number): number;
  /** The nemeses a CI pass runs, the most telling first. */
  nemeses: NemesisName[];
  /**
   * Cases of the semaphore (2 permits) and read/write workloads a CI pass runs, each under one
   * fault.
   */
  workloads?: [workload: 'semaphore' | 'rw', nemesis: NemesisName][];
  /** Every nemesis that can hit this backend (for `npm run nemesis`). */
  possible: NemesisName[];
  /**
   * Violations that a nemesis causes by a documented limit of the backend rather than a bug:
   * they are reported, and do not fail the suite. Other kinds under that nemesis still do.
   */
  limits?: Partial<Record<NemesisName, Limit>>;
  start(): Promise<Deployment>;
}

/** A proxy in front of a server just started; if the proxy cannot start, the server stops. */
const proxied = (port: number, stopServer: () => Promise<void>) =>
  TcpProxy.start(port).catch(async (error) => {
    await stopServer();
    throw error;
  });

/** A throwaway server (Redis, Memcached) behind a proxy, reached through `cache(proxyPort)`. */
async function behindProxy(
  server: { port: number; readonly pid: number | undefined; restart(): Promise<void> },
  end: () => Promise<void>,
  cache: (port: number) => CacheConfig,
): Promise<Deployment> {
  const proxy = await proxied(server.port, end);
  return {
    cache: cache(proxy.port),
    server: { pid: () => server.pid, restart: () => server.restart() },
    proxy,
    stop: async () => {
      await proxy.close();
      await end();
    },
  };
}

// A server that keeps leases only in memory forgets them when it restarts: the key is free at
// once, while its holder learns of the loss only at its next extension (a third of the ttl).
// Only fences that keep rising across the restart keep the old holder's writes out: without
// fences, the old holder's late write is a stale write of the same documented limit.
const forgetsOnRestart = (server: string, fences = true): Limit => ({
  kinds: fences ? ['overlap'] : ['overlap', 'stale write'],
  why: `${server} forgets its leases on restart; the holder learns it at its next extension`,
});

/** Every nemesis a single server behind a proxy can take. */
const onAServer: NemesisName[] = [
  'pause-holder',
  'pause-waiter',
  'kill-holder',
  'restart-server',
  'pause-server',
  'cut',
  'stall',
];

// A database server: its sessions can be ended from inside (pg_terminate_backend, KILL).
const onADatabase: NemesisName[] = [
  'pause-holder',
  'pause-waiter',
  'kill-holder',
  'restart-server',
  'terminate-backends',
  'cut',
  'stall',
];

export const backends: Backend[] = [
  {
    name: 'redis',
    fences: true,
    push: true,
    ttlMs: 600,
    nemeses: ['pause-waiter', 'pause-holder', 'kill-holder', 'restart-server', 'stall'],
    workloads: [
      ['semaphore', 'pause-holder'],
      ['rw', 'kill-holder'],
    ],
    possible: onAServer,
    limits: { 'restart-server': forgetsOnRestart('a Redis server without persistence') },
    async start() {
      const server = await RedisServer.start();
      return behindProxy(
        server,
        () => server.dispose(),
        (port) => ({ kind: 'url', url: `redis://127.0.0.1:${port}` }),
      );
    },
  },
  {
    name: 'redis cluster',
    fences: true,
    push: true,
    ttlMs: 600,
    nemeses: ['pause-waiter', 'kill-holder'],
    possible: ['pause-holder', 'pause-waiter', 'kill-holder'],
    async start() {
      const cluster = await RedisCluster.start(3);
      return { cache: { kind: 'cluster', nodes: cluster.nodes }, stop: () => cluster.dispose() };
    },
  },
  {
    name: 'redlock',
    fences: false,
    push: false,
    ttlMs: 1_000,
    nemeses: ['member-down', 'pause-holder'],
    possible: ['pause-holder', 'pause-waiter', 'kill-holder', 'member-down'],
    async start() {
      const members: RedisServer[] = [];
      try {
        for (let i = 0; i < 3; i++) members.push(await RedisServer.start());
      } catch (error) {
        await Promise.all(members.map((m) => m.dispose()));
        throw error;
      }
      const servers = members.map((m) => `server=redis://127.0.0.1:${m.port}`).join('&');
      return {
        cache: { kind: 'redlock', url: `redlock:?${servers}` },
        members,
        stop: async () => {
          await Promise.all(members.map((m) => m.dispose()));
        },
      };
    },
  },
  {
    name: 'postgres',
    fences: true,
    push: true,
    ttlMs: 800,
    nemeses: ['terminate-backends', 'restart-server', 'pause-holder', 'pause-waiter'],
    workloads: [
      ['semaphore', 'kill-holder'],
      ['rw', 'pause-holder'],
    ],
    possible: onADatabase,
    async start() {
      const server = await startPostgresServer();
      const proxy = await proxied(server.port, () => server.destroy());
      return {
        cache: { kind: 'url', url: `postgres://postgres@127.0.0.1:${proxy.port}/postgres` },
        server: { pid: server.pid, restart: () => server.restart('immediate') },
        proxy,
        async terminateBackends() {
          const client = new pg.Client({ connectionString: server.url });
          await client.connect();
          try {
            const { rowCount } = await client.query(
              `select pg_terminate_backend(pid) from pg_stat_activity
               where datname = current_database() and pid <> pg_backend_pid()`,
            );
            return rowCount ?? 0;
          } finally {
            await client.end();
          }
        },
        stop: async () => {
          await proxy.close();
          await server.destroy();
        },
      };
    },
  },
  {
    name: 'mysql',
    fences: true,
    push: true,
    ttlMs: 800,
    nemeses: ['terminate-backends', 'restart-server', 'pause-holder', 'cut'],
    // Waiters of permits and readers/writers are pushed too: their longest poll is 1 s.
    workloads: [
      ['semaphore', 'kill-holder'],
      ['rw', 'terminate-backends'],
    ],
    possible: onADatabase,
    async start() {
      const server = await startMariadbServer();
      const proxy = await proxied(server.port, () => server.destroy());
      return {
        cache: { kind: 'url', url: `mysql://root@127.0.0.1:${proxy.port}/test` },
        server: { pid: server.pid, restart: () => server.restart() },
        proxy,
        async terminateBackends() {
          const admin = await mysql.createConnection({
            host: '127.0.0.1',
            port: server.port,
            user: 'root',
          });
          try {
            const [rows] = (await admin.query(
              `SELECT id FROM information_schema.PROCESSLIST
               WHERE id <> CONNECTION_ID() AND command <> 'Daemon'`,
            )) as [{ id: number }[], unknown];
            for (const { id } of rows) await admin.query(`KILL ${Number(id)}`).catch(() => {});
            return rows.length;
          } finally {
            await admin.end();
          }
        },
        stop: async () => {
          await proxy.close();
          await server.destroy();
        },
      };
    },
  },
  {
    name: 'sqlite',
    fences: true,
    push: false,
    ttlMs: 600,
    nemeses: ['clock-step', 'kill-holder', 'pause-holder'],
    possible: ['pause-holder', 'pause-waiter', 'kill-holder', 'clock-step'],
    limits: {
      'clock-step': {
        kinds: ['overlap', 'fence', 'stale write'],
        why: 'SQLite leases are judged by the wall clock of the process that asks: a clock step shortens the leases it judges (README)',
      },
    },
    async start() {
      const dir = mkdtempSync(join(tmpdir(), 'cachelock-nemesis-sqlite-'));
      return {
        cache: { kind: 'url', url: `sqlite:${join(dir, 'locks.sqlite')}` },
        stop: async () => rmSync(dir, { recursive: true, force: true }),
      };
    },
  },
  {
    name: 'memcached',
    fences: false,
    push: false,
    ttlMs: 600,
    // memcached's clock ticks in whole seconds: the item lives the ttl rounded up, plus three
    // (src/memcached/lease.ts).
    leaseMs: (ttlMs) => (Math.ceil(ttlMs / 1_000) + 3) * 1_000,
    nemeses: ['restart-server', 'pause-holder', 'pause-waiter', 'stall'],
    possible: onAServer,
    limits: { 'restart-server': forgetsOnRestart('memcached', false) },
    async start() {
      const server = await MemcachedServer.start();
      return behindProxy(
        server,
        () => server.kill(),
        (port) => ({ kind: 'url', url: `memcached://127.0.0.1:${port}` }),
      );
    },
  },
  {
    name: 'plain cache',
    fences: false,
    push: false,
    ttlMs: 600,
    // More adapters racing over one leftover lease after a kill.
    workers: 8,
    nemeses: ['kill-holder', 'clock-step'],
    possible: ['pause-holder', 'pause-waiter', 'kill-holder', 'clock-step'],
    limits: {
      'clock-step': {
        kinds: ['overlap', 'stale write'],
        why: 'a plain cache keeps the expiry in the value, judged by the wall clock of the process that reads it',
      },
    },
    async start() {
      const cache = await SharedCache.start();
      return {
        cache: { kind: 'plain', port: cache.port, maxDelayMs: 25 },
        stop: () => cache.close(),
      };
    },
  },
  {
    name: 'keyv redis',
    fences: true,
    push: true,
    ttlMs: 600,
    nemeses: ['pause-waiter', 'kill-holder'],
    possible: onAServer,
    limits: { 'restart-server': forgetsOnRestart('a Redis server without persistence') },
    async start() {
      const server = await RedisServer.start();
      return behindProxy(
        server,
        () => server.dispose(),
        (port) => ({
          kind: 'keyv',
          url: `redis://127.0.0.1:${port}`,
          namespace: `nemesis-${randomBytes(4).toString('hex')}`,
        }),
      );
    },
  },
  {
    name: 'etcd',
    fences: true,
    push: true,
    ttlMs: 1_000,
    // etcd leases count whole seconds, and the leader looks for expired ones every 500 ms.
    leaseMs: (ttlMs) => Math.ceil(ttlMs / 1_000) * 1_000 + 500,
    nemeses: ['pause-holder', 'kill-member', 'partition-leader', 'pause-waiter'],
    workloads: [
      ['semaphore', 'pause-holder'],
      ['rw', 'kill-member'],
    ],
    possible: ['pause-holder', 'pause-waiter', 'kill-holder', 'kill-member', 'partition-leader'],
    async start() {
      const cluster = await EtcdCluster.start(3);
      return {
        cache: { kind: 'url', url: `${cluster.url}&timeout=2000` },
        cluster,
        stop: () => cluster.dispose(),
      };
    },
  },
];

export function backendNamed(name: string): Backend {
  const backend = backends.find((b) => b.name === name || b.name.replace(' ', '-') === name);
  if (backend === undefined) {
    throw new Error(
      `unknown backend ${JSON.stringify(name)}; known: ${backends.map((b) => b.name.replace(' ', '-')).join(', ')}`,
    );
  }
  return backend;
}

/**
 * The shared cache behind the plain-cache backend: a loopback server in the runner that keeps
 * values with their TTL in whole seconds, rounded up (as memcached does, so an expired lease
 * can linger for up to a second), and answers one JSON line per call. Each worker's adapter
 * talks to it through its own connection, as two processes sharing a network cache would.
 */
class SharedCache {
  private readonly values = new Map<string, { value: string; expiresAt: number }>();

  private constructor(
    private readonly server: Server,
    readonly port: number,
  ) {}

  static async start(): Promise<SharedCache> {
    let cache: SharedCache | undefined;
    const server = createServer((socket) => {
      let buffer = '';
      socket.on('error', () => {});
      socket.on('data', (chunk) => {
        buffer += chunk;
        let newline = buffer.indexOf('\n');
        while (newline >= 0) {
          const { id, op, args } = JSON.parse(buffer.slice(0, newline));
          buffer = buffer.slice(newline + 1);
          socket.write(`${JSON.stringify({ id, result: cache!.call(op, args) ?? null })}\n`);
          newline = buffer.indexOf('\n');
        }
      });
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const address = server.address();
    cache = new SharedCache(server, typeof address === 'object' && address ? address.port : 0);
    return cache;
  }

  close(): Promise<void> {
    return new Promise((resolve) => this.server.close(() => resolve()));
  }

  private live(key: string): string | undefined {
    const entry = this.values.get(key);
    if (entry === undefined) return undefined;
    if (entry.expiresAt <= Date.now()) {
      this.values.delete(key);
      return undefined;
    }
    return entry.value;
  }

  // Each call is one atomic step, as in a real cache server.
  private call(op: string, args: unknown[]): unknown {
    const [key, a, b, c] = args as [string, unknown, unknown, unknown];
    const put = (value: unknown, ttlMs: unknown) =>
      this.values.set(key, {
        value: value as string,
        expiresAt:
          Date.now() +
          (typeof ttlMs === 'number' && ttlMs > 0 ? Math.ceil(ttlMs / 1_000) * 1_000 : 1e12),
      });
    switch (op) {
      case 'get':
        return this.live(key);
      case 'set':
        put(a, b);
        return true;
      case 'delete':
        return this.values.delete(key);
      case 'add':
        if (this.live(key) !== undefined) return false;
        put(a, b);
        return true;
      case 'compareAndSet':
        if (this.live(key) !== a) return false;
        put(b, c);
        return true;
      case 'compareAndDelete':
        if (this.live(key) !== a) return false;
        return this.values.delete(key);
      default:
        throw new Error(`unknown cache call ${op}`);
    }
  }
}
