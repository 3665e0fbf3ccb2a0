import assert from 'node:assert/strict';
import { setTimeout as sleep, setImmediate as yieldTurn } from 'node:timers/promises';
import type { LockStore } from 'cachelock';
import type { CaseContext, ConformanceCase } from '../kit.js';
import { delayCalls, eventually } from '../kit.js';

// Two instances over one backend stand for two processes. A store that is exclusive only
// because one instance runs its operations one after another (a queue, a mutex, a transaction
// on one connection) passes every single-instance case; these cases catch it.

// Each round races on many keys at once, so that one wait for leases to expire buys many tries
// at a narrow interleaving.
const raceRounds = 4;
const raceKeys = 64;
const contendersPerInstance = 2;
const straddleRounds = 6;
const straddleKeys = 8;

/** The pause around each delayed call: long enough to interleave, short against the lease. */
const pauseFor = (leaseMs: number) => Math.max(1, Math.min(leaseMs / 20, 50));

interface TwoInstances {
  other: LockStore;
  /** The case's store and the other, each with random pauses around its calls. */
  left: LockStore;
  right: LockStore;
}

/** A second instance beside the case's store; `null` if either is not atomic. */
async function twoInstances(context: CaseContext): Promise<TwoInstances | null> {
  const other = await context.peer();
  // A store that says it is not atomic promises exclusion only within one instance.
  if (!context.store.atomic || !other.atomic) return null;
  const pause = pauseFor(context.leaseMs);
  return { other, left: delayCalls(context.store, pause), right: delayCalls(other, pause) };
}

