import assert from 'node:assert/strict';
import type { ConformanceCase } from '../kit.js';
import { eventually } from '../kit.js';

/** Fences from one key's acquisitions must be all absent or all bigints in strictly rising order. */
function assertRising(fences: (bigint | undefined)[], what: string): void {
  if (fences[0] === undefined) {
    assert.ok(
      fences.every((fence) => fence === undefined),
      `${what}: a store gives fences always or never`,
    );
    return;
  }
  for (const [i, fence] of fences.entries()) {
    assert.equal(typeof fence, 'bigint', `${what}: fence #${i + 1} must be a bigint`);
    if (i > 0) {
      assert.ok(
        fence! > fences[i - 1]!,
        `${what}: fence #${i + 1} (${fence}) must be greater than #${i} (${fences[i - 1]})`,
      );
    }
  }
}

export const fenceCases: ConformanceCase[] = [
  {
    name: 'fences strictly increase per key across releases, hold-at-least and expiries',
    leases: 8,
    async run({ store, key, owner, leaseMs, longMs, patienceMs }) {
      const k = key('fence');
      const other = key('fence-other');
      const fences: (bigint | undefined)[] = [];
      const otherFences: (bigint | undefined)[] = [];

      for (let i = 0; i < 5; i++) {
        const a = owner();
        const acquired = await store.acquire(k, a, longMs);
        assert.ok(acquired);
        fences.push(acquired.fence);
        assert.equal((await store.inspect(k))?.fence, acquired.fence);
        // Interleave a second key so that a per-store counter shared by keys is also exercised.
        const b = owner();
        const side = await store.acquire(other, b, longMs);
        assert.ok(side);
        otherFences.push(side.fence);
        assert.equal(await store.release(other, b), true);
        assert.equal(await store.release(k, a), true);
      }

      // After an expiry.
      const expiring = owner();
      const short = await store.acquire(k, expiring, leaseMs);
      assert.ok(short);
      fences.push(short.fence);
      const afterExpiry = owner();
      const taken = await eventually('the short lease expires', patienceMs, () =>
        store.acquire(k, afterExpiry, longMs).then((acquired) => acquired ?? undefined),
      );
      fences.push(taken.fence);

      // After a release that keeps the key for a while.
      assert.equal(await store.release(k, afterExpiry, leaseMs), true);
      const afterKeep = owner();
      const kept = await eventually('the kept key frees itself', patienceMs, () =>
        store.acquire(k, afterKeep, longMs).then((acquired) => acquired ?? undefined),
      );
      fences.push(kept.fence);
      assert.equal(await store.release(k, afterKeep), true);

      assertRising(fences, 'one key');
      assertRising(otherFences, 'another key');
      assert.equal(
        fences[0] === undefined,
        otherFences[0] === undefined,
        'a store gives fences for every key or for none',
      );
    },
  },
];
