import { randomUUID } from 'node:crypto';
import {
  currentLock,
  Lock,
  LockedError,
  LockTimeoutError,
  once,
  Permit,
  Semaphore,
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

describe('once with several keys', () => {
  test('a call holds every key; a call sharing any key skips, a disjoint one runs', async () => {
    const p = unique('acct');
    const { open, opened } = gate();
    const ran: string[] = [];
    const transfer = once(
      { key: [`${p}-{from}`, `${p}-{to}`] },
      async (from: number, to: number) => {
        ran.push(`${from}->${to}`);
        if (from === 1) await opened;
        return `${from}->${to}`;
      },
    );
    const first = transfer(1, 2);
    await vi.waitFor(() => expect(ran).toEqual(['1->2']));
    // Both keys are held by the running call.
    expect(await Lock.inspect(`${p}-1`)).not.toBeNull();
    expect(await Lock.inspect(`${p}-2`)).not.toBeNull();
    // The reverse pair and a pair sharing one key skip; a disjoint pair runs.
    expect(await transfer(2, 1)).toBeUndefined();
    expect(await transfer(2, 3)).toBeUndefined();
    expect(await transfer(3, 4)).toBe('3->4');
    expect(ran).toEqual(['1->2', '3->4']);
    open();
    expect(await first).toBe('1->2');
    // Released together.
    expect(await Lock.inspect(`${p}-1`)).toBeNull();
    expect(await Lock.inspect(`${p}-2`)).toBeNull();
    expect(await transfer(2, 1)).toBe('2->1');
  });

  test('a refused call takes none of the keys (all or nothing)', async () => {
    const p = unique('none');
    const blocker = await Lock.acquire(`${p}-b`);
    const job = once({ key: [`${p}-a`, `${p}-b`], throwIfLocked: true }, () => 'ran');
    const refused = await job().catch((error: unknown) => error);
    expect(refused).toBeInstanceOf(LockedError);
    expect((refused as LockedError).key).toBe(`${p}-a, ${p}-b`);
    // The free key was not left taken.
    expect(await Lock.inspect(`${p}-a`)).toBeNull();
    await blocker.release();
    expect(await job()).toBe('ran');
  });

  test('keyFor returns the array; isLocked is true when any key is held', async () => {
    const p = unique('kf');
    const job = once({ key: [`${p}-{a}`, `${p}-{b}`] }, async (a: string, b: string) => a + b);
    expect(job.keyFor('x', 'y')).toEqual([`${p}-x`, `${p}-y`]);
    expectTypeOf(job.keyFor).returns.toEqualTypeOf<string[]>();
    expect(await job.isLocked('x', 'y')).toBe(false);
    const one = await Lock.acquire(`${p}-y`);
    expect(await job.isLocked('x', 'y')).toBe(true);
    expect(await job.isLocked('x', 'z')).toBe(false);
    await one.release();
    expect(await job.isLocked('x', 'y')).toBe(false);
  });

  test('a key function may return several keys', async () => {
    const p = unique('fn');
    const { open, opened } = gate();
    const job = once(
      { key: (ids: number[]) => ids.map((id) => `${p}-${id}`) },
      async (_ids: number[]) => opened,
    );
    expect(job.keyFor([3, 1])).toEqual([`${p}-3`, `${p}-1`]);
    const first = job([3, 1]);
    await vi.waitFor(async () => expect(await job.isLocked([1])).toBe(true));
    expect(await Lock.inspect(`${p}-3`)).not.toBeNull();
    open();
    await first;
    await expect(job([])).rejects.toThrow(/non-empty array/);
  });

  test('currentLock() is the Lock on every key', async () => {
    const p = unique('cur');
    const job = once({ key: [`${p}-a`, `${p}-b`] }, async () => {
      const lock = currentLock();
      expect(lock).toBeInstanceOf(Lock);
      expect((lock as Lock).keys).toEqual([`${p}-a`, `${p}-b`]);
      expect(lock?.held).toBe(true);
      return 'ok';
    });
    expect(await job()).toBe('ok');
  });
});

describe('once with permits', () => {
  test('at most N calls at once per key; the rest skip, another key has its own permits', async () => {
    const p = unique('exp');
    const { open, opened } = gate();
    let inside = 0;
    let most = 0;
    const exportTenant = once({ key: `${p}-{tenant}`, permits: 2 }, async (tenant: string) => {
      inside++;
      most = Math.max(most, inside);
      await opened;
      inside--;
      return tenant;
    });
    const running = [exportTenant('t1'), exportTenant('t1')];
    await vi.waitFor(() => expect(inside).toBe(2));
    // The third call on t1 skips; t2 has permits of its own.
    expect(await exportTenant('t1')).toBeUndefined();
    const other = exportTenant('t2');
    await vi.waitFor(() => expect(inside).toBe(3));
    open();
    expect(await Promise.all([...running, other])).toEqual(['t1', 't1', 't2']);
    expect(most).toBe(3);
    // Permits come back: two more calls run.
    expect(await Promise.all([exportTenant('t1'), exportTenant('t1')])).toEqual(['t1', 't1']);
  });

  test('throwIfLocked rejects with LockedError, or LockTimeoutError after waiting', async () => {
    const key = unique('pthrow');
    const { open, opened } = gate();
    const job = once({ key, permits: 1, throwIfLocked: true }, () => opened);
    const timed = once({ key, permits: 1, throwIfLocked: true, wait: '30ms' }, () => 'never');
    const first = job();
    await vi.waitFor(async () => expect(await job.isLocked()).toBe(true));
    const refused = await job().catch((error: unknown) => error);
    expect(refused).toBeInstanceOf(LockedError);
    expect((refused as LockedError).key).toBe(key);
    await expect(timed()).rejects.toBeInstanceOf(LockTimeoutError);
    open();
    await first;
  });

  test('a waiting call runs when a permit comes back', async () => {
    const key = unique('pwait');
    const { open, opened } = gate();
    const order: string[] = [];
    const job = once({ key, permits: 1, wait: '10s' }, async (name: string) => {
      order.push(`in ${name}`);
      if (name === 'a') await opened;
      order.push(`out ${name}`);
      return name;
    });
    const a = job('a');
    await vi.waitFor(() => expect(order).toEqual(['in a']));
    const b = job('b');
    // b waits in line while a holds the only permit.
    await vi.waitFor(async () => expect((await Semaphore.inspect(key)).holders).toHaveLength(1));
    expect(order).toEqual(['in a']);
    open();
    expect(await Promise.all([a, b])).toEqual(['a', 'b']);
    expect(order).toEqual(['in a', 'out a', 'in b', 'out b']);
  });

  test('isLocked is true only when every permit is taken; keys are the semaphore namespace', async () => {
    const key = unique('piso');
    const gates = [gate(), gate()];
    let calls = 0;
    const job = once({ key, permits: 2 }, () => gates[calls++]!.opened);
    expect(job.keyFor()).toBe(key);
    expect(await job.isLocked()).toBe(false);
    const first = job();
    await vi.waitFor(async () => expect((await Semaphore.inspect(key)).holders).toHaveLength(1));
    expect(await job.isLocked()).toBe(false);
    // A plain Lock on the same name is another lock.
    expect(await Lock.inspect(key)).toBeNull();
    const second = job();
    await vi.waitFor(async () => expect(await job.isLocked()).toBe(true));
    for (const g of gates) g.open();
    await Promise.all([first, second]);
    expect(await job.isLocked()).toBe(false);
  });

  test("currentLock() is the call's Permit", async () => {
    const key = unique('pcur');
    const job = once({ key, permits: 3 }, async () => {
      const held = currentLock();
      expect(held).toBeInstanceOf(Permit);
      expect(held?.key).toBe(key);
      expect(held?.held).toBe(true);
      return held;
    });
    const permit = await job();
    expect(permit?.held).toBe(false);
  });

  test('an error thrown by fn is not a skip, and the permit is returned', async () => {
    const key = unique('perr');
    const job = once({ key, permits: 1 }, async () => {
      throw new LockedError('inner', null);
    });
    await expect(job()).rejects.toMatchObject({ key: 'inner' });
    expect((await Semaphore.inspect(key)).holders).toEqual([]);
  });
});

describe('once checks keys and permits when applied', () => {
  test('several keys with permits is a TypeError naming both options', () => {
    expect(() => once({ key: ['a', 'b'], permits: 2 } as never, () => 1)).toThrow(TypeError);
    expect(() => once({ key: ['a', 'b'], permits: 2 } as never, () => 1)).toThrow(
      /key as an array.*permits.*\["a","b"\].*permits 2/,
    );
  });

  test('a key function returning several keys with permits fails at the call', async () => {
    const job = once({ key: () => ['a', 'b'], permits: 2 } as never, () => 1);
    await expect(job()).rejects.toThrow(/several keys.*permits 2/);
  });

  test.each([0, -1, 1.5, '2', Number.NaN, Number.POSITIVE_INFINITY])(
    'permits %s is a RangeError naming the option and value',
    (permits) => {
      expect(() => once({ key: 'k', permits } as never, () => 1)).toThrow(RangeError);
      expect(() => once({ key: 'k', permits } as never, () => 1)).toThrow(
        /once: permits must be an integer >= 1, got/,
      );
    },
  );

  test.each([[[]], [['a', '']], [['a', 3]]])('key %j is a TypeError', (key) => {
    expect(() => once({ key } as never, () => 1)).toThrow(/once: key is required/);
  });

  test('a template in the array is checked against the parameters', () => {
    expect(() => once({ key: ['a-{id}', 'b-{nope}'] }, (id: string) => id)).toThrow(
      /\{nope\} names no parameter/,
    );
  });
});
