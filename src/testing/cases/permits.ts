import assert from 'node:assert/strict';
import type { SharedLeases } from 'cachelock';
import type { ConformanceCase } from '../kit.js';
import { capability, delayCalls, eventually } from '../kit.js';

// The `permits` capability: weight 1 of `limit`, first come first served.

const limit = 3;

/** A permit request as `Semaphore` makes it. */
const permit = (permits: number, lineMs?: number) =>
  lineMs === undefined ? { limit: permits, weight: 1 } : { limit: permits, weight: 1, lineMs };

async function holders(leases: SharedLeases, key: string): Promise<string[]> {
  return (await leases.inspect(key)).map((info) => info.owner);
}

export const permitCases: ConformanceCase[] = [
  {
    name: `permits: never more than ${limit} live of ${limit * 3} concurrent acquisitions, each its own rising fence`,
    needs: 'permits',
    async run({ store, key, owner, longMs }) {
      const leases = capability(store, 'permits');
      const k = key('permits');
      const owners = Array.from({ length: limit * 3 }, () => owner());
      const results = await Promise.all(
        owners.map((o) => leases.acquire(k, o, longMs, permit(limit))),
      );
      const granted = owners.filter((_, i) => results[i] !== null);
      assert.equal(granted.length, limit, `${granted.length} of ${limit} permits granted`);
      assert.deepEqual(
        new Set(await holders(leases, k)),
        new Set(granted),
        'inspect lists the holders',
      );
      const fences = results.filter((r) => r !== null).map((r) => r.fence);
      const defined = fences.filter((f) => f !== undefined);
      assert.equal(new Set(defined).size, defined.length, 'two permits share a fence');
      const last = owner();
      assert.equal(await leases.acquire(k, last, longMs, permit(limit)), null, 'all taken');
      assert.equal(await leases.release(k, granted[0]!), true);
      const next = await leases.acquire(k, last, longMs, permit(limit));
      assert.ok(next, 'a released permit is free for the next');
      if (next.fence !== undefined) {
        for (const fence of defined) assert.ok(next.fence > fence, 'the next permit’s fence rose');
      }
      for (const o of [...granted.slice(1), last]) assert.equal(await leases.release(k, o), true);
      assert.deepEqual(await leases.inspect(k), [], 'nothing left once every permit is released');
    },
  },
  {
    name: 'permits: release and extend are owner-checked; a holder asking again keeps its permit',
    needs: 'permits',
    async run({ store, key, owner, longMs }) {
      const leases = capability(store, 'permits');
      const k = key('permit-owner');
      const a = owner();
      const b = owner();
      const got = await leases.acquire(k, a, longMs, permit(1));
      assert.ok(got);
      const again = await leases.acquire(k, a, longMs, permit(1));
      assert.ok(again, 'the holder asking again is granted');
      assert.equal(again.fence, got.fence, 'with the same fence');
      assert.equal((await leases.inspect(k)).length, 1, 'still one lease');
      assert.equal(await leases.release(k, b), false, 'a non-holder releases nothing');
      assert.equal(await leases.extend(k, b, longMs), false, 'a non-holder extends nothing');
      assert.deepEqual(await holders(leases, k), [a]);
      assert.equal(await leases.extend(k, a, longMs), true);
      assert.equal(await leases.release(k, a), true);
      assert.equal(await leases.release(k, a), false, 'released twice');
      assert.equal(await leases.extend(k, a, longMs), false, 'extended after release');
    },
  },
  {
    name: 'permits: waiters are served first come, first served; a try without a place does not jump the line',
    needs: 'permits',
    leases: 1,
    async run({ store, key, owner, longMs }) {
      const leases = capability(store, 'permits');
      const k = key('permit-line');
      const [holder, first, second, outsider] = [owner(), owner(), owner(), owner()];
      assert.ok(await leases.acquire(k, holder, longMs, permit(1)));
      assert.equal(await leases.acquire(k, first, longMs, permit(1, longMs)), null);
      assert.equal(await leases.acquire(k, second, longMs, permit(1, longMs)), null);
      assert.equal(await leases.release(k, holder), true);
      assert.equal(
        await leases.acquire(k, second, longMs, permit(1, longMs)),
        null,
        'the second in line was admitted before the first',
      );
      assert.equal(
        await leases.acquire(k, outsider, longMs, permit(1)),
        null,
        'an acquisition without a place jumped the line',
      );
      assert.equal(
        await leases.acquire(k, outsider, longMs, permit(5)),
        null,
        'an acquisition allowing more permits jumped the line',
      );
      assert.ok(await leases.acquire(k, first, longMs, permit(1, longMs)), 'the first in line');
      // Room for a second permit, but the line still comes first.
      assert.equal(await leases.acquire(k, outsider, longMs, permit(2)), null);
      assert.ok(await leases.acquire(k, second, longMs, permit(2, longMs)), 'the second fits');
      assert.equal(await leases.release(k, first), true);
      assert.equal(await leases.release(k, second), true);
      assert.ok(await leases.acquire(k, outsider, longMs, permit(1)), 'the line is empty again');
      assert.equal(await leases.release(k, outsider), true);
    },
  },
  {
    name: 'permits: an expired permit or a place in line not renewed frees the way',
    needs: 'permits',
    leases: 3,
    async run({ store, key, owner, leaseMs, longMs, patienceMs }) {
      const leases = capability(store, 'permits');
      const k = key('permit-expiry');
      const dead = owner();
      const gone = owner();
      const next = owner();
      assert.ok(await leases.acquire(k, dead, leaseMs, permit(1)));
      // A waiter that dies leaves its place: it never renews it.
      assert.equal(await leases.acquire(k, gone, longMs, permit(1, leaseMs)), null);
      const got = await eventually('an expired permit frees the way', patienceMs, () =>
        leases.acquire(k, next, longMs, permit(1)).then((r) => r ?? undefined),
      );
      assert.ok(got);
      assert.deepEqual(await holders(leases, k), [next], 'only the new holder is live');
      assert.equal(await leases.release(k, dead), false, 'the expired holder releases nothing');
      assert.equal(await leases.extend(k, dead, longMs), false, 'nor extends it back');
      assert.equal(await leases.release(k, next), true);
      assert.deepEqual(await leases.inspect(k), []);
    },
  },
  {
    name: 'permits: keepMs keeps a released permit until it runs out',
    needs: 'permits',
    leases: 2,
    async run({ store, key, owner, leaseMs, longMs, patienceMs }) {
      const leases = capability(store, 'permits');
      const k = key('permit-keep');
      const a = owner();
      assert.ok(await leases.acquire(k, a, longMs, permit(1)));
      assert.equal(await leases.release(k, a, leaseMs), true);
      assert.equal(await leases.acquire(k, owner(), longMs, permit(1)), null, 'kept for keepMs');
      const b = owner();
      await eventually('the kept permit runs out', patienceMs, () =>
        leases.acquire(k, b, longMs, permit(1)).then((r) => r !== null),
      );
      assert.equal(await leases.release(k, b), true);
    },
  },
  {
    name: `permits: two instances racing with delays grant exactly ${limit}`,
    needs: 'permits',
    async run({ store, key, owner, longMs, leaseMs, peer }) {
      const other = await peer();
      const pause = Math.max(1, Math.min(leaseMs / 20, 50));
      const left = capability(delayCalls(store, pause), 'permits');
      const right = capability(delayCalls(other, pause), 'permits');
      for (let round = 0; round < 6; round++) {
        const k = key('permit-race');
        const tries = Array.from({ length: limit * 4 }, (_, i) => ({
          owner: owner(),
          via: i % 2 === 0 ? left : right,
        }));
        const results = await Promise.all(
          tries.map((t) => t.via.acquire(k, t.owner, longMs, permit(limit))),
        );
        const won = tries.filter((_, i) => results[i] !== null);
        assert.equal(won.length, limit, `round ${round + 1}: ${won.length} permits granted`);
        assert.equal((await capability(other, 'permits').inspect(k)).length, limit);
        for (const w of won) assert.equal(await w.via.release(k, w.owner), true);
      }
    },
  },
];
