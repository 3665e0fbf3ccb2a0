import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer as createHttpServer, type Server as HttpServer } from 'node:http';
import { createServer, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import KeyvPostgres from '@keyv/postgres';
import { closeAll, Lock, registerScheme, StoreError, type StoreFailure } from 'cachelock';
import { storeFromUrl as redlockFromUrl } from 'cachelock/redlock';
import { Cluster } from 'ioredis';
import Keyv from 'keyv';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type PostgresServer, startPostgresServer } from '../support/postgres-server.js';
import { binaryOrSkip, builtOrSkip, closedPort, serverOrSkip } from '../support/reachable.js';
import { RedisServer } from '../support/redis-server.js';
import { startTlsRedis, TestCertificates, TlsEtcd } from '../support/tls.js';
import { WITHOUT_IOREDIS } from '../support/without-ioredis.js';

const execFileAsync = promisify(execFile);

const redisRuns = await binaryOrSkip('Redis auth', 'redis-server');
const mariadbUp = await serverOrSkip('MariaDB', 3306);
const postgresRuns =
  (await binaryOrSkip('PostgreSQL auth', 'initdb')) &&
  (await binaryOrSkip('PostgreSQL auth', 'pg_ctl'));
const tlsRuns =
  (await binaryOrSkip('TLS', 'openssl')) &&
  (await binaryOrSkip('Redis over TLS', 'redis-server')) &&
  (await binaryOrSkip('etcd over TLS', 'etcd'));
const run = randomBytes(4).toString('hex');
let counter = 0;
const key = () => `cl-errors-${run}-${++counter}`;
const password = 'pw-Zq8-never-shown';

/** A server on loopback that accepts connections and never says a word. */
let blackhole: Server;
let silent: number;
const sockets = new Set<Socket>();
let refused: number;

beforeAll(async () => {
  registerScheme('redlock', redlockFromUrl);
  refused = await closedPort();
  blackhole = createServer((socket) => {
    sockets.add(socket);
    socket.on('error', () => {});
  });
  await new Promise<void>((resolve) => blackhole.listen(0, '127.0.0.1', resolve));
  silent = (blackhole.address() as { port: number }).port;
});

afterAll(async () => {
  await closeAll();
  for (const socket of sockets) socket.destroy();
  blackhole.close();
});

/** The StoreError a first lock on `cache` fails with. */
async function failure(cache: unknown): Promise<StoreError> {
  const error = await Lock.acquire(key(), { cache: cache as string, ttl: '5s' }).then(
    (lock) => {
      void lock.release();
      throw new Error('the lock was granted');
    },
    (e: unknown) => e,
  );
  expect(error).toBeInstanceOf(StoreError);
  return error as StoreError;
}

/** The message names the store and says why; no password anywhere in the error. */
async function expectFailure(
  cache: unknown,
  where: string,
  failure: StoreFailure,
  text: string,
): Promise<StoreError> {
  const error = await failureOf(cache);
  expect(error.message).toContain(`store ${where} failed to acquire lock`);
  expect(error.message).toContain(`: ${text} (`);
  expect(error.failure).toBe(failure);
  expect(error.message).not.toContain(password);
  expect(error.stack).not.toContain(password);
  expect(String((error.cause as Error)?.message)).not.toContain(password);
  return error;
}
const failureOf = failure;

const scheme = (s: string) => ({
  refused: (path = '') => `${s}//:${password}@127.0.0.1:${refused}${path}`,
  nohost: (path = '') => `${s}//:${password}@nohost.invalid:6379${path}`,
  silent: (path = '') => `${s}//:${password}@127.0.0.1:${silent}${path}`,
});

describe('Redis (ioredis) connection failures', () => {
  const url = scheme('redis:');
  it('refused', () =>
    expectFailure(url.refused(), `redis://127.0.0.1:${refused}`, 'refused', 'connection refused'));
  it('host not found', () =>
    expectFailure(url.nohost(), 'redis://nohost.invalid:6379', 'not found', 'host not found'));
  it('a server that never answers', () =>
    expectFailure(url.silent(), `redis://127.0.0.1:${silent}`, 'timed out', 'timed out'));
  it('valkey:// says valkey', () =>
    expectFailure(
      scheme('valkey:').refused(),
      `valkey://127.0.0.1:${refused}`,
      'refused',
      'connection refused',
    ));
});

