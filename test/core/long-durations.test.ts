import { configure, Lock, memoryStore } from 'cachelock';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { MAX_TIMER_MS } from '../../src/duration.js';
import { type Watched, watchedCount } from '../../src/watchdog.js';

let n = 0;
const key = () => `long-test-${process.pid}-${++n}`;
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

afterEach(() => {
  configure(null);
  vi.restoreAllMocks();
});

/**
 * Run `during` for `windowMs` and report what the process did meanwhile: timers armed,
 * TimeoutOverflowWarnings, CPU time. A timer delay over 2^31-1 ms fires after 1 ms, so a
 * watchdog or a wait that asks for one re-arms every millisecond.
 */
async function observe(windowMs: number, during: () => Promise<void>) {
  const warnings: Error[] = [];
  const onWarning = (warning: Error) => {
    if (warning.name === 'TimeoutOverflowWarning') warnings.push(warning);
  };
  process.on('warning', onWarning);
  const timers = vi.spyOn(globalThis, 'setTimeout');
  const cpu = process.cpuUsage();
  try {
    await Promise.all([during(), sleep(windowMs)]);
  } finally {
    process.off('warning', onWarning);
  }
  const used = process.cpuUsage(cpu);
  // The sleep above arms one timer of its own.
  const armed = timers.mock.calls.length - 1;
  timers.mockRestore();
  return { warnings, armed, cpuMs: (used.user + used.system) / 1000 };
}

describe('the longest lease', () => {
  it('a ttl over 2^31-1 ms is a RangeError that names the option and the value', () => {
    expect(() => new Lock(key(), { ttl: '100d' })).toThrow(RangeError);
    expect(() => new Lock(key(), { ttl: '100d' })).toThrow(
      /^ttl must be at most 2147483647 ms \(about 24\.8 days\), got "100d"$/,
    );
    expect(() => new Lock(key(), { ttl: MAX_TIMER_MS + 1 })).toThrow(/ttl .* got 2147483648$/);
    expect(() => configure({ ttl: '25d' })).toThrow(/^configure: ttl must be at most .* "25d"$/);
    expect(() => new Lock(key(), { holdAtLeast: '30d' })).toThrow(
      /^holdAtLeast must be at most 2147483647 ms .* got "30d"$/,
    );
    expect(() => new Lock(key(), { ttl: MAX_TIMER_MS, holdAtLeast: '24d' })).not.toThrow();
  });

  it('extend(ttl) refuses a ttl over the maximum', async () => {
    const lock = await Lock.acquire(key(), { cache: memoryStore() });
    try {
      await expect(lock.extend('100d')).rejects.toThrow(/^ttl must be at most .* got "100d"$/);
      expect(lock.held).toBe(true);
    } finally {
      await lock.release();
    }
  });

  it('a lease of the maximum ttl is held without spinning the watchdog', async () => {
    const lock = await Lock.acquire(key(), { cache: memoryStore(), ttl: MAX_TIMER_MS });
    const seen = await observe(500, async () => {});
    expect(seen.warnings).toEqual([]);
    expect(seen.armed).toBeLessThanOrEqual(1);
    expect(lock.held).toBe(true);
    expect(await lock.release()).toBe(true);
    expect(watchedCount()).toBe(0);
  });
});

describe('timers beyond 2^31-1 ms', () => {
  it('the watchdog waits for a lease due in 100 days without re-arming every millisecond', async () => {
    // A watchdog of its own: one whose timer an earlier test armed would not arm a new one.
    vi.resetModules();
    const { watch, unwatch } = await import('../../src/watchdog.js');
    const ticks: number[] = [];
    const lease: Watched = {
      dueAt: performance.now() + 100 * 86_400_000,
      tick: (now) => ticks.push(now),
    };
    const seen = await observe(1_000, async () => watch(lease));
    unwatch(lease);
    expect(seen.warnings).toEqual([]);
    expect(ticks).toEqual([]);
    expect(seen.armed).toBeLessThanOrEqual(2);
    // A timer that fires every millisecond costs well over 100 ms of CPU per second.
    expect(seen.cpuMs).toBeLessThan(60);
  });

  it('a wait of 100 days in line behind another waiter waits, and gets the key in turn', async () => {
    const cache = memoryStore();
    const k = key();
    const holder = await Lock.acquire(k, { cache });
    const first = Lock.acquire(k, { cache, wait: '100d' });
    const second = Lock.acquire(k, { cache, wait: '100d' });
    const outcomes: string[] = [];
    second.then(
      () => outcomes.push('granted'),
      (error) => outcomes.push(String(error)),
    );
    const seen = await observe(300, async () => {});
    expect(outcomes).toEqual([]);
    expect(seen.warnings).toEqual([]);
    await holder.release();
    await (await first).release();
    const lock = await second;
    expect(lock.held).toBe(true);
    await lock.release();
  });

  it('holdAtLeast near the maximum keeps the key taken after release', async () => {
    const cache = memoryStore();
    const k = key();
    const lock = await Lock.acquire(k, { cache, holdAtLeast: '24d' });
    expect(await lock.release()).toBe(true);
    const held = await Lock.inspect(k, { cache });
    expect(held!.ttlMs).toBeGreaterThan(23 * 86_400_000);
    expect(await new Lock(k, { cache }).tryAcquire()).toBe(false);
  });
});
