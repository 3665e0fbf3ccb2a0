import { randomUUID } from 'node:crypto';
import {
  currentLock,
  Lock,
  LockedError,
  LockLostError,
  type LockStore,
  LockTimeoutError,
  memoryStore,
  once,
  StoreError,
} from 'cachelock';
import { describe, expect, expectTypeOf, test, vi } from 'vitest';

// Keys unique to this run, in the process-wide memory store (the default cache).
const run = randomUUID().slice(0, 8);
let counter = 0;
const unique = (name: string) => `${name}-${run}-${++counter}`;

function gate() {
  let open!: () => void;
  const opened = new Promise<void>((resolve) => {
    open = resolve;
  });
  return { open, opened };
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** A real memory store that records the keys it was asked to acquire. */
function watchedStore(): { store: LockStore; acquired: string[] } {
  const inner = memoryStore();
  const acquired: string[] = [];
  const store: LockStore = {
    kind: 'memory',
    atomic: true,
    acquire: (key, owner, ttlMs) => {
      acquired.push(key);
      return inner.acquire(key, owner, ttlMs);
    },
    release: (key, owner, keepMs) => inner.release(key, owner, keepMs),
    extend: (key, owner, ttlMs) => inner.extend(key, owner, ttlMs),
    inspect: (key) => inner.inspect(key),
  };
  return { store, acquired };
}

describe('once(options, fn)', () => {
  test('two concurrent calls with the same key: one runs, the other skips', async () => {
    const prefix = unique('same');
    const { open, opened } = gate();
    const ran: string[] = [];
    const sync = once({ key: `${prefix}-{userId}` }, async (userId: string) => {
      ran.push(userId);
      await opened;
      return `synced ${userId}`;
    });
    const first = sync('u1');
    await vi.waitFor(() => expect(ran).toEqual(['u1']));
    const second = await sync('u1');
    expect(second).toBeUndefined();
    open();
    expect(await first).toBe('synced u1');
    expect(ran).toEqual(['u1']);
    // Released: the next call runs.
    expect(await sync('u1')).toBe('synced u1');
  });

  test('different keys both run', async () => {
    const prefix = unique('diff');
    const { open, opened } = gate();
    const ran: string[] = [];
    const sync = once({ key: `${prefix}-{0}` }, async (userId: string) => {
      ran.push(userId);
      await opened;
      return userId;
    });
    const calls = [sync('a'), sync('b')];
    // Both are inside fn at once: neither key blocked the other.
    await vi.waitFor(() => expect(ran.sort()).toEqual(['a', 'b']));
    open();
    expect(await Promise.all(calls)).toEqual(['a', 'b']);
    expect(ran.sort()).toEqual(['a', 'b']);
  });

  test('throwIfLocked rejects with LockedError, or LockTimeoutError after waiting', async () => {
    const key = unique('throw');
    const { open, opened } = gate();
    const job = once({ key, throwIfLocked: true }, () => opened);
    const timed = once({ key, throwIfLocked: true, wait: '30ms' }, () => 'never');
    const first = job();
    await vi.waitFor(async () => expect(await Lock.inspect(key)).not.toBeNull());
    const refused = await job().catch((error: unknown) => error);
    expect(refused).toBeInstanceOf(LockedError);
    expect((refused as LockedError).key).toBe(key);
    await expect(timed()).rejects.toBeInstanceOf(LockTimeoutError);
    open();
    await first;
  });

  test('a skipped call resolves onLocked(...args), called with the same this', async () => {
    const key = unique('onlocked');
    const { open, opened } = gate();
    const worker = {
      name: 'w1',
      job: once(
        {
          key: `${key}-{id}`,
          onLocked(this: unknown, id: number, note: string) {
            return { skipped: id, note, self: this };
          },
        },
        async function (this: { name: string }, id: number, note: string) {
          await opened;
          return `${this.name} ran ${id} ${note}`;
        },
      ),
    };
    const first = worker.job(1, 'a');
    await vi.waitFor(async () => expect(await worker.job.isLocked(1, 'x')).toBe(true));
    expect(await worker.job(1, 'b')).toEqual({ skipped: 1, note: 'b', self: worker });
    open();
    expect(await first).toBe('w1 ran 1 a');
  });

  test('wait lets a second call run after the first', async () => {
    const key = unique('wait');
    const order: string[] = [];
    const job = once({ key, wait: '5s' }, async (name: string) => {
      order.push(`start ${name}`);
      await sleep(20);
      order.push(`end ${name}`);
      return name;
    });
    expect(await Promise.all([job('a'), job('b')])).toEqual(['a', 'b']);
    expect(order).toEqual(['start a', 'end a', 'start b', 'end b']);
  });

  test('this is kept', async () => {
    const key = unique('this');
    class Counter {
      count = 0;
      bump = once({ key }, async function (this: Counter, by: number) {
        this.count += by;
        return this.count;
      });
    }
    const counter = new Counter();
    expect(await counter.bump(2)).toBe(2);
    expect(await counter.bump(3)).toBe(5);
  });

  test('isLocked and keyFor', async () => {
    const prefix = unique('inspect');
    const { open, opened } = gate();
    const sync = once(
      { key: `${prefix}-{user.id}-{day}` },
      async (user: { id: number }, day: string) => {
        await opened;
        return `${user.id} ${day}`;
      },
    );
    const user = { id: 7 };
    expect(sync.keyFor(user, 'mon')).toBe(`${prefix}-7-mon`);
    expect(await sync.isLocked(user, 'mon')).toBe(false);
    const first = sync(user, 'mon');
    await vi.waitFor(async () => expect(await sync.isLocked(user, 'mon')).toBe(true));
    expect(await sync.isLocked(user, 'tue')).toBe(false);
    expect(await Lock.inspect(`${prefix}-7-mon`)).not.toBeNull();
    open();
    await first;
    expect(await sync.isLocked(user, 'mon')).toBe(false);
  });

  test('currentLock() inside fn is the lock held for this call', async () => {
    const prefix = unique('current');
    const job = once({ key: `${prefix}-{0}` }, async (id: string) => {
      await sleep(1);
      const lock = currentLock();
      return {
        id,
        key: lock?.key,
        held: lock?.held,
        fence: lock?.fence,
        aborted: lock?.signal.aborted,
      };
    });
    const [a, b] = await Promise.all([job('a'), job('b')]);
    expect(a).toMatchObject({ id: 'a', key: `${prefix}-a`, held: true, aborted: false });
    expect(b).toMatchObject({ id: 'b', key: `${prefix}-b`, held: true });
    expect(typeof a?.fence).toBe('bigint');
    expect(currentLock()).toBeUndefined();
  });

  test('an error from fn propagates and releases the lock', async () => {
    const key = unique('error');
    let calls = 0;
    const job = once({ key }, async () => {
      calls++;
      throw new Error('boom');
    });
    await expect(job()).rejects.toThrow('boom');
    expect(await job.isLocked()).toBe(false);
    await expect(job()).rejects.toThrow('boom');
    expect(calls).toBe(2);
  });

  test('a LockedError thrown by fn itself is not taken for a skip', async () => {
    const outer = unique('outer');
    const inner = unique('inner');
    const holder = await Lock.acquire(inner);
    const job = once({ key: outer }, async () => {
      await Lock.acquire(inner);
    });
    await expect(job()).rejects.toBeInstanceOf(LockedError);
    await holder.release();
  });

  test('holdAtLeast makes a second call right after the first skip', async () => {
    const key = unique('hold');
    let calls = 0;
    const job = once({ key, holdAtLeast: '2s' }, async () => ++calls);
    expect(await job()).toBe(1);
    expect(await job()).toBeUndefined();
    expect(await job.isLocked()).toBe(true);
    expect(calls).toBe(1);
  });

  test('a store failure propagates as StoreError, never as a skip', async () => {
    const failing: LockStore = {
      kind: 'broken',
      atomic: true,
      acquire: () => Promise.reject(new Error('connection refused')),
      release: () => Promise.reject(new Error('connection refused')),
      extend: () => Promise.reject(new Error('connection refused')),
      inspect: () => Promise.reject(new Error('connection refused')),
    };
    let calls = 0;
    const job = once({ key: unique('store'), cache: failing }, async () => ++calls);
    await expect(job()).rejects.toBeInstanceOf(StoreError);
    await expect(job.isLocked()).rejects.toBeInstanceOf(StoreError);
    expect(calls).toBe(0);
  });

  test('a lost lease rejects with LockLostError after fn settles', async () => {
    const job = once({ key: unique('lost'), ttl: '30ms', autoExtend: false }, async () => {
      await sleep(100);
      return 'done';
    });
    await expect(job()).rejects.toBeInstanceOf(LockLostError);
  });

  test('options are passed to the lock: prefix and cache', async () => {
    const { store, acquired } = watchedStore();
    const key = unique('prefix');
    const job = once(
      { key: `${key}-{0}`, cache: store, prefix: 'jobs:' },
      async (id: number) => id,
    );
    expect(await job(1)).toBe(1);
    expect(acquired).toEqual([`jobs:${key}-1`]);
  });

  test('the wrapper keeps the name and length of fn', () => {
    async function syncUser(userId: string, force: boolean) {
      return [userId, force];
    }
    const wrapped = once({ key: 'sync-{userId}' }, syncUser);
    expect(wrapped.name).toBe('syncUser');
    expect(wrapped.length).toBe(2);
  });

  test('a key function gets the arguments', async () => {
    const prefix = unique('keyfn');
    const { store, acquired } = watchedStore();
    const job = once(
      { key: (a: number, b: number) => `${prefix}-${a + b}`, cache: store },
      async (a: number, b: number) => a * b,
    );
    expect(job.keyFor(2, 3)).toBe(`${prefix}-5`);
    expect(await job(2, 3)).toBe(6);
    expect(acquired).toEqual([`cachelock:${prefix}-5`]);
  });
});

test('the wrapper type follows the options (checked by tsc)', () => {
  const plain = once({ key: 'k-{id}' }, async (id: string) => id.length);
  expectTypeOf(plain).parameters.toEqualTypeOf<[string]>();
  expectTypeOf(plain).returns.toEqualTypeOf<Promise<number | undefined>>();
  const strict = once({ key: 'k-{id}', throwIfLocked: true }, async (id: string) => id.length);
  expectTypeOf(strict).returns.toEqualTypeOf<Promise<number>>();
  const fallback = once(
    { key: 'k', onLocked: () => 'skipped' as const },
    (id: string) => id.length,
  );
  expectTypeOf(fallback).returns.toEqualTypeOf<Promise<number | 'skipped'>>();
  // The key function's parameters are typed from fn.
  const keyed = once({ key: (id) => id.toUpperCase() }, async (id: string) => id);
  expectTypeOf(keyed.isLocked).parameters.toEqualTypeOf<[string]>();
  expectTypeOf(keyed.keyFor).returns.toEqualTypeOf<string>();
});

describe('once checks its options when applied', () => {
  const fn = async (userId: string) => userId;

  test.each<[string, unknown, RegExp]>([
    ['no options', undefined, /options must be an object with a key/],
    ['no key', {}, /key is required/],
    ['an empty key', { key: '' }, /key is required/],
    ['a number key', { key: 42 }, /key is required.*42/],
    ['a typo', { key: 'k', throwIfLock: true }, /once: throwIfLock is not an option/],
    ['a bad ttl', { key: 'k', ttl: '10 parsecs' }, /once: ttl.*"10 parsecs"/],
    ['a negative holdAtLeast', { key: 'k', holdAtLeast: -1 }, /once: holdAtLeast.*-1/],
    ['a bad wait', { key: 'k', wait: 'soon' }, /once: wait/],
    [
      'a non-boolean throwIfLocked',
      { key: 'k', throwIfLocked: 'yes' },
      /throwIfLocked must be true or false/,
    ],
    ['a non-function onLocked', { key: 'k', onLocked: 1 }, /onLocked must be a function/],
    [
      'a placeholder that names no parameter',
      { key: 'sync-{user}' },
      /\{user\} names no parameter.*userId/,
    ],
    ['an unbalanced brace', { key: 'sync-{userId' }, /unbalanced/],
  ])('%s', (_, options, message) => {
    const apply = () => once(options as any, fn);
    expect(apply).toThrow(message);
    try {
      apply();
    } catch (error) {
      expect(['TypeError', 'RangeError']).toContain((error as Error).name);
    }
  });

  test('fn must be a function', () => {
    expect(() => once({ key: 'k' }, 'nope' as any)).toThrow(/fn must be a function/);
  });
});

describe('key errors at call time', () => {
  test('an object without a path rejects, does not throw, and acquires nothing', async () => {
    const { store, acquired } = watchedStore();
    let calls = 0;
    const job = once({ key: 'user-{user}', cache: store }, async (user: object) => {
      calls++;
      return user;
    });
    let pending: Promise<unknown> | undefined;
    expect(() => {
      pending = job({ id: 1 });
    }).not.toThrow();
    await expect(pending).rejects.toThrow(TypeError);
    await expect(job({ id: 1 })).rejects.toThrow(
      /\{user\} is an object.*\{user\.id\} or a key function/,
    );
    await expect(job.isLocked({ id: 1 })).rejects.toThrow(TypeError);
    expect(() => job.keyFor({ id: 1 })).toThrow(TypeError);
    expect(acquired).toEqual([]);
    expect(calls).toBe(0);
  });

  test.each<[string, unknown]>([
    ['an empty string', ''],
    ['a number', 5],
    ['undefined', undefined],
  ])('a key function returning %s rejects', async (_, value) => {
    const { store, acquired } = watchedStore();
    const job = once({ key: () => value as string, cache: store }, async () => 1);
    await expect(job()).rejects.toThrow(/key function must return a non-empty string/);
    expect(acquired).toEqual([]);
  });

  test('a template that comes out empty rejects', async () => {
    const job = once({ key: '{0}' }, async (id: string | null) => id);
    await expect(job(null)).rejects.toThrow(/made an empty key/);
    expect(await job('x')).toBe('x');
  });
});