describe.runIf(redisRuns)('Redis with a password', () => {
  let server: RedisServer;
  beforeAll(async () => {
    server = await RedisServer.start(['--requirepass', 'the-right-one-1']);
  });
  afterAll(() => server?.dispose());
  it('a wrong password', () =>
    expectFailure(
      `redis://:${password}@127.0.0.1:${server.port}`,
      `redis://127.0.0.1:${server.port}`,
      'authentication',
      'authentication failed',
    ));
  it('no password', () =>
    expectFailure(
      `redis://127.0.0.1:${server.port}`,
      `redis://127.0.0.1:${server.port}`,
      'authentication',
      'authentication failed',
    ));
});

describe('Redis Cluster (a client of the user) connection failures', () => {
  // The user's client tells why only to its own `error` listeners (cachelock adds none to a
  // client it did not open); the command fails as closed or with no startup node available.
  it('refused, with retries off', async () => {
    const cluster = new Cluster([{ host: '127.0.0.1', port: refused }], {
      clusterRetryStrategy: () => null,
      redisOptions: { password },
    });
    cluster.on('error', () => {});
    try {
      const error = await failure(cluster);
      expect(error.message).toContain(`store redis://127.0.0.1:${refused} failed to acquire lock`);
      expect(error.message).toMatch(/connection lost \(Connection is closed|None of startup nodes/);
      expect(error.message).not.toContain(password);
    } finally {
      cluster.disconnect();
    }
  });
});

describe('Redlock connection failures', () => {
  const servers = (make: (path?: string) => string) =>
    `redlock:?${[1, 2, 3].map((db) => `server=${encodeURIComponent(make(`/${db}`))}`).join('&')}`;
  it('refused', async () => {
    const error = await expectFailure(
      servers(scheme('redis:').refused),
      'redlock:',
      'refused',
      'connection refused',
    );
    expect(error.message).toContain(`127.0.0.1:${refused}`);
  });
  it('host not found', async () => {
    const error = await expectFailure(
      servers(scheme('redis:').nohost),
      'redlock:',
      'not found',
      'host not found',
    );
    expect(error.message).toContain('nohost.invalid');
  });
});

describe('PostgreSQL connection failures', () => {
  const url = scheme('postgres:');
  it('refused', () =>
    expectFailure(
      url.refused('/test'),
      `postgres://127.0.0.1:${refused}`,
      'refused',
      'connection refused',
    ));
  it('host not found', () =>
    expectFailure(
      url.nohost('/test'),
      'postgres://nohost.invalid:6379',
      'not found',
      'host not found',
    ));
  it('a server that never answers', () =>
    expectFailure(url.silent('/test'), `postgres://127.0.0.1:${silent}`, 'timed out', 'timed out'));
  it('through a Keyv over @keyv/postgres', async () => {
    const keyv = new Keyv(new KeyvPostgres({ uri: url.refused('/test') }));
    keyv.on('error', () => {});
    await expectFailure(keyv, `postgres://127.0.0.1:${refused}`, 'refused', 'connection refused');
  });
});

describe.runIf(postgresRuns)('PostgreSQL with a password', () => {
  let server: PostgresServer;
  beforeAll(async () => {
    server = await startPostgresServer();
    // The throwaway cluster trusts everyone: give postgres a password and ask for it over TCP.
    const admin = new pg.Client({ connectionString: server.url });
    await admin.connect();
    try {
      await admin.query(`ALTER USER postgres PASSWORD 'the-right-one-pg'`);
      const { rows } = await admin.query('SHOW hba_file');
      writeFileSync(
        rows[0].hba_file,
        'local all all trust\nhost all all 127.0.0.1/32 scram-sha-256\nhost all all ::1/128 scram-sha-256\n',
      );
      await admin.query('SELECT pg_reload_conf()');
    } finally {
      await admin.end();
    }
    // The postmaster reloads when signalled: wait until a connection without the password fails.
    const deadline = Date.now() + 10_000;
    for (;;) {
      const probe = new pg.Client({ connectionString: server.url });
      const refused = await probe.connect().then(
        () => false,
        () => true,
      );
      await probe.end().catch(() => {});
      if (refused) break;
      if (Date.now() > deadline) throw new Error('pg_hba.conf was not reloaded');
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
  });
  afterAll(() => server?.destroy());
  it('a wrong password', async () => {
    const error = await expectFailure(
      `postgres://postgres:${password}@127.0.0.1:${server.port}/postgres`,
      `postgres://127.0.0.1:${server.port}`,
      'authentication',
      'authentication failed',
    );
    expect(error.message).toContain('password authentication failed for user "postgres"');
  });
});

describe.runIf(mariadbUp)('MySQL and MariaDB connection failures', () => {
  // mysql:// opens a mysql2 pool, mariadb:// a pool of the mariadb driver (both installed here).
  for (const [name, s] of [
    ['mysql:// (mysql2)', 'mysql:'],
    ['mariadb:// (the mariadb driver)', 'mariadb:'],
  ] as const) {
    const url = scheme(s);
    const user = (u: string) => u.replace(`${s}//:`, `${s}//root:`);
    it(`${name}, refused`, () =>
      expectFailure(
        user(url.refused('/test')),
        `${s}//127.0.0.1:${refused}`,
        'refused',
        'connection refused',
      ));
    it(`${name}, host not found`, () =>
      expectFailure(
        user(url.nohost('/test')),
        `${s}//nohost.invalid:6379`,
        'not found',
        'host not found',
      ));
    it(`${name}, a server that never answers`, () =>
      expectFailure(
        user(url.silent('/test')),
        `${s}//127.0.0.1:${silent}`,
        'timed out',
        'timed out',
      ));
    // The shared server's root has no password: one given is refused.
    it(`${name}, a wrong password`, async () => {
      const error = await expectFailure(
        `${s}//root:${password}@127.0.0.1:3306/test`,
        `${s}//127.0.0.1:3306`,
        'authentication',
        'authentication failed',
      );
      expect(error.message).toContain("Access denied for user 'root'");
    });
  }
});

describe('etcd connection failures', () => {
  const url = (host: string, query = '') => `etcd://root:${password}@${host}${query}`;
  it('refused', () =>
    expectFailure(
      url(`127.0.0.1:${refused}`),
      `etcd://127.0.0.1:${refused}`,
      'refused',
      'connection refused',
    ));
  it('host not found', () =>
    expectFailure(
      url('nohost.invalid:2379'),
      'etcd://nohost.invalid:2379',
      'not found',
      'host not found',
    ));
  it('a server that never answers', () =>
    expectFailure(
      url(`127.0.0.1:${silent}`, '?timeout=1000'),
      `etcd://127.0.0.1:${silent}`,
      'timed out',
      'timed out',
    ));
});

describe.runIf(tlsRuns)('TLS failures', () => {
  let certs: TestCertificates;
  let redis: { server: RedisServer; tlsPort: number } | undefined;
  let etcd: TlsEtcd | undefined;
  // A plain HTTP server: what a TLS client meets on a port that does not speak TLS.
  let http: HttpServer;
  let httpPort: number;
  beforeAll(async () => {
    certs = await TestCertificates.make();
    redis = await startTlsRedis(certs);
    etcd = await TlsEtcd.start(certs);
    http = createHttpServer((_request, response) => response.end('plain'));
    await new Promise<void>((resolve) => http.listen(0, '127.0.0.1', resolve));
    httpPort = (http.address() as { port: number }).port;
  });
  afterAll(async () => {
    http?.closeAllConnections();
    http?.close();
    await redis?.server.dispose();
    await etcd?.dispose();
    certs?.dispose();
  });
  // This process does not trust the throwaway CA that signed the servers' certificates.
  it('rediss:// to a server whose certificate is not trusted', async () => {
    const error = await expectFailure(
      `rediss://:${password}@127.0.0.1:${redis!.tlsPort}`,
      `rediss://127.0.0.1:${redis!.tlsPort}`,
      'TLS',
      'TLS failed',
    );
    expect(error.message).toContain('self-signed certificate in certificate chain');
  });
  it('valkeys:// to a server whose certificate is not trusted', () =>
    expectFailure(
      `valkeys://:${password}@127.0.0.1:${redis!.tlsPort}`,
      `valkeys://127.0.0.1:${redis!.tlsPort}`,
      'TLS',
      'TLS failed',
    ));
  it('etcds:// to a server whose certificate is not trusted', () =>
    expectFailure(
      `etcds://root:${password}@127.0.0.1:${etcd!.port}`,
      `etcds://127.0.0.1:${etcd!.port}`,
      'TLS',
      'TLS failed',
    ));
  it('rediss:// to a port that does not speak TLS', () =>
    expectFailure(
      `rediss://:${password}@127.0.0.1:${httpPort}`,
      `rediss://127.0.0.1:${httpPort}`,
      'TLS',
      'TLS failed',
    ));
  it('etcds:// to a port that does not speak TLS', () =>
    expectFailure(
      `etcds://root:${password}@127.0.0.1:${httpPort}`,
      `etcds://127.0.0.1:${httpPort}`,
      'TLS',
      'TLS failed',
    ));
  it.runIf(built)('rediss:// with node-redis, a certificate not trusted', async () => {
    const error = await failureWithNodeRedis(`rediss://:${password}@127.0.0.1:${redis!.tlsPort}`);
    expect(error.message).toContain(`store rediss://127.0.0.1:${redis!.tlsPort} failed`);
    expect(error.failure).toBe('TLS');
    expect(error.inspected).not.toContain(password);
  });
});

describe('memcached connection failures', () => {
  const url = scheme('memcached:');
  const plain = (u: string) => u.replace(`:${password}@`, '');
  it('refused', () =>
    expectFailure(
      plain(url.refused()),
      `memcached://127.0.0.1:${refused}`,
      'refused',
      'connection refused',
    ));
  it('host not found', () =>
    expectFailure(
      plain(url.nohost()),
      'memcached://nohost.invalid:6379',
      'not found',
      'host not found',
    ));
  it('a server that never answers', () =>
    expectFailure(
      plain(url.silent()),
      `memcached://127.0.0.1:${silent}`,
      'timed out',
      'timed out',
    ));
});

describe('SQLite file failures', () => {
  let dir: string;
  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), 'cachelock-errors-'));
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));
  it('a path through a file', async () => {
    writeFileSync(join(dir, 'plain'), '');
    const path = join(dir, 'plain', 'locks.db');
    const error = await failure(`sqlite://${path}`);
    expect(error.message).toContain(`store sqlite:${path} failed to acquire lock`);
    expect(error.message).toContain(`${join(dir, 'plain')} is not a folder`);
  });
  it('a file that is not a database', async () => {
    const path = join(dir, 'garbage.db');
    writeFileSync(path, 'x'.repeat(4096));
    const error = await failure(`sqlite://${path}`);
    expect(error.message).toContain(`store sqlite:${path} failed to acquire lock`);
    expect(error.failure).toBe('file');
    expect(error.message).toContain('cannot open the file (');
  });
});

