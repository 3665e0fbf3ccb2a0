import { spawnSync } from 'node:child_process';
import { subscribe, unsubscribe } from 'node:diagnostics_channel';
import { inspect } from 'node:util';
import {
  closeAll,
  configure,
  Lock,
  type LockEvent,
  LockLostError,
  type LockStore,
  memoryStore,
  StoreError,
} from 'cachelock';
import { Redis } from 'ioredis';
import pg from 'pg';
import { createClient } from 'redis';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { closedPort } from '../support/reachable.js';
import { RedisServer } from '../support/redis-server.js';

// Distinctive, so that finding it anywhere means it leaked.
const PASSWORD = 's3cr3t-Pa55';
const deep = (value: unknown) => inspect(value, { depth: 10, showHidden: true });
let n = 0;
const key = () => `credentials-test-${process.pid}-${++n}`;

afterEach(async () => {
  configure(null);
  await closeAll();
});

describe('a Redis server that refuses the password (WRONGPASS)', () => {
  let server: RedisServer;
  beforeAll(async () => {
    server = await RedisServer.start(['--requirepass', 'the-right-one-Q7']);
  });
  afterAll(async () => {
    await server?.dispose();
  });

  it('through a URL (ioredis): StoreError names the server, and nothing holds the password', async () => {
    const cache = `redis://:${PASSWORD}@127.0.0.1:${server.port}`;
    const error = await Lock.acquire(key(), { cache }).catch((e) => e);
    expect(error).toBeInstanceOf(StoreError);
    expect(error.message).toContain('WRONGPASS');
    expect(error.message).toContain(`redis://127.0.0.1:${server.port}`);
    // ioredis attaches the failed HELLO ... AUTH default <password> to its ReplyError.
    expect(error.cause.command.name).toMatch(/^(hello|auth)$/);
    expect(deep(error)).not.toContain(PASSWORD);
    const inspected = await Lock.inspect(key(), { cache }).catch((e) => e);
    expect(inspected).toBeInstanceOf(StoreError);
    expect(deep(inspected)).not.toContain(PASSWORD);
  });

  it('through an ioredis client', async () => {
    const client = new Redis({
      host: '127.0.0.1',
      port: server.port,
      password: PASSWORD,
      maxRetriesPerRequest: 1,
    });
    client.on('error', () => {});
    try {
      const error = await Lock.acquire(key(), { cache: client }).catch((e) => e);
      expect(error).toBeInstanceOf(StoreError);
      expect(error.message).toContain('WRONGPASS');
      expect(error.message).toContain(`redis://127.0.0.1:${server.port}`);
      expect(deep(error)).not.toContain(PASSWORD);
    } finally {
      client.disconnect();
    }
  });

  it('through a node-redis client', async () => {
    const client = createClient({
      url: `redis://:${PASSWORD}@127.0.0.1:${server.port}`,
      socket: { reconnectStrategy: false },
    });
    client.on('error', () => {});
    const refused = await client.connect().catch((e) => e);
    expect(String(refused)).toContain('WRONGPASS');
    const error = await Lock.acquire(key(), { cache: client }).catch((e) => e);
    expect(error).toBeInstanceOf(StoreError);
    expect(error.message).toContain(`redis://127.0.0.1:${server.port}`);
    expect(deep(error)).not.toContain(PASSWORD);
  });
});

describe('a malformed cache URL with a password', () => {
  const bad = `redis://user:${PASSWORD}@[not-a-host`;

  it('as the cache option: a TypeError that shows the URL without it', () => {
    const error = (() => {
      try {
        new Lock(key(), { cache: bad });
      } catch (e) {
        return e as TypeError;
      }
    })();
    expect(error).toBeInstanceOf(TypeError);
    expect(error!.message).toContain('"redis://user:***@[not-a-host"');
    expect(deep(error)).not.toContain(PASSWORD);
  });

  it('given to configure()', () => {
    const error = (() => {
      try {
        configure({ cache: bad });
      } catch (e) {
        return e as TypeError;
      }
    })();
    expect(error).toBeInstanceOf(TypeError);
    expect(error!.message).toMatch(/^configure: cache must be a URL .*user:\*\*\*@/);
    expect(deep(error)).not.toContain(PASSWORD);
  });

  it('in CACHELOCK_URL', async () => {
    const before = process.env.CACHELOCK_URL;
    process.env.CACHELOCK_URL = bad;
    try {
      const error = await Lock.acquire(key()).catch((e) => e);
      expect(error).toBeInstanceOf(TypeError);
      expect(error.message).toMatch(/^CACHELOCK_URL must be a URL .*user:\*\*\*@/);
      expect(deep(error)).not.toContain(PASSWORD);
    } finally {
      if (before === undefined) delete process.env.CACHELOCK_URL;
      else process.env.CACHELOCK_URL = before;
    }
  });

  it('with an unknown scheme, or refused by its backend', async () => {
    expect(() => new Lock(key(), { cache: `nope://u:${PASSWORD}@h:1` })).toThrow(
      /"nope:\/\/u:\*\*\*@h:1\/?"/,
    );
    // The SQLite backend refuses a URL with a host, quoting it.
    const error = await Lock.acquire(key(), {
      cache: `sqlite://user:${PASSWORD}@host/locks.sqlite`,
    }).catch((e) => e);
    expect(error).toBeInstanceOf(TypeError);
    expect(deep(error)).not.toContain(PASSWORD);
  });
});

