import assert from 'node:assert/strict';
import { RW_LIMIT, type SharedLeases, type SharedRequest } from 'cachelock';
import type { ConformanceCase } from '../kit.js';
import { capability, delayCalls } from '../kit.js';

// The `readersWriters` capability: readers weigh 1 and share the last writer's fence, a writer
// weighs the whole limit.

const readers = 8;

/** Requests as `ReadWriteLock` makes them. */
const read = (lineMs?: number): SharedRequest => ({
  limit: RW_LIMIT,
  weight: 1,
  shareFence: true,
  ...(lineMs === undefined ? {} : { lineMs }),
});
const write = (lineMs?: number): SharedRequest => ({
  limit: RW_LIMIT,
  weight: RW_LIMIT,
  ...(lineMs === undefined ? {} : { lineMs }),
});

async function count(leases: SharedLeases, key: string): Promise<number> {
  return (await leases.inspect(key)).length;
}

export const readersWritersCases: ConformanceCase[] = [
  {
    name: `readers and writers: ${readers} readers at once, or one writer`,
    needs: 'readersWriters',
    async run({ store, key, owner, longMs }) {
      const leases = capability(store, 'readersWriters');
      const k = key('rw');
      const reading = Array.from({ length: readers }, () => owner());
      const got = await Promise.all(reading.map((o) => leases.acquire(k, o, longMs, read())));
      assert.ok(
        got.every((r) => r !== null),
        'every reader is admitted together',
      );
      assert.equal(await count(leases, k), readers);
      const writer = owner();
      assert.equal(
        await leases.acquire(k, writer, longMs, write()),
        null,
        'a writer among readers',
      );
      for (const o of reading.slice(1)) assert.equal(await leases.release(k, o), true);
      assert.equal(await leases.acquire(k, writer, longMs, write()), null, 'one reader is left');
      assert.equal(await leases.release(k, reading[0]!), true);
      assert.ok(await leases.acquire(k, writer, longMs, write()), 'the writer alone');
      const writers = Array.from({ length: 4 }, () => owner());
      const others = await Promise.all(writers.map((o) => leases.acquire(k, o, longMs, write())));
      assert.ok(
        others.every((r) => r === null),
        'a second writer was admitted',
      );
      assert.equal(
        await leases.acquire(k, owner(), longMs, read()),
        null,
        'a reader with a writer',
      );
      assert.equal(await leases.release(k, writers[0]!), false, 'a non-holder releases nothing');
      assert.equal(await leases.extend(k, writers[0]!, longMs), false);
      assert.equal(await leases.release(k, writer), true);
      assert.deepEqual(await leases.inspect(k), []);
    },
  },
  {
    name: 'readers and writers: a waiting writer holds back new readers',
    needs: 'readersWriters',
    async run({ store, key, owner, longMs }) {
      const leases = capability(store, 'readersWriters');
      const k = key('rw-line');
      const [reader, writer, late, lateInLine] = [owner(), owner(), owner(), owner()];
      assert.ok(await leases.acquire(k, reader, longMs, read()));
      assert.equal(
        await leases.acquire(k, writer, longMs, write(longMs)),
        null,
        'the writer waits',
      );
      assert.equal(
        await leases.acquire(k, late, longMs, read()),
        null,
        'a new reader went ahead of a waiting writer',
      );
      assert.equal(await leases.acquire(k, lateInLine, longMs, read(longMs)), null);
      assert.equal(await leases.release(k, reader), true);
      assert.equal(
        await leases.acquire(k, lateInLine, longMs, read(longMs)),
        null,
        'a reader behind the writer in line went first',
      );
      assert.ok(await leases.acquire(k, writer, longMs, write(longMs)), 'the writer goes next');
      assert.equal(await leases.release(k, writer), true);
      assert.ok(await leases.acquire(k, lateInLine, longMs, read(longMs)), 'then the reader');
      assert.ok(await leases.acquire(k, late, longMs, read()), 'and readers join it');
      assert.equal(await leases.release(k, late), true);
      assert.equal(await leases.release(k, lateInLine), true);
    },
  },
  {
    name: "readers and writers: readers share the last writer's fence; each writer's is higher",
    needs: 'readersWriters',
    async run({ store, key, owner, longMs }) {
      const leases = capability(store, 'readersWriters');
      const k = key('rw-fence');
      const w1 = owner();
      const first = await leases.acquire(k, w1, longMs, write());
      assert.ok(first);
      assert.equal(await leases.release(k, w1), true);
      const [r1, r2] = [owner(), owner()];
      const reads = [
        await leases.acquire(k, r1, longMs, read()),
        await leases.acquire(k, r2, longMs, read()),
      ];
      for (const r of reads) {
        assert.ok(r);
        assert.equal(r.fence, first.fence, "a reader's fence is the last writer's");
      }
      await leases.release(k, r1);
      await leases.release(k, r2);
      const w2 = owner();
      const second = await leases.acquire(k, w2, longMs, write());
      assert.ok(second);
      if (first.fence !== undefined && second.fence !== undefined) {
        assert.ok(second.fence > first.fence, `the next writer's fence rose`);
      }
      assert.equal(await leases.release(k, w2), true);
      const r3 = owner();
      assert.equal((await leases.acquire(k, r3, longMs, read()))?.fence, second.fence);
      assert.equal(await leases.release(k, r3), true);
    },
  },
  {
    name: 'readers and writers: two instances racing with delays never admit a writer beside anyone',
    needs: 'readersWriters',
    async run({ store, key, owner, longMs, leaseMs, peer }) {
      const other = await peer();
      const pause = Math.max(1, Math.min(leaseMs / 20, 50));
      const left = capability(delayCalls(store, pause), 'readersWriters');
      const right = capability(delayCalls(other, pause), 'readersWriters');
      for (let round = 0; round < 8; round++) {
        const k = key('rw-race');
        const tries = Array.from({ length: 8 }, (_, i) => ({
          owner: owner(),
          writes: i % 3 === round % 3,
          via: i % 2 === 0 ? left : right,
        }));
        const results = await Promise.all(
          tries.map((t) => t.via.acquire(k, t.owner, longMs, t.writes ? write() : read())),
        );
        const won = tries.filter((_, i) => results[i] !== null);
        const writers = won.filter((t) => t.writes);
        assert.ok(won.length > 0, `round ${round + 1}: nobody was admitted`);
        assert.ok(
          writers.length === 0 || won.length === 1,
          `round ${round + 1}: a writer was admitted beside ${won.length - 1} others`,
        );
        for (const w of won) assert.equal(await w.via.release(k, w.owner), true);
      }
    },
  },
];
