import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import type { ConformanceCase } from '../kit.js';

export const ownershipCases: ConformanceCase[] = [
  {
    name: 'describes itself with a kind and whether it is atomic',
    async run({ store }) {
      assert.equal(typeof store.kind, 'string');
      assert.notEqual(store.kind, '', 'kind must name the store');
      // Only documented here: every store in cachelock is atomic within one process, and the
      // fuzz case holds any store to that.
      assert.equal(typeof store.atomic, 'boolean');
      for (const method of ['acquire', 'release', 'extend', 'inspect'] as const) {
        assert.equal(typeof store[method], 'function', `${method} must be a method`);
      }
    },
  },
  {
    name: 'acquires a free key',
    async run({ store, key, owner, longMs }) {
      const k = key('free');
      const a = owner();
      const acquired = await store.acquire(k, a, longMs);
      assert.ok(acquired, 'acquire of a free key must succeed');
      assert.equal(typeof acquired, 'object');
      if (acquired.fence !== undefined) assert.equal(typeof acquired.fence, 'bigint');
      assert.equal((await store.inspect(k))?.owner, a);
      assert.equal(await store.release(k, a), true);
    },
  },
  {
    name: 'refuses a held key to another owner',
    async run({ store, key, owner, longMs }) {
      const k = key('held');
      const a = owner();
      assert.ok(await store.acquire(k, a, longMs));
      for (let i = 0; i < 3; i++) {
        assert.equal(await store.acquire(k, owner(), longMs), null, 'a held key must be refused');
      }
      assert.equal(
        (await store.inspect(k))?.owner,
        a,
        'a refused acquire must not change the holder',
      );
      assert.equal(await store.release(k, a), true);
    },
  },
  {
    name: 'keeps keys independent, including keys that extend one another',
    async run({ store, key, owner, longMs }) {
      const base = key('independent');
      const keys = [base, `${base}:child`, `${base}*`, `${base}x`, base.slice(0, -1)];
      const owners = keys.map(() => owner());
      for (const [i, k] of keys.entries()) {
        assert.ok(
          await store.acquire(k, owners[i]!, longMs),
          `key ${i} must be free of the others`,
        );
      }
      assert.equal(await store.release(base, owners[0]!), true);
      assert.equal(await store.inspect(base), null);
      for (const [i, k] of keys.entries()) {
        if (i === 0) continue;
        assert.equal(
          (await store.inspect(k))?.owner,
          owners[i],
          `releasing one key freed key ${i}`,
        );
        assert.equal(await store.release(k, owners[i]!), true);
      }
    },
  },
  {
    name: 'releases and re-acquires a key many times',
    async run({ store, key, owner, longMs }) {
      const k = key('cycle');
      for (let i = 0; i < 50; i++) {
        const a = owner();
        assert.ok(
          await store.acquire(k, a, longMs),
          `acquire #${i + 1} after a release must succeed`,
        );
        assert.equal(await store.release(k, a), true, `release #${i + 1} by the holder`);
        if (i % 10 === 9) assert.equal(await store.inspect(k), null, 'a released key is free');
      }
    },
  },
  {
    name: 'release is true for the holder once, then false (idempotent)',
    async run({ store, key, owner, longMs }) {
      const k = key('release');
      const a = owner();
      assert.equal(await store.release(k, a), false, 'releasing a key never held is false');
      assert.ok(await store.acquire(k, a, longMs));
      assert.equal(await store.release(k, a), true, 'the holder releases');
      assert.equal(await store.release(k, a), false, 'a second release is false');
      assert.equal(await store.release(k, a), false, 'and stays false');
      assert.equal(await store.inspect(k), null);
      assert.equal(await store.extend(k, a, longMs), false, 'a released lease cannot be extended');
      assert.equal(await store.inspect(k), null, 'a refused extend must not revive the key');
    },
  },
  {
    name: 'a non-owner can neither release nor extend, and does not disturb the holder',
    async run({ store, key, owner, longMs }) {
      const k = key('non-owner');
      const a = owner();
      const b = owner();
      const acquired = await store.acquire(k, a, longMs);
      assert.ok(acquired);
      assert.equal(await store.release(k, b), false, 'a non-owner release is refused');
      assert.equal(
        await store.release(k, b, 1),
        false,
        'a non-owner release with keepMs is refused',
      );
      // A tiny lease: if the store applied it regardless of owner, the key would be gone below.
      assert.equal(await store.extend(k, b, 1), false, 'a non-owner extend is refused');
      await sleep(50);
      const info = await store.inspect(k);
      assert.equal(info?.owner, a, 'the holder keeps the key');
      assert.ok(info.ttlMs > longMs / 2, `the holder's lease is untouched (ttlMs ${info.ttlMs})`);
      assert.equal(info.fence, acquired.fence);
      assert.equal(await store.acquire(k, b, longMs), null);
      assert.equal(await store.extend(k, a, longMs), true, 'the holder still extends');
      assert.equal(await store.release(k, a), true, 'the holder still releases');
    },
  },
  {
    name: 'acquire by the current owner refreshes the lease and keeps the fence',
    async run({ store, key, owner, longMs }) {
      const k = key('reacquire');
      const a = owner();
      const first = await store.acquire(k, a, longMs / 3);
      assert.ok(first);
      const again = await store.acquire(k, a, longMs);
      assert.ok(again, 'the holder acquiring again must succeed');
      assert.equal(again.fence, first.fence, 'the fence is the same acquisition');
      const info = await store.inspect(k);
      assert.equal(info?.owner, a);
      assert.ok(
        info.ttlMs > (longMs * 2) / 3,
        `the lease is refreshed to the new ttl (ttlMs ${info.ttlMs}, ttl ${longMs})`,
      );
      assert.equal(await store.acquire(k, owner(), longMs), null);
      assert.equal(await store.release(k, a), true);
      assert.equal(await store.release(k, a), false, 'one release ends it');
    },
  },
];
