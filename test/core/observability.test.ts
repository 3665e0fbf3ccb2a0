import { spawnSync } from 'node:child_process';
import { subscribe, unsubscribe } from 'node:diagnostics_channel';
import { Lock, type LockEvent, memoryStore, subscribe as onLockEvent } from 'cachelock';
import { describe, expect, it } from 'vitest';

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

describe('diagnostics_channel', () => {
  it('publishes acquire, contended, extend, release and lost with what applies', async () => {
    const events: Array<[string, LockEvent]> = [];
    const names = ['acquire', 'release', 'extend', 'lost', 'contended'];
    const handlers = names.map((name) => {
      const handler = (message: unknown) => events.push([name, message as LockEvent]);
      subscribe(`cachelock:${name}`, handler);
      return [name, handler] as const;
    });
    try {
      const cache = memoryStore();
      const lock = await Lock.acquire('observed', { cache, ttl: 90 });
      const waiter = new Lock('observed', { cache, ttl: 90, wait: '5s' }).acquire();
      await sleep(150);
      await lock.release();
      const second = await waiter;
      const { owner } = (await cache.inspect('cachelock:observed'))!;
      await cache.release('cachelock:observed', owner);
      await sleep(120);
      const kinds = events.map(([name]) => name);
      expect(kinds).toContain('extend');
      expect(kinds.filter((k) => k === 'acquire')).toHaveLength(2);
      expect(kinds).toContain('contended');
      expect(kinds).toContain('release');
      expect(kinds.at(-1)).toBe('lost');
      const [, acquired] = events.find(([name]) => name === 'acquire')!;
      expect(acquired).toMatchObject({ key: 'observed', fence: lock.fence });
      expect(acquired.owner).toContain(String(process.pid));
      expect(acquired.waitedMs).toBeGreaterThanOrEqual(0);
      const [, releasedEvent] = events.find(([name]) => name === 'release')!;
      expect(releasedEvent.heldMs).toBeGreaterThanOrEqual(140);
      const [, lostEvent] = events.at(-1)!;
      expect(lostEvent.fence).toBe(second.fence);
      expect(lostEvent.error?.name).toBe('LockLostError');
    } finally {
      for (const [name, handler] of handlers) unsubscribe(`cachelock:${name}`, handler);
    }
  });
});

describe('subscribe', () => {
  it('delivers typed events of one channel until the returned function is called', async () => {
    const lost: string[] = [];
    const acquired: number[] = [];
    const stopLost = onLockEvent('lost', (event) => lost.push(event.error.name));
    const stopAcquire = onLockEvent('acquire', (event) => acquired.push(event.waitedMs));
    try {
      const cache = memoryStore();
      await Lock.acquire('typed-events', { cache, ttl: 60 });
      const { owner } = (await cache.inspect('cachelock:typed-events'))!;
      await cache.release('cachelock:typed-events', owner);
      await sleep(100);
      expect(lost).toEqual(['LockLostError']);
      expect(acquired).toHaveLength(1);
      stopAcquire();
      await (await Lock.acquire('typed-events-2', { cache })).release();
      expect(acquired).toHaveLength(1);
    } finally {
      stopLost();
      stopAcquire();
    }
  });

  it('names a channel that does not exist', () => {
    expect(() => onLockEvent('acquired' as never, () => {})).toThrow(
      /subscribe: name must be one of acquire, release, extend, lost, contended, got "acquired"/,
    );
  });
});

describe('NODE_DEBUG=cachelock', () => {
  it('logs through util.debuglog, and only when asked', () => {
    const script =
      "import { Lock } from 'cachelock'; const l = await Lock.acquire('debugged'); await l.release();";
    const stderrWith = (NODE_DEBUG: string) =>
      spawnSync(process.execPath, ['--input-type=module', '-e', script], {
        env: { ...process.env, NODE_DEBUG },
        encoding: 'utf8',
      }).stderr;
    const logged = stderrWith('cachelock');
    expect(logged).toMatch(/CACHELOCK \d+: acquired "debugged" fence=\d+/);
    expect(logged).toMatch(/CACHELOCK \d+: released "debugged"/);
    expect(stderrWith('')).not.toContain('CACHELOCK');
  });
});

describe('the memory store', () => {
  it('sweeps expired leases of keys that are never touched again', async () => {
    let now = 0;
    const store = memoryStore({ now: () => now });
    for (let i = 0; i < 1_000; i++) await store.acquire(`once-${i}`, 'owner', 10);
    expect(store.size).toBe(1_000);
    now = 100;
    for (let i = 0; i < 4_000; i++) {
      await store.acquire(`busy-${i % 4}`, 'owner', 10);
    }
    expect(store.size).toBeLessThanOrEqual(4);
  });

  it('judges leases by its clock', async () => {
    let now = 1_000;
    const store = memoryStore({ now: () => now });
    expect(await store.acquire('k', 'a', 50)).not.toBeNull();
    expect(await store.acquire('k', 'b', 50)).toBeNull();
    now += 49;
    expect(await store.inspect('k')).toMatchObject({ owner: 'a', ttlMs: 1 });
    now += 1;
    expect(await store.inspect('k')).toBeNull();
    expect(await store.extend('k', 'a', 50)).toBe(false);
    expect(await store.acquire('k', 'b', 50)).not.toBeNull();
  });
});
