import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import type { CaseContext, ConformanceCase } from '../kit.js';

const contenders = 20;
const workers = 6;
const sectionsPerWorker = 8;

/** Take `key` for `holder`, retrying with a little jitter until `deadline` (performance.now()). */
async function acquireWithRetry(
  { store, longMs }: CaseContext,
  key: string,
  holder: string,
  deadline: number,
): Promise<void> {
  for (;;) {
    if (await store.acquire(key, holder, longMs)) return;
    if (performance.now() > deadline) {
      assert.fail(`${holder} could not take the key before the deadline: is a release lost?`);
    }
    await sleep(1 + Math.random() * 4);
  }
}

export const contentionCases: ConformanceCase[] = [
  {
    name: `exactly one of ${contenders} concurrent acquirers wins`,
    async run({ store, key, owner, longMs }) {
      const k = key('race');
      for (let round = 0; round < 5; round++) {
        const owners = Array.from({ length: contenders }, () => owner());
        const results = await Promise.all(owners.map((o) => store.acquire(k, o, longMs)));
        const winners = owners.filter((_, i) => results[i] !== null);
        assert.equal(winners.length, 1, `round ${round + 1}: ${winners.length} winners`);
        const winner = winners[0]!;
        assert.equal((await store.inspect(k))?.owner, winner);
        const losers = owners.filter((o) => o !== winner);
        const released = await Promise.all(losers.map((o) => store.release(k, o)));
        assert.ok(
          released.every((r) => r === false),
          'losers cannot release',
        );
        assert.equal(
          (await store.inspect(k))?.owner,
          winner,
          "losers' releases left the winner alone",
        );
        assert.equal(await store.release(k, winner), true);
      }
    },
  },
  {
    name: `fuzz: ${workers} concurrent workers never overlap and lose no update`,
    async run(context) {
      const { store, key, owner } = context;
      const k = key('fuzz');
      const deadline = performance.now() + 20_000;
      let counter = 0;
      let inside = 0;
      let overlaps = 0;

      const worker = async () => {
        for (let section = 0; section < sectionsPerWorker; section++) {
          const holder = owner();
          await acquireWithRetry(context, k, holder, deadline);
          inside++;
          if (inside > 1) overlaps++;
          const read = counter;
          await sleep(Math.random() * 3);
          counter = read + 1;
          inside--;
          assert.equal(await store.release(k, holder), true, 'the holder releases its section');
        }
      };
      await Promise.all(Array.from({ length: workers }, worker));

      assert.equal(overlaps, 0, `${overlaps} sections ran while another held the key`);
      assert.equal(counter, workers * sectionsPerWorker, 'an update was lost');
      assert.equal(await store.inspect(k), null);
    },
  },
];