describe('a PostgreSQL URL with a password, where nothing listens', () => {
  it('StoreError names scheme, host and port, and nothing holds the password', async () => {
    const port = await closedPort();
    const cache = `postgres://postgres:${PASSWORD}@127.0.0.1:${port}/test`;
    const error = await Lock.acquire(key(), { cache }).catch((e) => e);
    expect(error).toBeInstanceOf(StoreError);
    expect(error.message).toContain(`postgres://127.0.0.1:${port}`);
    expect(deep(error)).not.toContain(PASSWORD);
  });

  it('the same through a pg Pool given as the cache', async () => {
    const port = await closedPort();
    const pool = new pg.Pool({ host: '127.0.0.1', port, user: 'postgres', password: PASSWORD });
    try {
      const error = await Lock.acquire(key(), { cache: pool }).catch((e) => e);
      expect(error).toBeInstanceOf(StoreError);
      expect(error.message).toContain(`postgres://127.0.0.1:${port}`);
      expect(deep(error)).not.toContain(PASSWORD);
    } finally {
      await pool.end();
    }
  });
});

/** A store whose extensions fail with a client error that carries the password. */
function leakyStore(): LockStore {
  const inner = memoryStore();
  return {
    kind: 'memory',
    atomic: true,
    acquire: inner.acquire.bind(inner),
    release: inner.release.bind(inner),
    inspect: inner.inspect.bind(inner),
    extend: async () => {
      throw Object.assign(new Error(`lost redis://admin:${PASSWORD}@10.0.0.1:6379`), {
        command: { name: 'auth', args: ['admin', PASSWORD] },
      });
    },
  };
}

describe('a lease lost to a store error that carries the password', () => {
  it('neither the LockLostError, its signal reason nor the cachelock:lost event holds it', async () => {
    const events: unknown[] = [];
    const onLost = (message: unknown) => events.push(message);
    subscribe('cachelock:lost', onLost);
    try {
      const lock = await Lock.acquire(key(), { cache: leakyStore(), ttl: 600 });
      const lost = await new Promise<LockLostError>((resolve) =>
        lock.signal.addEventListener('abort', () => resolve(lock.signal.reason)),
      );
      expect(lost).toBeInstanceOf(LockLostError);
      expect(deep(lost.cause)).toContain('redis://admin:***@10.0.0.1:6379');
      expect(deep(lost)).not.toContain(PASSWORD);
      expect(events).toHaveLength(1);
      expect((events[0] as LockEvent).error).toBe(lost);
      expect(deep(events)).not.toContain(PASSWORD);
      expect(deep(await lock.extend().catch((e) => e))).not.toContain(PASSWORD);
    } finally {
      unsubscribe('cachelock:lost', onLost);
    }
  });

  it('NODE_DEBUG=cachelock logs the failure and the loss without it', () => {
    const script = `
      import { Lock, memoryStore } from 'cachelock';
      const inner = memoryStore();
      const cache = {
        kind: 'memory', atomic: true,
        acquire: inner.acquire.bind(inner), release: inner.release.bind(inner),
        inspect: inner.inspect.bind(inner),
        extend: async () => {
          throw Object.assign(new Error('lost redis://admin:${PASSWORD}@10.0.0.1:6379'), {
            command: { name: 'auth', args: ['admin', '${PASSWORD}'] },
          });
        },
      };
      const lock = await Lock.acquire('debugged-secret', { cache, ttl: 600 });
      // The watchdog's timer is unref'd: keep the process up until the loss.
      const alive = setTimeout(() => {}, 10_000);
      await new Promise((resolve) => lock.signal.addEventListener('abort', resolve));
      clearTimeout(alive);
    `;
    const { stderr } = spawnSync(process.execPath, ['--input-type=module', '-e', script], {
      env: { ...process.env, NODE_DEBUG: 'cachelock' },
      encoding: 'utf8',
    });
    expect(stderr).toMatch(/CACHELOCK \d+: extending "debugged-secret" failed: .*admin:\*\*\*@/);
    expect(stderr).toMatch(/CACHELOCK \d+: lost "debugged-secret"/);
    expect(stderr).not.toContain(PASSWORD);
  });
});
