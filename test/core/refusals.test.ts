import { Refusals } from 'cachelock';
import { describe, expect, it } from 'vitest';

describe('Refusals (each waiter last refusal, for stores whose hand-offs grant)', () => {
  it('voids a hand-off made before the refusal and grants one made after it', () => {
    const refusals = new Refusals();
    refusals.refused('a', 10n);
    expect(refusals.checked({ owner: 'a', fence: 10n, ttlMs: 500 })).toBeUndefined();
    expect(refusals.checked({ owner: 'a', fence: 11n, ttlMs: 500 })).toEqual({
      owner: 'a',
      fence: 11n,
      ttlMs: 500,
    });
    // With no refusal on record a hand-off is news only: no claim to hold on.
    expect(refusals.checked({ owner: 'b', fence: 11n, ttlMs: 500 })).toEqual({
      owner: 'b',
      fence: 11n,
    });
  });

  it('past its limit forgets the oldest owner, and only for a new one', () => {
    const refusals = new Refusals(2);
    refusals.refused('a', 1n);
    refusals.refused('b', 2n);
    // A waiter refused again (it polls) forgets nobody, and becomes the newest.
    refusals.refused('b', 3n);
    expect(refusals.has('a')).toBe(true);
    expect(refusals.has('b')).toBe(true);
    refusals.refused('a', 4n);
    refusals.refused('c', 5n);
    expect(refusals.has('b')).toBe(false);
    expect(refusals.has('a')).toBe(true);
    expect(refusals.has('c')).toBe(true);
    refusals.forget('a');
    expect(refusals.has('a')).toBe(false);
  });
});
