import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
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
];
