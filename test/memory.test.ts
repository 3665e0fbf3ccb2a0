import { Lock, memoryStore, newOwner } from 'cachelock';
import { runConformance } from 'cachelock/testing';
import { describe, expect, it } from 'vitest';
import { describePrimitives } from './support/store-primitives.js';

// Each memory store is a backend of its own, shared by nothing.
runConformance({
  name: 'memory store: conformance',
  describe,
  it,
  makeStore: () => memoryStore(),
  sharedBackend: false,
});

const KEYS = 5_000;

describe('memory store: nothing left behind', () => {
  it('keeps nothing for 15,000 keys locked once: released, held at least, or left to expire', async () => {
    let now = 1_000_000;
    const store = memoryStore({ now: () => now });
    const fences: bigint[] = [];
    for (let i = 0; i < KEYS; i++) {
      const owner = newOwner();
      fences.push((await store.acquire(`released:${i}`, owner, 1_000))!.fence!);
      expect(await store.release(`released:${i}`, owner)).toBe(true);
      const kept = newOwner();
      fences.push((await store.acquire(`held-at-least:${i}`, kept, 1_000))!.fence!);
      expect(await store.release(`held-at-least:${i}`, kept, 200)).toBe(true);
      fences.push((await store.acquire(`expired:${i}`, newOwner(), 1_000))!.fence!);
    }
    for (let i = 1; i < fences.length; i++) expect(fences[i]! > fences[i - 1]!).toBe(true);
    now += 1_001;
    // Nobody touches those keys again: sweeps riding on other acquisitions clear them, a
    // bounded batch each.
    let pairs = 0;
    for (; store.size > 0 && pairs < 5_000; pairs++) {
      const owner = newOwner();
      await store.acquire('busy', owner, 1_000);
      await store.release('busy', owner);
    }
    expect(store.size).toBe(0);
    expect(pairs).toBeLessThan(5_000);
  });

  it('stays bounded under a steady stream of keys used once, each held at least a while', async () => {
    let now = 0;
    const store = memoryStore({ now: () => now });
    let largest = 0;
    for (let i = 0; i < 50_000; i++) {
      now += 1;
      const owner = newOwner();
      await store.acquire(`once:${i}`, owner, 1_000);
      await store.release(`once:${i}`, owner, 100);
      largest = Math.max(largest, store.size);
    }
    // About 100 leases are live at any moment; the rest must not pile up.
    expect(largest).toBeLessThan(500);
  });
});

describe('memory store: answers at once only for itself', () => {
  it('a store made from it by Object.create is asked through its own methods', async () => {
    const base = memoryStore();
    const calls: string[] = [];
    const wrapped = Object.assign(Object.create(base), {
      kind: base.kind,
      atomic: base.atomic,
      acquire(key: string, owner: string, ttlMs: number) {
        calls.push(`acquire ${key}`);
        return base.acquire(key, owner, ttlMs);
      },
      release(key: string, owner: string, keepMs?: number) {
        calls.push(`release ${key}`);
        return base.release(key, owner, keepMs);
      },
    });
    const lock = new Lock('k', { cache: wrapped, prefix: '' });
    await lock.acquire();
    expect(await lock.release()).toBe(true);
    await lock.acquire();
    expect(await lock.release()).toBe(true);
    expect(calls).toEqual(['acquire k', 'release k', 'acquire k', 'release k']);
  });

  it('a lock on it keeps the store semantics: refused while held, lost once expired', async () => {
    let now = 1_000;
    const cache = memoryStore({ now: () => now });
    const one = new Lock('k', { cache, ttl: 100, autoExtend: false });
    const two = new Lock('k', { cache });
    await one.acquire();
    expect(one.held).toBe(true);
    expect(await two.tryAcquire()).toBe(false);
    now += 200; // the store's clock: the lease ran out there
    expect(await two.tryAcquire()).toBe(true);
    expect(await one.release()).toBe(false);
    expect(one.signal.aborted).toBe(true);
    expect(await two.release()).toBe(true);
  });
});

describe('memory store: the primitives over it', () => {
  const store = memoryStore();
  describePrimitives(() => [store, store]);
});

describe('memory store: release listeners', () => {
  it('tells every listener of a key, each unsubscribing only itself, and keeps none once all left', async () => {
    const store = memoryStore();
    const heard: string[] = [];
    const release = async (key: string) => {
      const owner = newOwner();
      expect(await store.acquire(key, owner, 1_000)).not.toBeNull();
      expect(await store.release(key, owner)).toBe(true);
    };
    const stopA = store.onRelease('k', () => heard.push('a'));
    const stopB = store.onRelease('k', () => heard.push('b'));
    const stopOther = store.onRelease('other', () => heard.push('other'));
    await release('k');
    expect(heard).toEqual(['a', 'b']);
    stopA();
    stopA();
    await release('k');
    expect(heard).toEqual(['a', 'b', 'b']);
    const stopC = store.onRelease('k', () => heard.push('c'));
    stopB();
    await release('k');
    expect(heard).toEqual(['a', 'b', 'b', 'c']);
    stopC();
    stopB();
    await release('k');
    await release('other');
    expect(heard).toEqual(['a', 'b', 'b', 'c', 'other']);
    stopOther();
    // A listener that unsubscribed twice does not take a later listener of its key with it.
    const stopD = store.onRelease('k', () => heard.push('d'));
    stopC();
    await release('k');
    expect(heard.at(-1)).toBe('d');
    stopD();
  });
});

describe('memory store: its default clock', () => {
  it('is the one the lock reads, even where the global performance is replaced', async () => {
    const store = memoryStore();
    const global = globalThis as { performance: typeof performance };
    const real = global.performance;
    // A minute behind, as a test environment's own `performance` may be.
    const behind = Object.create(real, { now: { value: () => real.now() - 60_000 } });
    global.performance = behind;
    try {
      // One through the store's promise API (a signal takes that path), one answered at once.
      const first = new Lock('clocks', {
        cache: store,
        ttl: 30_000,
        signal: new AbortController().signal,
      });
      await first.acquire();
      const second = new Lock('clocks', { cache: store, ttl: 30_000 });
      expect(await second.tryAcquire()).toBe(false);
      expect(await first.release()).toBe(true);
    } finally {
      global.performance = real;
    }
  });
});
