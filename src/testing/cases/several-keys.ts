import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import type { LockStore, ManyKeys } from 'cachelock';
import type { CaseContext, ConformanceCase } from '../kit.js';
import { capability, delayCalls, eventually } from '../kit.js';

// The `keys` capability: several exclusive keys taken all or none in one step.

const racers = 6;
const racesEach = 4;
// A deadlock is a time in which nobody gets the keys. How long one turn takes depends on the
// server and the machine's load (on a single connection every retry waits its turn), so the
// check is for no progress at all rather than for a total time.
const stallMs = 10_000;

/** When some racer last took the keys; every racer stops once nobody has for `stallMs`. */
interface Progress {
  last: number;
}

/** Take `keys` for `holder`, retrying with a little jitter while anybody makes progress. */
async function takeAll(
  many: ManyKeys,
  keys: string[],
  holder: string,
  ttlMs: number,
  progress: Progress,
): Promise<(bigint | undefined)[]> {
  for (;;) {
    const got = await many.acquire(keys, holder, ttlMs);
    if (got !== null) {
      progress.last = performance.now();
      return got.fences;
    }
    if (performance.now() - progress.last > stallMs) {
      assert.fail(
        `${holder} could not take ${keys.join(', ')}, and nobody took them for ${stallMs} ms: a deadlock?`,
      );
    }
    await sleep(1 + Math.random() * 4);
  }
}

/** Who holds each key, by the exclusive lock's own `inspect`. */
async function owners(store: LockStore, keys: string[]): Promise<(string | undefined)[]> {
  return Promise.all(keys.map(async (k) => (await store.inspect(k))?.owner));
}

