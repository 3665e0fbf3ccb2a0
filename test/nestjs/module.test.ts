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
} from 'cachelock/nestjs';
import Keyv from 'keyv';
import { afterEach, describe, expect, it } from 'vitest';
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
    expect(configure({}).cache).toBeUndefined();
    expect(configure({}).ttl).toBe('5s');
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
    expect(configure({}).cache).toBe('memory:named');
    await byOption.close();

    const keyv = new Keyv({ namespace: 'token' });
    @Module({ providers: [{ provide: 'LOCK_CACHE', useValue: keyv }], exports: ['LOCK_CACHE'] })
    class CacheHolder {}
    const byToken = await start([
      CacheHolder,
      CachelockModule.forRoot({ cacheToken: 'LOCK_CACHE' }),
    ]);
    expect(byToken.get(CachelockBinding).source).toBe('cacheToken');
    const store = configure({}).cache as LockStore;
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
    expect(configure({}).ttl).toBe('7s');
    await app.close();
  });
});

describe.runIf(redisUp)('CachelockModule with CACHE_MANAGER on Redis', () => {
  const redisCache = () =>
    CacheModule.register({ stores: [new KeyvRedis(redisUrl)], namespace: run, isGlobal: true });

  it('makes the app cache the default for every lock, atomically, and undoes it on close', async () => {
    const app = await start([redisCache(), CachelockModule.forRoot()]);
    expect(app.get(CachelockBinding).source).toBe('CACHE_MANAGER');
    const store = configure({}).cache as LockStore;
    expect(store.kind).toBe('keyv+redis');
    expect(store.atomic).toBe(true);

    // A bare Lock anywhere in the app now locks in Redis, under the cache's namespace.
    const lock = await Lock.acquire('nightly');
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
    expect((configure({}).cache as LockStore).kind).toBe('keyv+redis');
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
