import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import type { ConformanceCase } from '../kit.js';
import { eventually, promptly, stopwatch } from '../kit.js';

export const leaseCases: ConformanceCase[] = [
  {
    name: 'inspect is null for a free key and shows owner, lease and fence of a held one',
    async run({ store, key, owner, longMs }) {
      const k = key('inspect');
      assert.equal(await store.inspect(k), null, 'a key never taken is free');
      const a = owner();
      const acquired = await store.acquire(k, a, longMs);
      assert.ok(acquired);
      const info = await store.inspect(k);
      assert.ok(info, 'a held key must be reported');
      assert.equal(info.owner, a);
      assert.equal(typeof info.ttlMs, 'number');
      assert.ok(
        info.ttlMs > 0 && info.ttlMs <= longMs,
        `ttlMs must be in (0, ${longMs}], got ${info.ttlMs}`,
      );
      assert.ok(info.ttlMs > longMs / 2, `ttlMs ${info.ttlMs} is far below the ${longMs} ms lease`);
      assert.equal(info.fence, acquired.fence, 'inspect reports the fence acquire returned');
      assert.equal(await store.release(k, a), true);
      assert.equal(await store.inspect(k), null, 'a released key is free');
    },
  },
  {
    name: 'extend prolongs the lease past the original ttl',
    leases: 6,
    async run({ store, key, owner, leaseMs, longMs }) {
      // By the store's own report first: no waiting, no timing assumptions.
      const k = key('extend');
      const a = owner();
      assert.ok(await store.acquire(k, a, longMs / 3));
      assert.equal(await store.extend(k, a, longMs), true, 'the holder extends');
      const info = await store.inspect(k);
      assert.equal(info?.owner, a);
      assert.ok(
        info!.ttlMs > (longMs * 2) / 3 && info!.ttlMs <= longMs,
        `extend must set the lease to the new ttl (ttlMs ${info!.ttlMs}, ttl ${longMs})`,
      );
      assert.equal(await store.release(k, a), true);

      // Then by the clock: the key outlives its original short lease.
      await promptly(async () => {
        const short = key('extend-short');
        const b = owner();
        const clock = stopwatch();
        assert.ok(await store.acquire(short, b, leaseMs));
        const extended = await store.extend(short, b, leaseMs * 20);
        clock.within(leaseMs / 2, 'acquire and extend');
        assert.equal(extended, true, 'the holder extends within its lease');
        await sleep(leaseMs * 2.5);
        assert.equal(
          await store.acquire(short, owner(), leaseMs),
          null,
          'the extended lease still holds',
        );
        assert.equal((await store.inspect(short))?.owner, b);
        assert.equal(await store.release(short, b), true, 'the extended holder releases');
      });
    },
  },
  {
    name: 'a short lease expires and another owner can take the key',
    leases: 4,
    async run({ store, key, owner, leaseMs, longMs, patienceMs }) {
      let k = '';
      let a = '';
      await promptly(async () => {
        k = key('expiry');
        a = owner();
        const clock = stopwatch();
        assert.ok(await store.acquire(k, a, leaseMs));
        const refused = await store.acquire(k, owner(), leaseMs);
        clock.within(leaseMs / 2, 'acquire and a second acquire');
        assert.equal(refused, null, 'the lease holds before it runs out');
      });
      await eventually('the expired lease frees the key', patienceMs, async () => {
        return (await store.inspect(k)) === null;
      });
      assert.equal(await store.extend(k, a, longMs), false, 'an expired lease cannot be extended');
      assert.equal(await store.inspect(k), null, 'a refused extend must not revive the key');
      const b = owner();
      assert.ok(await store.acquire(k, b, longMs), 'another owner takes the expired key');
      assert.equal(await store.release(k, a), false, 'the old owner cannot release');
      assert.equal(await store.release(k, a, 1), false, 'nor release with keepMs');
      assert.equal(await store.extend(k, a, 1), false, 'nor extend');
      await sleep(50);
      const info = await store.inspect(k);
      assert.equal(info?.owner, b, 'the new holder keeps the key');
      assert.ok(
        info!.ttlMs > longMs / 2,
        `the new holder's lease is untouched (ttlMs ${info!.ttlMs})`,
      );
      assert.equal(await store.release(k, b), true);
    },
  },
  {
    name: 'the old owner cannot extend or release an expired lease it never touched since',
    leases: 4,
    async run({ store, key, owner, leaseMs, longMs, patienceMs }) {
      // Stores that clean up lazily might revive a lease whose first touch after expiry is the
      // old owner's own extend; a sentinel taken just after tells when the leases have run out.
      const forExtend = key('expired-extend');
      const forRelease = key('expired-release');
      const sentinel = key('expired-sentinel');
      const a = owner();
      const b = owner();
      assert.ok(await store.acquire(forExtend, a, leaseMs));
      assert.ok(await store.acquire(forRelease, b, leaseMs));
      assert.ok(await store.acquire(sentinel, owner(), leaseMs));
      await eventually('the sentinel lease expires', patienceMs, async () => {
        return (await store.inspect(sentinel)) === null;
      });
      assert.equal(
        await store.extend(forExtend, a, longMs),
        false,
        'an expired lease cannot be extended',
      );
      assert.equal(await store.release(forRelease, b), false, 'an expired lease is not released');
      assert.equal(
        await store.inspect(forExtend),
        null,
        'a refused extend must not revive the key',
      );
      assert.equal(await store.inspect(forRelease), null);
    },
  },
  {
    name: 'an expired lease can be taken over without waiting for a release',
    leases: 4,
    async run({ store, key, owner, leaseMs, longMs, patienceMs }) {
      // Some stores only notice expiry when asked to acquire; poll with acquire alone.
      const k = key('takeover');
      const a = owner();
      assert.ok(await store.acquire(k, a, leaseMs));
      const b = owner();
      await eventually('another owner acquires the expired key', patienceMs, () =>
        store.acquire(k, b, longMs).then((acquired) => acquired !== null),
      );
      assert.equal((await store.inspect(k))?.owner, b);
      assert.equal(await store.release(k, a), false);
      assert.equal(await store.release(k, b), true);
    },
  },
  {
    name: 'release with keepMs holds the key for about keepMs, then frees it',
    leases: 4,
    async run({ store, key, owner, leaseMs, longMs, patienceMs }) {
      let k = '';
      let firstFence: bigint | undefined;
      await promptly(async () => {
        k = key('keep');
        const a = owner();
        const acquired = await store.acquire(k, a, longMs);
        assert.ok(acquired);
        firstFence = acquired.fence;
        const clock = stopwatch();
        assert.equal(await store.release(k, a, leaseMs), true, 'release with keepMs is true');
        const refused = await store.acquire(k, owner(), longMs);
        const info = await store.inspect(k);
        clock.within(leaseMs / 2, 'release, acquire and inspect');
        assert.equal(refused, null, 'the key stays taken for keepMs');
        assert.ok(info, 'the key is still reported while kept');
        assert.ok(
          info.ttlMs > 0 && info.ttlMs <= leaseMs,
          `the lease is shortened to keepMs (ttlMs ${info.ttlMs}, keepMs ${leaseMs})`,
        );
      });
      const b = owner();
      const next = await eventually('the kept key frees itself', patienceMs, () =>
        store.acquire(k, b, longMs).then((acquired) => acquired ?? undefined),
      );
      if (firstFence !== undefined) {
        assert.ok(next.fence! > firstFence, 'the next holder gets a greater fence');
      }
      assert.equal(await store.release(k, b), true);
    },
  },
];