export const instanceCases: ConformanceCase[] = [
  {
    name: 'two instances over one backend see and respect each other’s leases',
    async run({ store, key, owner, longMs, peer, sharedBackend }) {
      const other = await peer();
      const k = key('instances');
      const a = owner();
      const b = owner();
      assert.ok(await store.acquire(k, a, longMs));
      assert.equal(
        (await other.inspect(k))?.owner,
        a,
        sharedBackend
          ? 'a second instance does not see the lease the first took: makeStore() must return instances over one backend, as two processes would have (pass sharedBackend: false only for a store whose instances share nothing)'
          : 'one instance does not see its own lease',
      );
      assert.equal(await other.acquire(k, b, longMs), null, 'the other instance is refused');
      assert.equal(await other.extend(k, b, 1), false, 'a non-owner extends nothing there');
      assert.equal(await other.release(k, b), false, 'a non-owner releases nothing there');
      assert.equal(await store.release(k, a), true);
      assert.ok(await other.acquire(k, b, longMs), 'the other instance takes the released key');
      assert.equal((await store.inspect(k))?.owner, b);
      assert.equal(await store.acquire(k, a, longMs), null);
      assert.equal(await other.release(k, b), true);
    },
  },
  {
    name: `two instances racing with delays for free and expired keys: one winner on each of ${raceRounds * raceKeys} keys`,
    leases: raceRounds + 2,
    async run(context) {
      const instances = await twoInstances(context);
      if (instances === null) return;
      const { left, right } = instances;
      const { store, key, owner, leaseMs, longMs, patienceMs } = context;
      for (let round = 1; round <= raceRounds; round++) {
        const keys = Array.from({ length: raceKeys }, () => key('instance-race'));
        // In every other round each key holds an expired lease, which a store must clear and
        // take over in the same atomic step as it grants the key.
        const expired = round % 2 === 0;
        if (expired) {
          for (const k of keys) assert.ok(await store.acquire(k, owner(), leaseMs));
          await eventually('the leases expire', patienceMs, async () => {
            const leases = await Promise.all(keys.map((k) => store.inspect(k)));
            return leases.every((info) => info === null);
          });
        }
        await Promise.all(
          keys.map(async (k, i) => {
            const contenders = Array.from({ length: contendersPerInstance * 2 }, (_, j) => ({
              owner: owner(),
              via: j % 2 === 0 ? left : right,
            }));
            const results = await Promise.all(
              contenders.map((c) => c.via.acquire(k, c.owner, longMs)),
            );
            const winners = contenders.filter((_, j) => results[j] !== null);
            const what = `round ${round}, key ${i + 1} (${expired ? 'an expired lease' : 'a free key'})`;
            assert.ok(
              winners.length <= 1,
              `${what}: ${winners.length} acquirers on two instances were all granted the key`,
            );
            assert.equal(winners.length, 1, `${what}: nobody was granted the key`);
            const winner = winners[0]!;
            for (const via of [left, right]) {
              assert.equal((await via.inspect(k))?.owner, winner.owner, `${what}: the holder`);
            }
            assert.equal(await winner.via.release(k, winner.owner), true);
          }),
        );
      }
    },
  },
  {
    name: `a release or extend that straddles its lease's expiry never touches the next holder's lease (${straddleRounds * straddleKeys} tries on two instances)`,
    leases: straddleRounds * 2 + 2,
    async run(context) {
      const instances = await twoInstances(context);
      if (instances === null) return;
      const { other } = instances;
      const { store, key, owner, leaseMs, longMs, patienceMs } = context;
      const operations = {
        release: (k: string, o: string) => store.release(k, o),
        extend: (k: string, o: string) => store.extend(k, o, longMs),
        'release with keepMs': (k: string, o: string) => store.release(k, o, leaseMs),
      };
      type Operation = keyof typeof operations;
      // How long each call takes, so that it can be started with its lease's expiry inside it:
      // that is where a call that reads, compares and then writes touches the next holder.
      const durations = new Map<Operation, number>();
      for (const [name, call] of Object.entries(operations)) {
        const samples: number[] = [];
        for (let i = 0; i < 3; i++) {
          const k = key('straddle-timing');
          const o = owner();
          assert.ok(await store.acquire(k, o, longMs));
          const started = performance.now();
          assert.equal(await call(k, o), true, `the holder's ${name}`);
          samples.push(performance.now() - started);
          await store.release(k, o);
        }
        durations.set(name as Operation, samples.sort((x, y) => x - y)[1]!);
      }

      /** One try: the old holder's call straddles the expiry while the other instance takes. */
      const attempt = async (what: string, name: Operation) => {
        const k = key('straddle');
        const a = owner();
        const duration = durations.get(name)!;
        const sentAt = performance.now();
        assert.ok(await store.acquire(k, a, leaseMs));
        // The lease started somewhere within the acquire's round trip.
        const roundTrip = performance.now() - sentAt;
        const expiresAt = sentAt + leaseMs + roundTrip * Math.random();
        // Start the old holder's call so that the expiry falls somewhere inside it.
        const startAt = expiresAt - duration * (0.1 + 0.8 * Math.random()) - 1;
        const winners: string[] = [];
        let extended = false;
        // Two takers on the other instance, each its own owner as two waiters are, try as often
        // as they can from just before then.
        const taker = async () => {
          const b = owner();
          await sleep(Math.max(0, startAt - duration - performance.now()));
          const giveUpAt = expiresAt + leaseMs * 2 + duration * 4;
          while (winners.length === 0 && !extended && performance.now() < giveUpAt) {
            if (await other.acquire(k, b, longMs)) winners.push(b);
            else await yieldTurn();
          }
        };
        const old = (async () => {
          await sleep(Math.max(0, startAt - performance.now()));
          const result = await operations[name](k, a);
          if (name === 'extend' && result) extended = true;
          return result;
        })();
        await Promise.all([taker(), taker(), old]);
        assert.ok(winners.length <= 1, `${what}: both takers were granted the key`);
        if (name === 'extend' && (await old)) {
          assert.deepEqual(
            winners,
            [],
            `${what}: the extend succeeded, yet the other instance took the key`,
          );
          assert.equal((await other.inspect(k))?.owner, a, `${what}: the extended holder`);
          assert.equal(await store.release(k, a), true);
          return;
        }
        if (winners.length === 0) {
          const b = owner();
          await eventually(`${what}: the other instance takes the key`, patienceMs, () =>
            other.acquire(k, b, longMs).then((acquired) => acquired !== null && winners.push(b)),
          );
        }
        const b = winners[0]!;
        const info = await other.inspect(k);
        assert.equal(
          info?.owner,
          b,
          `${what}: the old holder's ${name}, which straddled its expiry, touched the next holder's lease`,
        );
        assert.ok(
          info.ttlMs > longMs / 2,
          `${what}: the next holder's lease was shortened to ${info.ttlMs} ms`,
        );
        assert.equal(await store.release(k, a), false, `${what}: the old holder releases nothing`);
        assert.equal(await other.release(k, b), true);
      };

      const names = Object.keys(operations) as Operation[];
      for (let round = 1; round <= straddleRounds; round++) {
        await Promise.all(
          Array.from({ length: straddleKeys }, (_, i) => {
            const name = names[(round + i) % names.length]!;
            return attempt(`round ${round}, key ${i + 1} (${name})`, name);
          }),
        );
      }
    },
  },
];
