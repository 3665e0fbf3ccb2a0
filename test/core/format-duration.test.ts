import { formatDuration, LockedError, LockTimeoutError, newOwner } from 'cachelock';
import { describe, expect, it } from 'vitest';

describe('formatDuration', () => {
  it.each([
    [0, '0ms'],
    [10, '10ms'],
    [999.2, '1s'],
    [1_000, '1s'],
    [1_001, '1.1s'],
    [2_501, '2.6s'],
    [9_900, '9.9s'],
    [9_901, '10s'],
    [29_776, '30s'],
    [119_000, '119s'],
    [200_000, '3m 20s'],
    [7_500_000, '2h 5m'],
    [-5, '0ms'],
    [Number.POSITIVE_INFINITY, 'forever'],
  ])('%s ms is %s', (ms, text) => {
    expect(formatDuration(ms)).toBe(text);
  });

  it('is what the errors print for the holder and the wait', () => {
    const holder = { owner: newOwner(), ttlMs: 29_776 };
    expect(new LockedError('k', holder).message).toMatch(/ for 30s more$/);
    expect(new LockTimeoutError('k', 2_500, holder).message).toMatch(
      / for 30s more after waiting 2\.5s$/,
    );
  });
});
