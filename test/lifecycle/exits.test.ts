import { type ChildProcess, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { closeAll, knownSchemes, Lock, registerScheme } from 'cachelock';
import { storeFromUrl as redlockFromUrl } from 'cachelock/redlock';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { EtcdCluster } from '../support/etcd-cluster.js';
import { MemcachedServer } from '../support/memcached-server.js';
import { binaryOrSkip, builtOrSkip, serverOrSkip } from '../support/reachable.js';
import type { RedisServer } from '../support/redis-server.js';
import { startTlsRedis, TestCertificates, TlsEtcd } from '../support/tls.js';
import { WITHOUT_IOREDIS } from '../support/without-ioredis.js';

const redisUp = await serverOrSkip('Redis', 6379);
const postgresUp = await serverOrSkip('PostgreSQL', 5432);
const memcachedRuns = await binaryOrSkip('memcached', 'memcached');
const mariadbUp = await serverOrSkip('MariaDB', 3306);
const etcdRuns = await binaryOrSkip('etcd', 'etcd');
const tlsRuns =
  (await binaryOrSkip('TLS', 'openssl')) &&
  (await binaryOrSkip('Redis over TLS', 'redis-server')) &&
  etcdRuns;
// The children import the built package, as a user's script does.
const built = builtOrSkip('scripts end by themselves', [
  'index.js',
  'redis/index.js',
  'redlock/index.js',
  'postgres/index.js',
  'sqlite/index.js',
  'memcached/index.js',
  'mysql/index.js',
  'etcd/index.js',
  'keyv/index.js',
]);
const run = randomBytes(4).toString('hex');
let counter = 0;
const key = (label: string) => `cl-exit-${run}-${label}-${++counter}`;

interface Child {
  child: ChildProcess;
  /** Resolves with `performance.now()` when the child printed `line`. */
  printed(line: string): Promise<number>;
  /** Resolves with `performance.now()` when the child exited, and its code. */
  exited: Promise<{ at: number; code: number | null; stderr: string }>;
}

const script = fileURLToPath(new URL('./fixtures/script.mjs', import.meta.url));

function start(env: Record<string, string | undefined>, withoutIoredis = false): Child {
  const args = withoutIoredis ? ['--import', WITHOUT_IOREDIS, script] : [script];
  const child = spawn(process.execPath, args, {
    env: { ...process.env, ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stdout = '';
  let stderr = '';
  const seen = new Map<string, number>();
  const waiting = new Map<string, (at: number) => void>();
  child.stdout!.setEncoding('utf8').on('data', (chunk: string) => {
    stdout += chunk;
    for (const line of stdout.split('\n').slice(0, -1)) {
      if (seen.has(line)) continue;
      const at = performance.now();
      seen.set(line, at);
      waiting.get(line)?.(at);
    }
  });
  child.stderr!.setEncoding('utf8').on('data', (chunk: string) => {
    stderr += chunk;
  });
  const exited = new Promise<{ at: number; code: number | null; stderr: string }>((resolve) => {
    child.once('exit', (code) => resolve({ at: performance.now(), code, stderr }));
  });
  return {
    child,
    exited,
    printed: (line) =>
      new Promise((resolve, reject) => {
        const at = seen.get(line);
        if (at !== undefined) return resolve(at);
        waiting.set(line, resolve);
        exited.then((end) => {
          if (!seen.has(line))
            reject(new Error(`exited ${end.code} before "${line}": ${end.stderr}`));
        });
      }),
  };
}

/**
 * The child takes and releases its lock, then must exit by itself within a second. `env` adds
 * to its environment (`NODE_EXTRA_CA_CERTS` for a server whose CA only the child trusts).
 */
async function endsByItself(
  cache: string,
  withoutIoredis = false,
  env: Record<string, string> = {},
): Promise<void> {
  const child = start({ ...env, CACHE: cache, KEY: key('alone'), MODE: 'alone' }, withoutIoredis);
  try {
    const released = await child.printed('released');
    const timeout = new Promise<'still running'>((resolve) =>
      setTimeout(() => resolve('still running'), 5_000),
    );
    const end = await Promise.race([child.exited, timeout]);
    expect(end, 'the script did not exit by itself').not.toBe('still running');
    if (end === 'still running') return;
    expect(end.code, end.stderr).toBe(0);
    expect(end.at - released).toBeLessThan(1_000);
  } finally {
    child.child.kill('SIGKILL');
  }
}

/** The child releases, then ends with `await closeAll()`: it must get through it and exit 0. */
async function closesGracefully(cache: string, withoutIoredis = false): Promise<void> {
  const child = start(
    { CACHE: cache, KEY: key('close'), MODE: 'alone', CLOSE: '1' },
    withoutIoredis,
  );
  try {
    await child.printed('closed');
    const end = await child.exited;
    expect(end.code, end.stderr).toBe(0);
  } finally {
    child.child.kill('SIGKILL');
  }
}

/**
 * The child waits for a key this process holds: it must stay up, idle as it is, until the key
 * is released (well past every idle timer of the connections), then take it and exit.
 */
async function waitsUntilGranted(cache: string, parentCache: unknown, withoutIoredis = false) {
  const name = key('wait');
  const held = await Lock.acquire(name, { cache: parentCache as string, ttl: '30s' });
  const child = start({ CACHE: cache, KEY: name, MODE: 'wait' }, withoutIoredis);
  try {
    await child.printed('waiting');
    await new Promise((resolve) => setTimeout(resolve, 7_000));
    expect(child.child.exitCode, 'the waiter exited before it got the lock').toBeNull();
    await held.release();
    const got = await child.printed('got');
    const end = await child.exited;
    expect(end.code, end.stderr).toBe(0);
    // Nothing it was woken through (a subscriber, a socket a releaser keeps open) holds it up.
    expect(end.at - got).toBeLessThan(2_000);
  } finally {
    child.child.kill('SIGKILL');
    await held.release().catch(() => {});
  }
}

beforeAll(() => registerScheme('redlock', redlockFromUrl));
afterAll(() => closeAll());

const redis = 'redis://127.0.0.1:6379';
const redlock = `redlock:?server=${encodeURIComponent(`${redis}/1`)}&server=${encodeURIComponent(`${redis}/2`)}&server=${encodeURIComponent(`${redis}/3`)}`;
const postgres = 'postgres://postgres@127.0.0.1:5432/test';

describe.runIf(built && redisUp)('a script on Redis ends by itself', () => {
  it('redis:// with ioredis', () => endsByItself(redis));
  it('valkey:// with ioredis', () => endsByItself('valkey://127.0.0.1:6379'));
  it('redis:// with node-redis', () => endsByItself(redis, true));
  it('redlock: over three ioredis clients', () => endsByItself(redlock));
  it('redlock: over three node-redis clients', () => endsByItself(redlock, true));
  it('a Keyv over @keyv/redis, once the script ends its Keyv', () => endsByItself(`keyv+${redis}`));
  it('closeAll() at the end, ioredis', () => closesGracefully(redis));
  it('closeAll() at the end, node-redis', () => closesGracefully(redis, true));
  it('closeAll() at the end, redlock', () => closesGracefully(redlock));
  it('waits on redis:// with ioredis until granted', () => waitsUntilGranted(redis, redis));
  it('waits on redis:// with node-redis until granted', () =>
    waitsUntilGranted(redis, redis, true));
  it('waits on redlock: until granted', () => waitsUntilGranted(redlock, redlock));
});

describe.runIf(built && postgresUp)('a script on PostgreSQL ends by itself', () => {
  it('postgres://', () => endsByItself(postgres));
  it('postgresql://', () => endsByItself(postgres.replace('postgres:', 'postgresql:')));
  it('a Keyv over @keyv/postgres, once the script ends its Keyv', () =>
    endsByItself(`keyv+${postgres}`));
  it('closeAll() at the end', () => closesGracefully(postgres));
  it('waits on postgres:// until granted', () => waitsUntilGranted(postgres, postgres));
});

describe.runIf(built)('a script on SQLite ends by itself', () => {
  let dir: string;
  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), 'cachelock-exit-'));
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));
  it('sqlite://', () => endsByItself(`sqlite://${join(dir, 'a.db')}`));
  it('waits on sqlite:// until granted', () => {
    const url = `sqlite://${join(dir, 'b.db')}`;
    return waitsUntilGranted(url, url);
  });
});

