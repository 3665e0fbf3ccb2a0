import 'reflect-metadata';
import { randomBytes } from 'node:crypto';
import KeyvRedis from '@keyv/redis';
import { CACHE_MANAGER, CacheModule } from '@nestjs/cache-manager';
import { Injectable, Module } from '@nestjs/common';
import { Test } from '@nestjs/testing';
import { closeAll, configure, Lock, LockedError, type LockStore } from 'cachelock';
import {
  CachelockBinding,
  CachelockModule,
  type CachelockModuleOptions,
  CachelockService,
  Once,
} from 'cachelock/nestjs';
import Keyv from 'keyv';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { serverOrSkip } from '../support/reachable.js';

const redisUp = await serverOrSkip('Redis', 6379);
const redisUrl = 'redis://127.0.0.1:6379';
const run = `cl-test-${randomBytes(4).toString('hex')}`;

async function start(imports: any[]) {
  const moduleRef = await Test.createTestingModule({ imports }).compile();
  const app = moduleRef.createNestApplication({ logger: false });
  await app.init();
  return app;
}

afterEach(() => {
  configure(null);
});

describe('CachelockModule without CACHE_MANAGER', () => {
  it("leaves the core's resolution alone: memory by default", async () => {
    const app = await start([CachelockModule.forRoot({ ttl: '5s' })]);
    expect(app.get(CachelockBinding).source).toBe('core');
    expect(app.get(CachelockBinding).lockOptions).toEqual({ ttl: '5s' });
    // The module's options are the app's, not the process's.
    expect(configure({})).toEqual({});
    const service = app.get(CachelockService);
    const lock = await service.lock('plain').acquire();
    // The core's default is the process memory store, where a bare Lock sees it too.
    await expect(Lock.acquire('plain')).rejects.toBeInstanceOf(LockedError);
    await lock.release();
    await app.close();
    expect(configure({}).ttl).toBeUndefined();
  });

  it('keeps a cache the process configured before the app started', async () => {
    const own = new Map<string, string>();
    const cache = {
      get: (k: string) => own.get(k),
      set: (k: string, v: string) => void own.set(k, v),
      delete: (k: string) => own.delete(k),
      add: (k: string, v: string) => {
        if (own.has(k)) return false;
        own.set(k, v);
        return true;
      },
    };
    configure({ cache });
    const app = await start([CachelockModule.forRoot({ ttl: '9s' })]);
    expect(app.get(CachelockBinding).source).toBe('core');
    await app.get(CachelockService).run('configured', undefined, async () => {
      expect([...own.keys()]).toEqual(['cachelock:configured']);
    });
    await app.close();
    expect(configure({}).cache).toBe(cache);
    expect(configure({}).ttl).toBeUndefined();
  });

  it('takes options.cache, and a provider token', async () => {
    const byOption = await start([CachelockModule.forRoot({ cache: 'memory:named' })]);
    expect(byOption.get(CachelockBinding).source).toBe('options');
    expect(byOption.get(CachelockBinding).lockOptions.cache).toBe('memory:named');
    expect(configure({}).cache).toBeUndefined();
    await byOption.close();

    const keyv = new Keyv({ namespace: 'token' });
    @Module({ providers: [{ provide: 'LOCK_CACHE', useValue: keyv }], exports: ['LOCK_CACHE'] })
    class CacheHolder {}
    const byToken = await start([
      CacheHolder,
      CachelockModule.forRoot({ cacheToken: 'LOCK_CACHE' }),
    ]);
    expect(byToken.get(CachelockBinding).source).toBe('cacheToken');
    const store = byToken.get(CachelockBinding).lockOptions.cache as LockStore;
    expect(store.kind).toBe('keyv');
    await byToken.get(CachelockService).run('via-token', undefined, async () => {
      expect(await keyv.get('cachelock:via-token')).toContain('"owner"');
    });
    await byToken.close();
    expect(configure({}).cache).toBeUndefined();
  });

  it('reports a cacheToken that nothing provides', async () => {
    await expect(start([CachelockModule.forRoot({ cacheToken: 'MISSING' })])).rejects.toThrow(
      /MISSING/,
    );
  });

  it('forRootAsync builds the options from injected providers', async () => {
    @Injectable()
    class Settings {
      readonly lockTtl = '7s';
    }
    @Module({ providers: [Settings], exports: [Settings] })
    class SettingsModule {}
    const app = await start([
      CachelockModule.forRootAsync({
        imports: [SettingsModule],
        inject: [Settings],
        useFactory: (settings: Settings): CachelockModuleOptions => ({ ttl: settings.lockTtl }),
        isGlobal: true,
      }),
    ]);
    expect(app.get(CachelockBinding).lockOptions.ttl).toBe('7s');
    expect(configure({}).ttl).toBeUndefined();
    await app.close();
  });
});