const built = builtOrSkip('node-redis connection failures', ['index.js', 'redis/index.js']);

/** The error a script that has node-redis and no ioredis gets for `cache`. */
async function failureWithNodeRedis(cache: string, ioredis = false) {
  const script = fileURLToPath(new URL('./fixtures/fail.mjs', import.meta.url));
  // The child must also end by itself after its failure: execFile waits for it to exit.
  const { stdout } = await execFileAsync(
    process.execPath,
    ioredis ? [script] : ['--import', WITHOUT_IOREDIS, script],
    { env: { ...process.env, CACHE: cache }, timeout: 20_000 },
  );
  return JSON.parse(stdout) as {
    name: string;
    message: string;
    failure?: string;
    inspected: string;
  };
}

describe.runIf(built)('Redis (node-redis) connection failures', () => {
  const url = scheme('redis:');
  // The ports are known once beforeAll ran.
  const cases: [string, () => string, () => string, string][] = [
    ['refused', () => url.refused(), () => `redis://127.0.0.1:${refused}`, 'connection refused'],
    ['host not found', () => url.nohost(), () => 'redis://nohost.invalid:6379', 'host not found'],
    [
      'a server that never answers',
      () => url.silent(),
      () => `redis://127.0.0.1:${silent}`,
      'timed out',
    ],
  ];
  for (const [name, cache, where, text] of cases) {
    it(name, async () => {
      const error = await failureWithNodeRedis(cache());
      expect(error.name).toBe('StoreError');
      expect(error.message).toContain(`store ${where()} failed to acquire lock`);
      expect(error.message).toContain(`: ${text} (`);
      expect(error.inspected).not.toContain(password);
    });
  }
  it.runIf(redisRuns)('a wrong password', async () => {
    const server = await RedisServer.start(['--requirepass', 'the-right-one-2']);
    try {
      const error = await failureWithNodeRedis(`redis://:${password}@127.0.0.1:${server.port}`);
      expect(error.message).toContain(`store redis://127.0.0.1:${server.port} failed`);
      expect(error.failure).toBe('authentication');
      expect(error.inspected).not.toContain(password);
    } finally {
      await server.dispose();
    }
  });
  it('redlock over node-redis, refused', async () => {
    const make = url.refused;
    const cache = `redlock:?${[1, 2, 3].map((db) => `server=${encodeURIComponent(make(`/${db}`))}`).join('&')}`;
    const error = await failureWithNodeRedis(cache);
    expect(error.failure).toBe('refused');
    expect(error.message).toContain(`127.0.0.1:${refused}`);
    expect(error.inspected).not.toContain(password);
  });
});

describe.runIf(built)('a script whose Redis is unreachable ends by itself after the error', () => {
  const url = scheme('redis:');
  it('ioredis, refused', async () => {
    const error = await failureWithNodeRedis(url.refused(), true);
    expect(error.failure).toBe('refused');
  });
  it('ioredis, a server that never answers', async () => {
    const error = await failureWithNodeRedis(url.silent(), true);
    expect(error.failure).toBe('timed out');
  });
});