describe.runIf(built && memcachedRuns)('a script on memcached ends by itself', () => {
  let server: MemcachedServer;
  beforeAll(async () => {
    server = await MemcachedServer.start();
  });
  afterAll(() => server?.kill());
  it('memcached://', () => endsByItself(server.url));
  it('closeAll() at the end', () => closesGracefully(server.url));
  it('waits on memcached:// until granted', () => waitsUntilGranted(server.url, server.url));
});

const mysql = 'mysql://root@127.0.0.1:3306/test';
const mariadb = 'mariadb://root@127.0.0.1:3306/test';

describe.runIf(built && mariadbUp)('a script on MySQL or MariaDB ends by itself', () => {
  // mysql:// tries mysql2 first and mariadb:// the mariadb driver first; driver= picks one.
  it('mysql:// (mysql2)', () => endsByItself(mysql));
  it('mariadb:// (the mariadb driver)', () => endsByItself(mariadb));
  it('mysql:// with driver=mariadb', () => endsByItself(`${mysql}?driver=mariadb`));
  it('mariadb:// with driver=mysql2', () => endsByItself(`${mariadb}?driver=mysql2`));
  it('closeAll() at the end, mysql2', () => closesGracefully(mysql));
  it('closeAll() at the end, the mariadb driver', () => closesGracefully(mariadb));
  it('waits on mysql:// (mysql2) until granted', () => waitsUntilGranted(mysql, mysql));
  it('waits on mariadb:// (the mariadb driver) until granted', () =>
    waitsUntilGranted(mariadb, mariadb));
});