describe.runIf(redisUp)('CachelockModule with CACHE_MANAGER on Redis', () => {
  const redisCache = () =>
    CacheModule.register({ stores: [new KeyvRedis(redisUrl)], namespace: run, isGlobal: true });

  it("makes the app cache the app's default, atomically, and closes it on close", async () => {
    const app = await start([redisCache(), CachelockModule.forRoot()]);
    expect(app.get(CachelockBinding).source).toBe('CACHE_MANAGER');
    const store = app.get(CachelockBinding).lockOptions.cache as LockStore;
    expect(store.kind).toBe('keyv+redis');
    expect(store.atomic).toBe(true);
    expect(configure({}).cache).toBeUndefined();

    // The app's locks are in Redis, under the cache's namespace.
    const lock = await app.get(CachelockService).lock('nightly').acquire();
    const other = new Keyv({ store: new KeyvRedis(redisUrl), namespace: run });
    await expect(Lock.acquire('nightly', { cache: other })).rejects.toBeInstanceOf(LockedError);
    const holder = await app.get(CachelockService).inspect('nightly');
    expect(holder?.pid).toBe(process.pid);
    await lock.release();

    expect(app.get(CACHE_MANAGER).stores[0].namespace).toBe(run);
    // The module opened this store, so closing the app closes it.
    let closed = 0;
    const close = store.close!.bind(store);
    store.close = () => {
      closed++;
      return close();
    };
    await app.close();
    expect(closed).toBe(1);
    expect(configure({}).cache).toBeUndefined();
    await other.disconnect();
  });

  it('finds a CACHE_MANAGER that is not global', async () => {
    @Module({ imports: [CacheModule.register({ stores: [new KeyvRedis(redisUrl)] })] })
    class FeatureModule {}
    const app = await start([FeatureModule, CachelockModule.forRoot({ isGlobal: true })]);
    expect(app.get(CachelockBinding).source).toBe('CACHE_MANAGER');
    expect((app.get(CachelockBinding).lockOptions.cache as LockStore).kind).toBe('keyv+redis');
    await app.close();
  });

  it('lets CACHELOCK_URL win over CACHE_MANAGER, and uses it without one', async () => {
    process.env.CACHELOCK_URL = redisUrl;
    try {
      for (const imports of [[redisCache()], []]) {
        const app = await start([...imports, CachelockModule.forRoot()]);
        expect(app.get(CachelockBinding).source).toBe('core');
        expect(configure({}).cache).toBeUndefined();
        const key = `${run}:from-env`;
        await app.get(CachelockService).run(key, undefined, async () => {
          // Held in Redis under the plain prefix, not in the Keyv's namespace.
          const holder = await Lock.inspect(key, { cache: redisUrl });
          expect(holder?.pid).toBe(process.pid);
        });
        await app.close();
      }
    } finally {
      delete process.env.CACHELOCK_URL;
      await closeAll();
    }
  });
});

describe('two apps in one process', () => {
  /** A cache of its own, with atomic add, whose keys the test can see. */
  function ownCache() {
    const entries = new Map<string, string>();
    return {
      entries,
      get: (k: string) => entries.get(k),
      set: (k: string, v: string) => void entries.set(k, v),
      delete: (k: string) => entries.delete(k),
      add: (k: string, v: string) => {
        if (entries.has(k)) return false;
        entries.set(k, v);
        return true;
      },
    };
  }

  it("each app's @Once methods and service use its own module's cache and prefix", async () => {
    const cacheA = ownCache();
    const cacheB = ownCache();
    const seen = () => [...cacheA.entries.keys(), ...cacheB.entries.keys()];

    @Injectable()
    class Job {
      readonly during: string[][] = [];
      release: (() => void) | undefined;

      @Once({ key: 'job' })
      async work(block = false) {
        this.during.push(seen());
        if (block) await new Promise<void>((resolve) => (this.release = resolve));
        return 'ran';
      }
    }
    @Module({ providers: [Job], exports: [Job] })
    class JobModule {}

    const appA = await start([
      JobModule,
      CachelockModule.forRoot({ cache: cacheA, prefix: 'a:', ttl: '8s' }),
    ]);
    const appB = await start([
      JobModule,
      CachelockModule.forRoot({ cache: cacheB, prefix: 'b:', ttl: '9s' }),
    ]);
    const jobA = appA.get(Job);
    const jobB = appB.get(Job);
    expect(jobA).not.toBe(jobB);

    expect(await jobA.work()).toBe('ran');
    expect(await jobB.work()).toBe('ran');
    expect(jobA.during).toEqual([['a:job']]);
    expect(jobB.during).toEqual([['b:job']]);

    // A's key held does not stop B's job: they lock in different caches.
    const blocked = jobA.work(true);
    await vi.waitUntil(() => jobA.release !== undefined);
    expect(await jobA.work()).toBeUndefined();
    expect(await jobB.work()).toBe('ran');
    jobA.release!();
    expect(await blocked).toBe('ran');

    expect((await appA.get(CachelockService).inspect('job')) === null).toBe(true);
    const held = await appB.get(CachelockService).lock('svc').acquire();
    expect(cacheB.entries.has('b:svc')).toBe(true);
    expect(cacheA.entries.has('a:svc')).toBe(false);
    await held.release();

    // Neither touched the process defaults, and closing one leaves the other as it was.
    expect(configure({})).toEqual({});
    await appB.close();
    await jobA.work();
    expect(jobA.during.at(-1)).toEqual(['a:job']);
    await appA.close();
  });
});
