import { configure, Lock, memoryStore, toMs } from 'cachelock';
import { describe, expect, it } from 'vitest';

const cache = memoryStore();

// Each row: what is given, the error class, and what its message must say.
const badLocks: Array<[string, () => unknown, ErrorConstructor, RegExp]> = [
  [
    'a number key',
    () => new Lock(42 as never),
    TypeError,
    /key must be a non-empty string, got 42/,
  ],
  ['an empty key', () => new Lock(''), TypeError, /key must be a non-empty string, got ""/],
  [
    'an object key',
    () => new Lock({} as never),
    TypeError,
    /key must be a non-empty string, got \{\}/,
  ],
  [
    'no key',
    () => new Lock(undefined as never),
    TypeError,
    /key must be a non-empty string, got undefined/,
  ],
  [
    'options not an object',
    () => new Lock('k', 'fast' as never),
    TypeError,
    /options must be an object, got "fast"/,
  ],
  [
    'a negative ttl',
    () => new Lock('k', { ttl: -1 }),
    RangeError,
    /ttl must not be negative, got -1/,
  ],
  ['a zero ttl', () => new Lock('k', { ttl: 0 }), RangeError, /ttl must be at least 1 ms, got 0/],
  [
    'a NaN ttl',
    () => new Lock('k', { ttl: Number.NaN }),
    RangeError,
    /ttl must be a duration, got NaN/,
  ],
  [
    'an infinite ttl',
    () => new Lock('k', { ttl: Number.POSITIVE_INFINITY }),
    RangeError,
    /ttl must be a finite duration, got Infinity/,
  ],
  [
    'ttl in parsecs',
    () => new Lock('k', { ttl: '10 parsecs' }),
    TypeError,
    /ttl must be .*got "10 parsecs"/,
  ],
  ['an empty ttl', () => new Lock('k', { ttl: '' }), TypeError, /ttl must be .*got ""/],
  [
    'ttl forever',
    () => new Lock('k', { ttl: 'forever' }),
    TypeError,
    /ttl must be .*got "forever"/,
  ],
  [
    'an object wait',
    () => new Lock('k', { wait: {} as never }),
    TypeError,
    /wait must be milliseconds or a duration string, got \{\}/,
  ],
  [
    'a negative wait',
    () => new Lock('k', { wait: '-5s' }),
    RangeError,
    /wait must not be negative, got "-5s"/,
  ],
  [
    'holdAtLeast NaN',
    () => new Lock('k', { holdAtLeast: Number.NaN }),
    RangeError,
    /holdAtLeast must be a duration, got NaN/,
  ],
  [
    'autoExtend as text',
    () => new Lock('k', { autoExtend: 'yes' as never }),
    TypeError,
    /autoExtend must be true or false, got "yes"/,
  ],
  [
    'a number prefix',
    () => new Lock('k', { prefix: 1 as never }),
    TypeError,
    /prefix must be a string, got 1/,
  ],
  [
    'onLost not a function',
    () => new Lock('k', { onLost: 'log' as never }),
    TypeError,
    /onLost must be a function, got "log"/,
  ],
  [
    'signal not a signal',
    () => new Lock('k', { signal: {} as never }),
    TypeError,
    /signal must be an AbortSignal/,
  ],
  [
    'a misspelt option',
    () => new Lock('k', { tll: '1s' } as never),
    TypeError,
    /tll is not an option; known options: cache, ttl/,
  ],
  [
    'a number cache',
    () => new Lock('k', { cache: 7 as never }),
    TypeError,
    /cache must be a LockStore, a client, a URL or an object with get, set and delete, got 7/,
  ],
  [
    'an empty object cache',
    () => new Lock('k', { cache: {} }),
    TypeError,
    /cache .* lacks get, set, delete/,
  ],
  [
    'a cache with only get',
    () => new Lock('k', { cache: { get() {} } }),
    TypeError,
    /cache .* lacks set, delete/,
  ],
  [
    'a cache that is not a URL',
    () => new Lock('k', { cache: 'localhost:6379' }),
    TypeError,
    /unknown URL scheme "localhost:"/,
  ],
  [
    'a cache with no scheme',
    () => new Lock('k', { cache: 'just words' }),
    TypeError,
    /cache must be a URL such as redis:\/\/127.0.0.1:6379 or memory:, got "just words"/,
  ],
  [
    'an unknown scheme',
    () => new Lock('k', { cache: 'mongodb://127.0.0.1/x' }),
    TypeError,
    /unknown URL scheme "mongodb:" .* known schemes: (.*, )?memcached:, memory:, (.*, )?postgres:/,
  ],
  [
    'a bad default',
    () => configure({ ttl: '1 fortnight' }),
    TypeError,
    /configure: ttl must be .*"1 fortnight"/,
  ],
  [
    'a bad default cache',
    () => configure({ cache: 'nope://' }),
    TypeError,
    /configure: cache: unknown URL scheme "nope:"/,
  ],
];

describe('bad input', () => {
  it.each(badLocks)('%s is a clear error', (_what, make, kind, message) => {
    expect(make).toThrow(kind);
    expect(make).toThrow(message);
  });

  it('leaves no lock behind and grants none', async () => {
    for (const [, make] of badLocks) {
      try {
        make();
      } catch {}
    }
    expect(cache.size).toBe(0);
    expect(await Lock.inspect('k')).toBeNull();
    // Defaults that were refused did not stick.
    expect(configure({})).toEqual({});
  });

  it('rejects a bad ttl given to extend without touching the lease', async () => {
    const lock = await Lock.acquire('extend-bad', { cache });
    await expect(lock.extend('soon')).rejects.toThrow(/ttl must be .*got "soon"/);
    expect(lock.held).toBe(true);
    await lock.release();
  });

  it('reads every duration form', () => {
    expect(toMs('ttl', 250)).toBe(250);
    expect(toMs('ttl', '250ms')).toBe(250);
    expect(toMs('ttl', '30s')).toBe(30_000);
    expect(toMs('ttl', '1.5m')).toBe(90_000);
    expect(toMs('ttl', '2h')).toBe(7_200_000);
    expect(toMs('ttl', '1d')).toBe(86_400_000);
    expect(toMs('wait', 'forever', true)).toBe(Number.POSITIVE_INFINITY);
    expect(toMs('wait', Number.POSITIVE_INFINITY, true)).toBe(Number.POSITIVE_INFINITY);
  });
});
