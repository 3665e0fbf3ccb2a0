import {
  closeAll,
  knownSchemes,
  Lock,
  type LockStore,
  memoryStore,
  registerScheme,
} from 'cachelock';
import { describe, expect, it } from 'vitest';

describe('URL schemes', () => {
  it('registerScheme opens stores for a new scheme, one per URL, closed by closeAll', async () => {
    const opened: string[] = [];
    const closed: string[] = [];
    registerScheme('etcd', (url) => {
      opened.push(url.href);
      const store: LockStore = Object.assign(memoryStore(), {
        kind: 'etcd',
        close: async () => void closed.push(url.href),
      });
      return store;
    });
    expect(knownSchemes()).toContain('etcd:');
    const a = await Lock.acquire('k', { cache: 'etcd://127.0.0.1:2379/a' });
    expect(await new Lock('k', { cache: 'etcd://127.0.0.1:2379/a' }).tryAcquire()).toBe(false);
    const b = await Lock.acquire('k', { cache: 'etcd://127.0.0.1:2379/b' });
    expect(opened).toEqual(['etcd://127.0.0.1:2379/a', 'etcd://127.0.0.1:2379/b']);
    await a.release();
    await b.release();
    await closeAll();
    expect(closed.sort()).toEqual(opened);
    // After closeAll a URL opens a fresh store.
    await (await Lock.acquire('k', { cache: 'etcd://127.0.0.1:2379/a' })).release();
    expect(opened).toHaveLength(3);
    await closeAll();
  });

  it('a factory that fails gives StoreError, and the URL is tried afresh next time', async () => {
    let calls = 0;
    registerScheme('flaky:', () => {
      calls++;
      if (calls === 1) throw new Error('server down');
      return memoryStore();
    });
    const error = await new Lock('k', { cache: 'flaky://x' }).acquire().catch((e) => e);
    expect(error.name).toBe('StoreError');
    expect(error.cause.message).toBe('server down');
    await (await Lock.acquire('k', { cache: 'flaky://x' })).release();
    expect(calls).toBe(2);
    await closeAll();
  });

  it('rejects a scheme that is not one', () => {
    expect(() => registerScheme('not a scheme', () => memoryStore())).toThrow(
      /scheme must be a URL scheme such as 'etcd', got "not a scheme"/,
    );
    expect(() => registerScheme('ok', 'factory' as never)).toThrow(/factory must be a function/);
  });
});