describe.runIf(built && etcdRuns)('a script on etcd ends by itself', () => {
  let cluster: EtcdCluster;
  beforeAll(async () => {
    cluster = await EtcdCluster.start(1);
  });
  afterAll(() => cluster?.dispose());
  it('etcd://', () => endsByItself(cluster.url));
  it('closeAll() at the end', () => closesGracefully(cluster.url));
  it('waits on etcd:// until granted', () => waitsUntilGranted(cluster.url, cluster.url));
});

describe.runIf(built && tlsRuns)('a script over TLS ends by itself', () => {
  let certs: TestCertificates;
  let redis: { server: RedisServer; tlsPort: number } | undefined;
  let etcd: TlsEtcd | undefined;
  // Only the child trusts the throwaway CA, as a user's process told so by Node.js's own
  // NODE_EXTRA_CA_CERTS; the client libraries (ioredis, node-redis, fetch) all honour it.
  const trusting = () => ({ NODE_EXTRA_CA_CERTS: certs.ca });
  beforeAll(async () => {
    certs = await TestCertificates.make();
    redis = await startTlsRedis(certs);
    etcd = await TlsEtcd.start(certs);
  });
  afterAll(async () => {
    await redis?.server.dispose();
    await etcd?.dispose();
    certs?.dispose();
  });
  const rediss = () => `rediss://127.0.0.1:${redis!.tlsPort}`;
  it('rediss:// with ioredis', () => endsByItself(rediss(), false, trusting()));
  it('rediss:// with node-redis', () => endsByItself(rediss(), true, trusting()));
  it('valkeys:// with ioredis', () =>
    endsByItself(rediss().replace('rediss:', 'valkeys:'), false, trusting()));
  it('valkeys:// with node-redis', () =>
    endsByItself(rediss().replace('rediss:', 'valkeys:'), true, trusting()));
  it('etcds://', () => endsByItself(`etcds://127.0.0.1:${etcd!.port}`, false, trusting()));
});

describe('every URL scheme has its case here', () => {
  // Schemes whose stores open connections, each with an "ends by itself" case above. `memory:`
  // opens none; `redlock:` is registered by this file.
  const covered = [
    'redis:',
    'rediss:',
    'valkey:',
    'valkeys:',
    'redlock:',
    'postgres:',
    'postgresql:',
    'mysql:',
    'mariadb:',
    'sqlite:',
    'memcached:',
    'etcd:',
    'etcds:',
  ];
  it('covers each scheme cachelock accepts', () => {
    const accepted = knownSchemes().filter((scheme) => scheme !== 'memory:');
    expect(accepted.filter((scheme) => !covered.includes(scheme))).toEqual([]);
  });
});
