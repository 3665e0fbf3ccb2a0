import { createHash, randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { type LockStore, newOwner } from 'cachelock';
import { memcachedStore } from 'cachelock/memcached';
import memjs from 'memjs';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { memcachedKeys } from '../../src/memcached/keys.js';
import { runFairness } from '../harness/fairness.js';
import { deadSocket } from '../support/dead-socket.js';
import { MemcachedServer } from '../support/memcached-server.js';
import { binaryOrSkip, builtOrSkip } from '../support/reachable.js';

const installed = await binaryOrSkip('memcached', 'memcached');
const run = randomBytes(4).toString('hex');
let counter = 0;
const key = (label: string) => `cachelock:mc-line:${run}:${label}:${++counter}`;

describe.runIf(installed)('memcached line of waiters', () => {
  let server: MemcachedServer;
  let client: memjs.Client;
  const stores: LockStore[] = [];
  const open = () => {
    const store = memcachedStore(server.url);
    stores.push(store);
    return store;
  };
  /** The places in `k`'s line as written in the cache: `<expiresAt> <owner>[\t<bell>]`. */
  const entries = async (k: string): Promise<string[]> => {
    const { value } = await client.get(memcachedKeys(k).line);
    return value === null ? [] : value.toString('utf8').split('\n');
  };
  /** The owners with a place in `k`'s line. */
  const places = async (k: string): Promise<string[]> =>
    (await entries(k)).map((entry) => entry.slice(entry.indexOf(' ') + 1).split('\t')[0]!);
  /** Memcached's count of item reads so far. */
  const reads = () => server.stat('cmd_get');
  /** A listener on `store` for `k`: `toldAfter(release)` is how long after it the listener heard. */
  const listenTo = (store: LockStore, k: string) => {
    let heard = 0;
    let heardAt = 0;
    const stop = store.onRelease!(k, () => {
      heard++;
      heardAt = performance.now();
    });
    const toldAfter = async (release: () => Promise<boolean>): Promise<number> => {
      const wasHeard = heard;
      expect(await release()).toBe(true);
      const released = performance.now();
      while (heard === wasHeard && performance.now() - released < 5_000) await sleep(0);
      expect(heard).toBeGreaterThan(wasHeard);
      return Math.max(0, heardAt - released);
    };
    return { stop, toldAfter };
  };

  beforeAll(async () => {
    server = await MemcachedServer.start();
    client = memjs.Client.create(server.url.replace('memcached://', ''));
  });
  afterAll(async () => {
    for (const store of stores) await store.close?.();
    client?.close();
    await server?.kill();
  });

  it('a freed key goes to the first live place: a newcomer and a later waiter are refused', async () => {
    const store = open();
    const k = key('order');
    const [holder, first, second, newcomer] = [newOwner(), newOwner(), newOwner(), newOwner()];
    expect(await store.acquire(k, holder, 10_000)).not.toBeNull();
    expect(await store.acquire(k, first, 10_000, { lineMs: 10_000 })).toBeNull();
    expect(await store.acquire(k, second, 10_000, { lineMs: 10_000 })).toBeNull();
    expect(await places(k)).toEqual([first, second]);
    expect(await store.release(k, holder)).toBe(true);
    expect(await store.acquire(k, newcomer, 10_000)).toBeNull();
    expect(await store.acquire(k, holder, 10_000)).toBeNull();
    expect(await store.acquire(k, second, 10_000, { lineMs: 10_000 })).toBeNull();
    // Refused while free: nothing of the newcomers' is left holding the key.
    expect(await store.inspect(k)).toBeNull();
    expect(await store.acquire(k, first, 10_000, { lineMs: 10_000 })).not.toBeNull();
    // The served waiter leaves the line without waiting for the reply.
    await vi.waitFor(async () => expect(await places(k)).toEqual([second]));
    expect(await store.release(k, first)).toBe(true);
    expect(await store.acquire(k, second, 10_000)).not.toBeNull();
    expect(await store.release(k, second)).toBe(true);
    // The last place served takes the line item with it.
    expect(await places(k)).toEqual([]);
    expect(await store.acquire(k, newcomer, 10_000)).not.toBeNull();
  });

  it('a waiter that leaves, or whose place runs out, no longer holds up the line', async () => {
    const store = open();
    const k = key('leave');
    const [holder, leaver, lapser, next] = [newOwner(), newOwner(), newOwner(), newOwner()];
    expect(await store.acquire(k, holder, 10_000)).not.toBeNull();
    expect(await store.acquire(k, leaver, 10_000, { lineMs: 10_000 })).toBeNull();
    expect(await store.acquire(k, lapser, 10_000, { lineMs: 300 })).toBeNull();
    expect(await store.acquire(k, next, 10_000, { lineMs: 10_000 })).toBeNull();
    expect(await store.release(k, holder)).toBe(true);
    expect(await store.release(k, leaver)).toBe(false);
    expect(await places(k)).toEqual([lapser, next]);
    expect(await store.acquire(k, next, 10_000, { lineMs: 10_000 })).toBeNull();
    await sleep(400);
    expect(await store.acquire(k, next, 10_000, { lineMs: 10_000 })).not.toBeNull();
    expect(await store.release(k, next)).toBe(true);
    expect(await places(k)).toEqual([]);
  });

  it('the first waiter in line hears a release by another store within a few polls', async () => {
    const [releaser, waiting] = [open(), open()];
    const k = key('wake');
    const [holder, waiter] = [newOwner(), newOwner()];
    let heard = 0;
    const stop = waiting.onRelease!(k, () => heard++);
    try {
      expect(await releaser.acquire(k, holder, 10_000)).not.toBeNull();
      expect(await waiting.acquire(k, waiter, 10_000, { lineMs: 10_000 })).toBeNull();
      await sleep(100);
      expect(heard).toBe(0);
      expect(await releaser.release(k, holder)).toBe(true);
      const started = performance.now();
      while (heard === 0 && performance.now() - started < 5_000) await sleep(1);
      expect(heard).toBeGreaterThan(0);
      expect(await waiting.acquire(k, waiter, 10_000, { lineMs: 10_000 })).not.toBeNull();
      expect(await waiting.release(k, waiter)).toBe(true);
    } finally {
      stop();
    }
  });

  it("a waiter's place carries its store's bell; a release by another store rings it, and then it polls seldom", async () => {
    const [releaser, waiting] = [open(), open()];
    const k = key('bell');
    const [holder, waiter] = [newOwner(), newOwner()];
    const { stop, toldAfter: told } = listenTo(waiting, k);
    try {
      const toldAfter: number[] = [];
      for (let round = 0; round < 5; round++) {
        expect(await releaser.acquire(k, holder, 10_000)).not.toBeNull();
        expect(await waiting.acquire(k, waiter, 10_000, { lineMs: 10_000 })).toBeNull();
        expect(await entries(k)).toEqual([
          expect.stringMatching(new RegExp(`^\\d+ ${waiter}\t\\d+$`)),
        ]);
        if (round === 4) {
          // Held for a second: once rung, the waiter's watch reads the key about every 50 ms
          // (two reads each), where it read back to back, then every few ms, before.
          const before = await reads();
          await sleep(1_000);
          expect((await reads()) - before).toBeLessThan(60);
        }
        toldAfter.push(await told(() => releaser.release(k, holder)));
        expect(await waiting.acquire(k, waiter, 10_000, { lineMs: 10_000 })).not.toBeNull();
        expect(await waiting.release(k, waiter)).toBe(true);
      }
      // Told by the ring, not by a poll that comes every 50 ms.
      toldAfter.sort((a, b) => a - b);
      expect(toldAfter[2]).toBeLessThan(15);
    } finally {
      stop();
    }
  });

  it('a holder on another machine is polled for at the fast pace, though rings woke the line before', async () => {
    const [local, waiting] = [open(), open()];
    // A store whose bells are in another folder rings no one here, as one on another machine.
    // Its bells are made, in the folder of the TMPDIR of the moment, when it first waits.
    const elsewhere = mkdtempSync(join(tmpdir(), 'cl-far-'));
    const tmp = process.env.TMPDIR;
    const far = open();
    const k = key('far');
    const farOwner = () => `far-host:1:${randomBytes(4).toString('hex')}:1`;
    const [setup, farWaiter] = [newOwner(), farOwner()];
    expect(await local.acquire(k, setup, 10_000)).not.toBeNull();
    process.env.TMPDIR = elsewhere;
    try {
      expect(await far.acquire(k, farWaiter, 10_000, { lineMs: 10_000 })).toBeNull();
    } finally {
      if (tmp === undefined) delete process.env.TMPDIR;
      else process.env.TMPDIR = tmp;
    }
    expect(await far.release(k, farWaiter)).toBe(false); // leaves the line
    expect(await local.release(k, setup)).toBe(true);
    const { stop, toldAfter: told } = listenTo(waiting, k);
    try {
      const toldAfter: number[] = [];
      for (let round = 0; round < 12; round++) {
        // Turn about: a holder on this machine, whose release rings, then one elsewhere.
        const near = round % 2 === 0;
        const holder = near ? newOwner() : farOwner();
        const by = near ? local : far;
        const waiter = newOwner();
        expect(await by.acquire(k, holder, 10_000)).not.toBeNull();
        expect(await waiting.acquire(k, waiter, 10_000, { lineMs: 10_000 })).toBeNull();
        // Holds of 110 to 190 ms: not in step with a poll every 50 ms.
        await sleep(110 + 7 * round);
        const after = await told(() => by.release(k, holder));
        if (!near) toldAfter.push(after);
        expect(await waiting.acquire(k, waiter, 10_000, { lineMs: 10_000 })).not.toBeNull();
        expect(await waiting.release(k, waiter)).toBe(true);
      }
      // A poll every 10 ms at most (past 100 ms into a hold), not every 50 ms.
      toldAfter.sort((a, b) => a - b);
      expect(toldAfter[Math.floor(toldAfter.length / 2)]).toBeLessThan(15);
    } finally {
      stop();
      await far.close?.();
      rmSync(elsewhere, { recursive: true, force: true });
    }
  });

  it('a holder whose place is still in line (its leave failed) takes it out as it releases, so the waiter it rings is first', async () => {
    const [first, second] = [open(), open()];
    const k = key('stale-place');
    const [holder, w1, w2] = [newOwner(), newOwner(), newOwner()];
    expect(await first.acquire(k, holder, 10_000)).not.toBeNull();
    expect(await first.acquire(k, w1, 10_000, { lineMs: 10_000 })).toBeNull();
    expect(await second.acquire(k, w2, 10_000, { lineMs: 10_000 })).toBeNull();
    expect(await first.release(k, holder)).toBe(true);
    expect(await first.acquire(k, w1, 10_000, { lineMs: 10_000 })).not.toBeNull();
    await vi.waitFor(async () => expect(await places(k)).toEqual([w2]));
    // As if w1's leave had failed: its place is back at the head of the line.
    const [w2Entry] = await entries(k);
    await client.set(memcachedKeys(k).line, `${Date.now() + 10_000} ${w1}\n${w2Entry}`, {
      expires: 30,
    });
    const { stop, toldAfter } = listenTo(second, k);
    try {
      await toldAfter(() => first.release(k, w1));
      expect(await places(k)).toEqual([w2]);
      expect(await second.acquire(k, w2, 10_000, { lineMs: 10_000 })).not.toBeNull();
      expect(await second.release(k, w2)).toBe(true);
    } finally {
      stop();
    }
  });

  it('a ring to a bell whose process died removes its socket file', async () => {
    const store = open();
    const k = key('dead-bell');
    const uid = process.getuid?.() ?? 'user';
    const shared = createHash('sha256')
      .update(`127.0.0.1:${server.port}`)
      .digest('hex')
      .slice(0, 16);
    const folder = join(tmpdir(), `cachelock-${uid}`, `memcached-${shared}`);
    // A waiter's store makes the folder (0700) when it first waits.
    const [holder, waiter] = [newOwner(), newOwner()];
    expect(await store.acquire(k, holder, 10_000)).not.toBeNull();
    expect(await store.acquire(k, waiter, 10_000, { lineMs: 10_000 })).toBeNull();
    expect(await store.release(k, holder)).toBe(true);
    expect(await store.acquire(k, waiter, 10_000, { lineMs: 10_000 })).not.toBeNull();
    expect(await store.release(k, waiter)).toBe(true);
    // A process that listened on a bell and was killed leaves its socket behind.
    const bell = 123_456_789;
    const path = join(folder, `${bell.toString(36)}.s`);
    await deadSocket(path);
    expect(existsSync(path)).toBe(true);
    const [next, dead] = [newOwner(), newOwner()];
    expect(await store.acquire(k, next, 10_000)).not.toBeNull();
    await client.set(memcachedKeys(k).line, `${Date.now() + 10_000} ${dead}\t${bell}`, {
      expires: 30,
    });
    expect(await store.release(k, next)).toBe(true);
    await vi.waitFor(() => expect(existsSync(path)).toBe(false));
  });

  it('an owner with a tab (which ends an owner in a place) takes no place and is still served', async () => {
    const store = open();
    const k = key('tab');
    const [holder, tabbed] = [newOwner(), `${newOwner()}\t42`];
    expect(await store.acquire(k, holder, 10_000)).not.toBeNull();
    expect(await store.acquire(k, tabbed, 10_000, { lineMs: 10_000 })).toBeNull();
    expect(await entries(k)).toEqual([]);
    expect(await store.release(k, holder)).toBe(true);
    expect(await store.acquire(k, tabbed, 10_000, { lineMs: 10_000 })).not.toBeNull();
    expect(await store.inspect(k)).toMatchObject({ owner: tabbed });
    expect(await store.release(k, tabbed)).toBe(true);
  });

  it('a place written by an earlier version (no bell) is read, kept and served as before', async () => {
    const store = open();
    const k = key('old-place');
    const [holder, old, waiter] = [newOwner(), newOwner(), newOwner()];
    expect(await store.acquire(k, holder, 10_000)).not.toBeNull();
    await client.set(memcachedKeys(k).line, `${Date.now() + 10_000} ${old}`, { expires: 30 });
    expect(await store.acquire(k, waiter, 10_000, { lineMs: 10_000 })).toBeNull();
    expect(await entries(k)).toEqual([
      expect.stringMatching(new RegExp(`^\\d+ ${old}$`)),
      expect.stringMatching(new RegExp(`^\\d+ ${waiter}\t\\d+$`)),
    ]);
    expect(await store.release(k, holder)).toBe(true);
    expect(await store.acquire(k, waiter, 10_000, { lineMs: 10_000 })).toBeNull();
    expect(await store.acquire(k, old, 10_000, { lineMs: 10_000 })).not.toBeNull();
    expect(await store.release(k, old)).toBe(true);
  });
});

describe.runIf(installed && builtOrSkip('memcached fairness', ['index.js', 'memcached/index.js']))(
  'memcached waiters across processes (built package)',
  () => {
    let server: MemcachedServer;
    beforeAll(async () => {
      server = await MemcachedServer.start();
    });
    afterAll(async () => {
      await server?.kill();
    });

    it('5 processes cycling on one key are served first come, first served: none is starved', async () => {
      const result = await runFairness({ cache: server.url });
      console.log('memcached fairness', result);
      expect(result.sections).toHaveLength(5);
      const mean = result.sections.reduce((a, b) => a + b, 0) / 5;
      for (const sections of result.sections) expect(sections).toBeGreaterThan(mean * 0.5);
      expect(result.worstWaitMs).toBeLessThan(2_000);
    }, 120_000);
  },
);