export const severalKeysCases: ConformanceCase[] = [
  {
    name: 'several keys: all or none, with a fence per key that the single-key calls see',
    needs: 'keys',
    async run({ store, key, owner, longMs }) {
      const many = capability(store, 'keys');
      const keys = [key('all-a'), key('all-b'), key('all-c')];
      const blocker = owner();
      assert.ok(await store.acquire(keys[1]!, blocker, longMs));
      const a = owner();
      assert.equal(await many.acquire(keys, a, longMs), null, 'refused while one key is held');
      assert.deepEqual(
        await owners(store, keys),
        [undefined, blocker, undefined],
        'a refused acquisition took part of the set',
      );
      assert.equal(await store.release(keys[1]!, blocker), true);
      const got = await many.acquire(keys, a, longMs);
      assert.ok(got, 'every key free: granted');
      assert.equal(got.fences.length, keys.length, 'one fence per key');
      assert.deepEqual(await owners(store, keys), [a, a, a], 'every key is held by the owner');
      for (const [i, k] of keys.entries()) {
        assert.equal((await store.inspect(k))?.fence, got.fences[i], `the fence of ${k}`);
      }
      const b = owner();
      assert.equal(await store.acquire(keys[2]!, b, longMs), null, 'a single key of the set');
      assert.equal(await many.acquire([keys[0]!, key('all-d')], b, longMs), null, 'an overlap');
      const again = await many.acquire(keys, a, longMs);
      assert.deepEqual(again?.fences, got.fences, 'the owner again: the same fences');
      assert.equal(await many.release(keys, a), true);
      assert.deepEqual(await owners(store, keys), [undefined, undefined, undefined]);
      const next = await many.acquire(keys, b, longMs);
      assert.ok(next);
      for (const [i, fence] of next.fences.entries()) {
        const before = got.fences[i];
        if (fence !== undefined && before !== undefined) {
          assert.ok(fence > before, `the fence of ${keys[i]} rose: ${before} then ${fence}`);
        }
      }
      assert.equal(await many.release(keys, b), true);
    },
  },
  {
    name: 'several keys: release and extend are owner-checked, true only if every key was held',
    needs: 'keys',
    leases: 2,
    async run({ store, key, owner, leaseMs, longMs, patienceMs }) {
      const many = capability(store, 'keys');
      const keys = [key('owned-a'), key('owned-b')];
      const a = owner();
      const b = owner();
      assert.ok(await many.acquire(keys, a, longMs));
      assert.equal(await many.release(keys, b), false, 'a non-owner releases nothing');
      assert.equal(await many.extend(keys, b, longMs), false, 'a non-owner extends nothing');
      assert.deepEqual(await owners(store, keys), [a, a], 'the owner still holds every key');
      assert.equal(await many.extend(keys, a, longMs), true);
      assert.equal(await many.release(keys, a), true);
      assert.equal(await many.release(keys, a), false, 'released twice');

      // One key runs out and another owner takes it; the first owner's calls leave it alone.
      assert.ok(await many.acquire(keys, a, leaseMs));
      await eventually('the leases expire', patienceMs, async () =>
        (await owners(store, keys)).every((o) => o === undefined),
      );
      assert.ok(await store.acquire(keys[1]!, b, longMs));
      assert.equal(await many.extend(keys, a, longMs), false, 'extend after one key was taken');
      assert.equal(await many.release(keys, a), false, 'release after one key was taken');
      const info = await store.inspect(keys[1]!);
      assert.equal(info?.owner, b, "the old owner's calls touched the new holder's key");
      assert.ok(info.ttlMs > longMs / 2, 'the new holder’s lease was shortened');
      assert.equal(await store.release(keys[1]!, b), true);
    },
  },
  {
    name: `several keys: ${racers} owners taking [a, b] and [b, a] never deadlock or overlap`,
    needs: 'keys',
    async run({ store, key, owner, longMs, peer }) {
      const other = await peer();
      const ab = [key('order-a'), key('order-b')];
      const ba = [ab[1]!, ab[0]!];
      const progress: Progress = { last: performance.now() };
      let inside = 0;
      let overlaps = 0;
      const racer = async (index: number) => {
        const via = index % 2 === 0 ? store : other;
        const many = capability(via, 'keys');
        const keys = index % 3 === 0 ? ab : ba;
        for (let i = 0; i < racesEach; i++) {
          const holder = owner();
          await takeAll(many, keys, holder, longMs, progress);
          inside++;
          if (inside > 1) overlaps++;
          assert.deepEqual(await owners(via, keys), [holder, holder], 'the winner holds both');
          await sleep(Math.random() * 2);
          inside--;
          assert.equal(await many.release(keys, holder), true, 'the winner releases both');
        }
      };
      await Promise.all(Array.from({ length: racers }, (_, i) => racer(i)));
      assert.equal(overlaps, 0, `${overlaps} times two owners held the same keys at once`);
    },
  },
  {
    name: 'several keys: two instances racing with delays on overlapping sets grant each key once',
    needs: 'keys',
    async run(context: CaseContext) {
      const { store, key, owner, longMs, leaseMs } = context;
      const other = await context.peer();
      const pause = Math.max(1, Math.min(leaseMs / 20, 50));
      const left = capability(delayCalls(store, pause), 'keys');
      const right = capability(delayCalls(other, pause), 'keys');
      for (let round = 0; round < 8; round++) {
        const [a, b, c] = [key('overlap-a'), key('overlap-b'), key('overlap-c')];
        const tries = [
          { keys: [a, b], via: left, owner: owner() },
          { keys: [b, c], via: right, owner: owner() },
          { keys: [c, a], via: left, owner: owner() },
          { keys: [a, b, c], via: right, owner: owner() },
        ];
        const results = await Promise.all(tries.map((t) => t.via.acquire(t.keys, t.owner, longMs)));
        const won = tries.filter((_, i) => results[i] !== null);
        // Every pair of these sets overlaps: at most one can hold at a time.
        assert.equal(won.length, 1, `round ${round + 1}: ${won.length} overlapping sets granted`);
        const winner = won[0]!;
        assert.deepEqual(
          await owners(store, winner.keys),
          winner.keys.map(() => winner.owner),
          'the winner holds every key of its set',
        );
        const others = [a, b, c].filter((k) => !winner.keys.includes(k));
        assert.deepEqual(
          await owners(store, others),
          others.map(() => undefined),
        );
        assert.equal(await winner.via.release(winner.keys, winner.owner), true);
      }
    },
  },
];
