import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import type { Handoff, LockStore } from 'cachelock';
import type { ConformanceCase } from '../kit.js';
import { eventually } from '../kit.js';

// Subscriptions such as Redis SUBSCRIBE or PostgreSQL LISTEN become active a little after
// onRelease returns; the case gives them this long before it releases.
const settleMs = 300;

export const wakeupCases: ConformanceCase[] = [
  {
    name: 'onRelease (where present) fires after a release a waiter waits for, and unsubscribing stops it',
    async run({ store, key, owner, longMs, patienceMs }) {
      if (typeof store.onRelease !== 'function') return; // the core polls such stores
      const k = key('wakeup');
      const heard: number[] = [];
      const witness: number[] = [];
      const stop = store.onRelease(k, () => heard.push(performance.now()));
      const stopWitness = store.onRelease(k, () => witness.push(performance.now()));
      assert.equal(typeof stop, 'function', 'onRelease returns its unsubscribe function');
      try {
        // A waiter tries first, as the core does (with lineMs), so that a store which only
        // announces releases that someone waits for has someone to tell.
        const a = owner();
        assert.ok(await store.acquire(k, a, longMs));
        await sleep(settleMs);
        const waiter = owner();
        assert.equal(await store.acquire(k, waiter, longMs, { lineMs: longMs }), null);
        // Calls before the release (a subscription announcing itself) are allowed, not counted.
        const before = heard.length;
        assert.equal(await store.release(k, a), true);
        await eventually('the listener hears the release', patienceMs, async () => {
          return heard.length > before;
        });
        // The waiter may have been handed the key; either way it now takes or leaves it.
        await store.release(k, waiter);

        stop();
        stop(); // unsubscribing twice is harmless
        await sleep(settleMs);
        const afterStop = heard.length;
        const witnessed = witness.length;
        const b = owner();
        assert.ok(await store.acquire(k, b, longMs));
        const next = owner();
        assert.equal(await store.acquire(k, next, longMs, { lineMs: longMs }), null);
        assert.equal(await store.release(k, b), true);
        await eventually(
          'a listener still subscribed hears the next release',
          patienceMs,
          async () => {
            return witness.length > witnessed;
          },
        );
        await sleep(settleMs);
        assert.equal(heard.length, afterStop, 'an unsubscribed listener was called again');
        await store.release(k, next);
      } finally {
        stop();
        stopWitness();
      }
    },
  },
  {
    name: 'replaysWakeups (where declared): a waiter that listens only after the release it waited for is told of it',
    async run({ store, key, owner, longMs, patienceMs }) {
      if (store.replaysWakeups !== true || typeof store.onRelease !== 'function') return;
      const k = key('replay');
      const a = owner();
      assert.ok(await store.acquire(k, a, longMs));
      const waiter = owner();
      assert.equal(await store.acquire(k, waiter, longMs, { lineMs: longMs }), null);
      assert.equal(await store.release(k, a), true);
      // Listening after the release: the core's waiter then sleeps until told, without a try.
      let heard = 0;
      const stop = store.onRelease(k, () => heard++);
      try {
        await eventually('the late listener is told of the release', patienceMs, async () => {
          return heard > 0;
        });
        // Handed the key (where the store hands it over) or free for it: the waiter takes it.
        assert.ok(await store.acquire(k, waiter, longMs, { lineMs: longMs }));
        assert.equal(await store.release(k, waiter), true);
      } finally {
        stop();
      }
    },
  },
  {
    name: 'handoffGrants (where declared): a hand-off is told to the waiter it names alone, as a grant with a higher fence',
    async run({ store, key, owner, peer, longMs, patienceMs }) {
      if (store.handoffGrants !== true || typeof store.onRelease !== 'function') return;
      const other = await peer();
      const k = key('handoff');
      const heard = new Map<string, Handoff[]>();
      const calls = new Map<string, number>();
      // Each waiter listens on the instance its try went through, as the core's waiters do.
      const listen = (on: LockStore, who: string) =>
        on.onRelease!(k, (handoff) => {
          calls.set(who, (calls.get(who) ?? 0) + 1);
          if (handoff?.owner === who) heard.set(who, [...(heard.get(who) ?? []), handoff]);
        });
      const first = owner();
      const second = owner();
      const stops = [listen(other, first), listen(store, second)];
      try {
        // Both subscriptions are active once each listener has been called: by a subscription
        // that says it is active, or by this release nobody waited for. A store that does
        // neither is given a while.
        const probe = owner();
        assert.ok(await store.acquire(k, probe, longMs));
        assert.equal(await store.release(k, probe), true);
        const subscribedBy = performance.now() + 10 * settleMs;
        while (
          (calls.get(first) === undefined || calls.get(second) === undefined) &&
          performance.now() < subscribedBy
        ) {
          await sleep(10);
        }
        const a = owner();
        const held = await store.acquire(k, a, longMs);
        assert.ok(held);
        assert.equal(await other.acquire(k, first, longMs, { lineMs: longMs }), null);
        assert.equal(await store.acquire(k, second, longMs, { lineMs: longMs }), null);
        assert.equal(await store.release(k, a), true);
        // A store may free the key rather than hand it on; where it hands it on, the first in
        // line holds it and is told so, with a fence above the last and a claim.
        let last = held.fence;
        for (const [who, on, next] of [
          [first, other, second],
          [second, store, undefined],
        ] as const) {
          if ((await store.inspect(k))?.owner !== who) break;
          const told = await eventually(`${who} is told it holds the key`, patienceMs, async () => {
            return heard.get(who)?.[0];
          });
          assert.ok(told.ttlMs !== undefined && told.ttlMs > 0, 'a grant carries its claim');
          if (last !== undefined) {
            assert.ok(
              told.fence !== undefined && told.fence > last,
              `the hand-off's fence ${told.fence} is above the last, ${last}`,
            );
          }
          last = told.fence;
          if (next !== undefined) {
            assert.equal(heard.get(next), undefined, `${next} was told it holds the key`);
          }
          assert.equal(await on.extend(k, who, longMs), true, 'the waiter handed the key holds it');
          assert.equal(await on.release(k, who), true);
        }
      } finally {
        for (const stop of stops) stop();
        await other.release(k, first).catch(() => undefined);
        await store.release(k, second).catch(() => undefined);
      }
    },
  },
  {
    name: "handoffGrants (where declared): a hand-off made before the waiter's last refusal is never told to it as a grant",
    leases: 4,
    async run({ store, key, owner, leaseMs, longMs, patienceMs }) {
      if (store.handoffGrants !== true || typeof store.onRelease !== 'function') return;
      const k = key('void-handoff');
      // Someone in this process listens on the key throughout, so that a store which tells late
      // listeners the recent wake-ups has the old hand-off at hand when the waiter listens.
      const stopWitness = store.onRelease(k, () => {});
      const waiter = owner();
      const b = owner();
      const told: Handoff[] = [];
      let stop: (() => void) | undefined;
      try {
        await sleep(settleMs);
        const a = owner();
        assert.ok(await store.acquire(k, a, longMs));
        // The waiter's claim lasts at most its try's ttl: two short leases.
        assert.equal(await store.acquire(k, waiter, 2 * leaseMs, { lineMs: longMs }), null);
        assert.equal(await store.release(k, a), true);
        // A store that freed the key instead, or a claim that ran out before this look, leaves
        // nothing to check.
        if ((await store.inspect(k))?.owner !== waiter) return;
        // The waiter, paused, never heard of the hand-off; its claim runs out and b takes the key.
        await eventually("the waiter's claim runs out and b takes the key", patienceMs, async () =>
          store.acquire(k, b, longMs).then((got) => got !== null),
        );
        // The waiter runs again: refused, then it listens. The old hand-off is void now.
        assert.equal(await store.acquire(k, waiter, longMs, { lineMs: longMs }), null);
        stop = store.onRelease(k, (handoff) => {
          if (handoff?.owner === waiter) told.push(handoff);
        });
        await sleep(settleMs);
        assert.deepEqual(told, [], 'a void hand-off was told to the waiter');
        assert.notEqual((await store.inspect(k))?.owner, waiter);
      } finally {
        stop?.();
        stopWitness();
        await store.release(k, b).catch(() => undefined);
        await store.release(k, waiter).catch(() => undefined);
      }
    },
  },
];
