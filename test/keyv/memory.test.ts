import { createCache } from 'cache-manager';
import { Lock, LockedError, once, plainCacheStore } from 'cachelock';
import { keyvStore, storeFromUrl } from 'cachelock/keyv';
import { runConformance } from 'cachelock/testing';
import Keyv from 'keyv';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { forceRelease } from '../../src/cli/release.js';

// Keyv with its built-in Map has no atomic add: cachelock falls back to the plain-cache adapter,
// says so once per Keyv, and is still exclusive within this process.
describe('keyv over its in-memory Map', () => {
  let warnings: Error[];
  const onWarning = (warning: Error) => warnings.push(warning);
  beforeEach(() => {
    warnings = [];
    process.on('warning', onWarning);
  });
  afterEach(() => {
    process.off('warning', onWarning);
  });
  const nonAtomic = () =>
    warnings.filter((w) => (w as Error & { code?: string }).code === 'CACHELOCK_NON_ATOMIC');

  it('takes the plain-cache path, warns once per Keyv, and still excludes within the process', async () => {
    const keyv = new Keyv();
    const first = new Lock('report', { cache: keyv });
    const second = new Lock('report', { cache: keyv });
    await first.acquire();
    await expect(second.acquire()).rejects.toBeInstanceOf(LockedError);
    const holder = await Lock.inspect('report', { cache: keyv });
    expect(holder?.owner).toBeDefined();
    expect(await first.release()).toBe(true);
    expect(await second.tryAcquire()).toBe(true);
    await second.release();
    // A second store on the same Keyv does not warn again.
    const again = await keyvStore(keyv);
    expect(again.kind).toBe('keyv');
    expect(again.atomic).toBe(false);
    await new Promise((resolve) => setImmediate(resolve));
    expect(nonAtomic()).toHaveLength(1);
    expect(nonAtomic()[0]!.message).toMatch(/only within this process/);
  });

  it('lets one of many concurrent once() calls run', async () => {
    const keyv = new Keyv({ namespace: 'jobs' });
    let running = 0;
    let maxRunning = 0;
    let runs = 0;
    const job = once({ key: 'sync-{id}', cache: keyv }, async (id: string) => {
      running++;
      maxRunning = Math.max(maxRunning, running);
      runs++;
      await new Promise((resolve) => setTimeout(resolve, 30));
      running--;
      return id;
    });
    const results = await Promise.all(Array.from({ length: 20 }, () => job('u1')));
    expect(results.filter((r) => r === 'u1')).toHaveLength(1);
    expect(runs).toBe(1);
    expect(maxRunning).toBe(1);
  });

  it('keeps the lease in the Keyv under its namespace', async () => {
    const keyv = new Keyv({ namespace: 'space' });
    const store = await keyvStore(keyv);
    expect(await store.acquire('cachelock:k', 'owner-1', 5_000)).not.toBeNull();
    expect(await keyv.get('cachelock:k')).toContain('owner-1');
    const other = new Keyv({ namespace: 'other', store: keyv.store });
    expect(await other.get('cachelock:k')).toBeUndefined();
    expect(await store.release('cachelock:k', 'owner-1')).toBe(true);
  });

  it('takes the first tier of a memory-only cache-manager Cache', async () => {
    const cache = createCache();
    const store = await keyvStore(cache);
    expect(store.kind).toBe('keyv');
    const lock = new Lock('cm', { cache });
    await lock.acquire();
    await expect(new Lock('cm', { cache }).acquire()).rejects.toBeInstanceOf(LockedError);
    await lock.release();
  });

  it('treats a value cachelock did not write as held by an unknown owner, for as long as Keyv keeps it', async () => {
    const keyv = new Keyv({ namespace: 'shared-with-python' });
    await keyv.set('invoice', 1, 60_000);
    const options = { cache: keyv, prefix: '' };
    const error = await Lock.acquire('invoice', options).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(error).toBeInstanceOf(LockedError);
    expect((error as Error).message).toMatch(/held by an unknown owner .* for (\d+\.\d|\d+)s more/);
    const holder = await Lock.inspect('invoice', options);
    expect(holder).toMatchObject({ owner: '', host: undefined, pid: undefined, fence: undefined });
    expect(holder!.ttlMs).toBeGreaterThan(50_000);
    expect(holder!.ttlMs).toBeLessThanOrEqual(60_000);
    // Without a ttl Keyv keeps it until deleted: no end known.
    await keyv.set('forever', 'busy');
    expect((await Lock.inspect('forever', options))?.ttlMs).toBe(Number.POSITIVE_INFINITY);

    const store = await keyvStore(keyv);
    expect(await store.release('invoice', 'host:1:random:1')).toBe(false);
    expect(await store.extend('invoice', 'host:1:random:1', 1_000)).toBe(false);
    expect(await keyv.get('invoice')).toBe(1);

    const write = vi.spyOn(process.stdout, 'write').mockImplementation(() => true);
    try {
      const request = { command: 'release', key: 'invoice', cache: keyv, prefix: '' } as const;
      expect(await forceRelease(request as never)).toBe(0);
    } finally {
      write.mockRestore();
    }
    expect(await keyv.get('invoice')).toBeUndefined();
    const lock = await Lock.acquire('invoice', options);
    expect(await lock.release()).toBe(true);
    // The plain adapter over the same Keyv agrees.
    expect((await plainCacheStore(keyv).inspect('forever'))?.owner).toBe('');
  });

  it('refuses what is not a Keyv, and opens no URLs', async () => {
    await expect(keyvStore({} as never)).rejects.toThrow(/expected a Keyv/);
    await expect(keyvStore({ stores: [], wrap() {}, get() {} } as never)).rejects.toThrow(
      /no Keyv/,
    );
    expect(() => storeFromUrl(new URL('keyv://x'))).toThrow(/opens no URLs/);
  });
});

// The plain-cache path is exclusive within one process only, which is what the suite holds it to:
// the cases that race two instances skip a store that says it is not atomic. One Keyv for all.
const sharedKeyv = new Keyv({ namespace: 'conformance' });
runConformance({
  name: 'keyv over its in-memory Map: conformance',
  describe,
  it,
  makeStore: () => keyvStore(sharedKeyv),
});
