import { Lock, LockedError, LockTimeoutError, memoryStore } from 'cachelock';
import { expect, it } from 'vitest';

it('smoke', async () => {
  const a = await Lock.acquire('k');
  await expect(Lock.acquire('k')).rejects.toBeInstanceOf(LockedError);
  const b = new Lock('k', { wait: 50 });
  await expect(b.acquire()).rejects.toBeInstanceOf(LockTimeoutError);
  const c = new Lock('k', { wait: '1s' });
  const p = c.acquire();
  setTimeout(() => a.release(), 20);
  await p;
  expect(c.held).toBe(true);
  expect(c.fence! > a.fence!).toBe(true);
  expect(await c.release()).toBe(true);
  expect(await c.release()).toBe(false);
  const r = await new Lock('x', { cache: memoryStore() }).run(async () => 42);
  expect(r).toBe(42);
});
