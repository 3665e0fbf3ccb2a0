import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { Deadlines } from '../../src/redis/deadlines.js';

/** A reply the test gives when it likes. */
function later<T>() {
  let resolve!: (value: T) => void;
  let reject!: (error: unknown) => void;
  const promise = new Promise<T>((res, rej) => {
    resolve = res;
    reject = rej;
  });
  return { promise, resolve, reject };
}

describe('Deadlines', () => {
  beforeEach(() => {
    vi.useFakeTimers({ toFake: ['setInterval', 'clearInterval', 'performance'] });
  });
  afterEach(() => {
    vi.useRealTimers();
  });

  it('settles with the converted reply, and rejects what has not settled past the deadline', async () => {
    const deadlines = new Deadlines(1_000);
    const fast = later<string>();
    const slow = later<string>();
    const answered = deadlines.run(fast.promise, (reply) => `got ${reply}`);
    const unanswered = deadlines.run(slow.promise, String);
    const failure = unanswered.catch((error: Error) => error.message);
    fast.resolve('1');
    expect(await answered).toBe('got 1');
    await vi.advanceTimersByTimeAsync(999);
    slow.resolve('too late?');
    // Settled just in time: its reply counts.
    expect(await failure).toBe('too late?');
    const never = deadlines
      .run(new Promise(() => {}), String)
      .catch((error: Error) => error.message);
    await vi.advanceTimersByTimeAsync(1_250);
    expect(await never).toBe('Redis did not reply within 1000 ms');
    deadlines.stop();
  });

  it('keeps the deadline of an old operation while thousands after it settle', async () => {
    const deadlines = new Deadlines(1_000);
    let settled = 0;
    const settle = async (n: number) => {
      for (let i = 0; i < n; i++) settled += await deadlines.run(Promise.resolve(i), () => 1);
    };
    // Settled ones pile up behind an operation still waiting for its reply...
    const first = later<string>();
    const answered = deadlines.run(first.promise, String);
    await settle(2_000);
    // ...then one that never gets a reply, and the first one's reply.
    const stuck = deadlines.run(new Promise(() => {}), String).catch((error: Error) => error);
    first.resolve('at last');
    expect(await answered).toBe('at last');
    // The next operations move the one still waiting to the front of the queue.
    await settle(3_000);
    expect(settled).toBe(5_000);
    await vi.advanceTimersByTimeAsync(600);
    const late = later<string>();
    const pending = deadlines.run(late.promise, String);
    await vi.advanceTimersByTimeAsync(650);
    expect(await stuck).toBeInstanceOf(Error);
    // Sent 600 ms later, it has its own, later deadline.
    late.resolve('in time');
    expect(await pending).toBe('in time');
    deadlines.stop();
  });

  it('replaces a failure by the operation `again` gives, once, within the same deadline', async () => {
    const deadlines = new Deadlines(1_000);
    let tries = 0;
    const again = () => {
      tries++;
      return Promise.resolve('by text');
    };
    expect(await deadlines.run(Promise.reject(new Error('NOSCRIPT')), String, again)).toBe(
      'by text',
    );
    const twice = deadlines.run(Promise.reject(new Error('first')), String, () => {
      tries++;
      return Promise.reject(new Error('second'));
    });
    await expect(twice).rejects.toThrow('second');
    expect(tries).toBe(2);
    deadlines.stop();
  });
});
