import { Lock, type LockStore, memoryStore } from 'cachelock';
import { delayCalls } from 'cachelock/testing';
import { describe, expect, it } from 'vitest';

describe('delayCalls', () => {
  it('keeps onRelease synchronous and delivers its wake-ups late, to listeners still listening', async () => {
    const store: LockStore = delayCalls(memoryStore(), 5);
    const heard: string[] = [];
    const stop = store.onRelease!('k', () => heard.push('k'));
    expect(typeof stop).toBe('function');
    const stopped = store.onRelease!('k', () => heard.push('gone'));
    stopped();
    expect(await store.acquire('k', 'a', 10_000, { lineMs: 1_000 })).not.toBeNull();
    expect(await store.acquire('k', 'b', 10_000, { lineMs: 1_000 })).toBeNull();
    expect(await store.release('k', 'a')).toBe(true);
    await expect.poll(() => heard, { timeout: 1_000 }).toEqual(['k']);
    stop();
  });

  it('lets a Lock wait on a store that pushes wake-ups, and hands the key on', async () => {
    const store = delayCalls(memoryStore(), 3);
    const first = new Lock('k', { cache: store, prefix: '' });
    await first.acquire();
    const second = new Lock('k', { cache: store, prefix: '', wait: '5s' });
    const waiting = second.acquire();
    setTimeout(() => void first.release(), 50);
    await waiting;
    expect(second.held).toBe(true);
    expect((await store.inspect('k'))?.fence).toBe(second.fence);
    await second.release();
  });
});
