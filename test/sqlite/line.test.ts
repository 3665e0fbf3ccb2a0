import { spawnSync } from 'node:child_process';
import {
  chmodSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  rmSync,
  statSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import Database from 'better-sqlite3';
import { type Handoff, Lock, type LockStore, newOwner } from 'cachelock';
import { sqliteStore } from 'cachelock/sqlite';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { countingTries } from '../support/counted.js';
import { twoTriesInTurn } from '../support/joined-behind.js';

let dir: string;
const stores: LockStore[] = [];
let counter = 0;

beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'cachelock-sqlite-line-'));
});

afterAll(async () => {
  for (const store of stores) await store.close?.();
  rmSync(dir, { recursive: true, force: true });
});

function freshPath(): string {
  return join(dir, `line-${++counter}.sqlite`);
}

function open(path: string): LockStore {
  const store = sqliteStore(path, { driver: 'better-sqlite3' });
  stores.push(store);
  return store;
}

/** The places in the exclusive lock's line, read straight from the file. */
function places(path: string): { key: string; owner: string }[] {
  const db = new Database(path, { readonly: true });
  try {
    return db
      .prepare(`SELECT key, owner FROM cachelock_locks_shared WHERE space = 'lock' ORDER BY seq`)
      .all() as { key: string; owner: string }[];
  } finally {
    db.close();
  }
}

async function until(what: string, check: () => boolean, withinMs = 5_000): Promise<void> {
  const started = performance.now();
  while (!check()) {
    if (performance.now() - started > withinMs)
      throw new Error(`${what}: not within ${withinMs} ms`);
    await sleep(5);
  }
}

describe('sqlite line of waiters for the exclusive lock', () => {
  it('a freed key goes to the first live place: a newcomer and a later waiter are refused', async () => {
    const path = freshPath();
    const store = open(path);
    const [holder, first, second, newcomer] = [newOwner(), newOwner(), newOwner(), newOwner()];
    expect(await store.acquire('k', holder, 10_000)).not.toBeNull();
    expect(await store.acquire('k', first, 10_000, { lineMs: 10_000 })).toBeNull();
    expect(await store.acquire('k', second, 10_000, { lineMs: 10_000 })).toBeNull();
    expect(places(path).map((p) => p.owner)).toEqual([first, second]);
    expect(await store.release('k', holder)).toBe(true);
    // The releasing holder coming straight back, and anyone else, wait behind the line.
    expect(await store.acquire('k', newcomer, 10_000)).toBeNull();
    expect(await store.acquire('k', holder, 10_000)).toBeNull();
    expect(await store.acquire('k', second, 10_000, { lineMs: 10_000 })).toBeNull();
    expect(await store.acquire('k', first, 10_000, { lineMs: 10_000 })).not.toBeNull();
    expect(places(path).map((p) => p.owner)).toEqual([second]);
    expect(await store.release('k', first)).toBe(true);
    expect(await store.acquire('k', second, 10_000)).not.toBeNull();
    expect(await store.release('k', second)).toBe(true);
    // Served places leave nothing behind.
    expect(places(path)).toEqual([]);
    expect(await store.acquire('k', newcomer, 10_000)).not.toBeNull();
  });

  it('a waiter that leaves, or whose place runs out, no longer holds up the line', async () => {
    const path = freshPath();
    const store = open(path);
    const [holder, leaver, lapser, next] = [newOwner(), newOwner(), newOwner(), newOwner()];
    expect(await store.acquire('k', holder, 10_000)).not.toBeNull();
    expect(await store.acquire('k', leaver, 10_000, { lineMs: 10_000 })).toBeNull();
    expect(await store.acquire('k', lapser, 10_000, { lineMs: 300 })).toBeNull();
    expect(await store.acquire('k', next, 10_000, { lineMs: 10_000 })).toBeNull();
    // Leaving is a release by an owner that does not hold the key.
    expect(await store.release('k', leaver)).toBe(false);
    await sleep(400);
    // The release hands the key over to the first live place, past the one that ran out.
    expect(await store.release('k', holder)).toBe(true);
    expect((await store.inspect('k'))?.owner).toBe(next);
    expect(await store.acquire('k', next, 10_000, { lineMs: 10_000 })).not.toBeNull();
    expect(await store.release('k', next)).toBe(true);
    expect(places(path)).toEqual([]);
    expect(await store.inspect('k')).toBeNull();
  });

  it('a waiter handed the key that leaves hands it on to the next live place', async () => {
    const path = freshPath();
    const store = open(path);
    const [holder, first, second] = [newOwner(), newOwner(), newOwner()];
    expect(await store.acquire('k', holder, 10_000)).not.toBeNull();
    expect(await store.acquire('k', first, 10_000, { lineMs: 10_000 })).toBeNull();
    expect(await store.acquire('k', second, 10_000, { lineMs: 10_000 })).toBeNull();
    expect(await store.release('k', holder)).toBe(true);
    expect((await store.inspect('k'))?.owner).toBe(first);
    // A waiter giving up releases as its owner: here it held the key from the hand-off.
    expect(await store.release('k', first)).toBe(true);
    expect((await store.inspect('k'))?.owner).toBe(second);
    expect(places(path)).toEqual([]);
  });

  it('a release hands the key over in the same step: a lease for the claim, a higher fence, and a ring that says so', async () => {
    const path = freshPath();
    const [releaser, waiting] = [open(path), open(path)];
    await releaser.inspect('k');
    const heard: (Handoff | undefined)[] = [];
    const stop = waiting.onRelease!('k', (handoff) => heard.push(handoff));
    try {
      const [holder, waiter] = [newOwner(), newOwner()];
      const taken = await releaser.acquire('k', holder, 10_000);
      expect(await waiting.acquire('k', waiter, 10_000, { lineMs: 2_000 })).toBeNull();
      expect(await releaser.release('k', holder)).toBe(true);
      // Held by the waiter before its store has heard anything: no one else can take it.
      const info = await releaser.inspect('k');
      expect(info?.owner).toBe(waiter);
      expect(info!.fence!).toBeGreaterThan(taken!.fence!);
      expect(info!.ttlMs).toBeLessThanOrEqual(2_000);
      expect(await releaser.acquire('k', newOwner(), 10_000)).toBeNull();
      await until('the waiter hears the hand-off', () => heard.length > 0);
      expect(heard).toEqual([{ owner: waiter, fence: info!.fence, ttlMs: 2_000 }]);
      // Asked again, the waiter holds the same acquisition.
      expect((await waiting.acquire('k', waiter, 10_000, { lineMs: 2_000 }))?.fence).toBe(
        info!.fence,
      );
      expect(await waiting.release('k', waiter)).toBe(true);
    } finally {
      stop();
    }
  });

  it('a hand-off told after its waiter was refused again is void; one made after that refusal is not', async () => {
    const path = freshPath();
    const [releaser, waiting] = [open(path), open(path)];
    await releaser.inspect('k');
    await waiting.inspect('k');
    const [holder, waiter, other] = [newOwner(), newOwner(), newOwner()];
    const first: (Handoff | undefined)[] = [];
    const stopFirst = waiting.onRelease!('k', (handoff) => first.push(handoff));
    expect(await releaser.acquire('k', holder, 10_000)).not.toBeNull();
    expect(await waiting.acquire('k', waiter, 10_000, { lineMs: 150 })).toBeNull();
    const released = performance.now();
    expect(await releaser.release('k', holder)).toBe(true);
    await until('the hand-off rings', () => first.length > 0);
    expect(first[0]?.owner).toBe(waiter);
    stopFirst();
    await sleep(200);
    // The claim ran out unused; another took the key, and the waiter was refused again.
    expect(await releaser.acquire('k', other, 10_000)).not.toBeNull();
    expect(await waiting.acquire('k', waiter, 10_000, { lineMs: 2_000 })).toBeNull();
    // A new listener is told the key's last rings of the past second, the old hand-off among
    // them: as a ring that waited in a paused process would come.
    const heard: (Handoff | undefined)[] = [];
    const stop = waiting.onRelease!('k', (handoff) => heard.push(handoff));
    try {
      await sleep(50);
      expect(performance.now() - released).toBeLessThan(900);
      // Told, it would say the waiter holds a key another holds.
      expect(heard).toEqual([]);
      expect(await releaser.release('k', other)).toBe(true);
      await until('the waiter hears the new hand-off', () => heard.length > 0);
      expect(heard).toEqual([
        { owner: waiter, fence: (await releaser.inspect('k'))?.fence, ttlMs: 2_000 },
      ]);
    } finally {
      stop();
    }
    expect(await waiting.release('k', waiter)).toBe(true);
  });

  it('several keys taken together wait for each free key whose line has someone else first', async () => {
    const path = freshPath();
    const store = open(path);
    const many = store.capabilities!.keys!;
    const [holder, waiter, pair] = [newOwner(), newOwner(), newOwner()];
    expect(await store.acquire('b', holder, 10_000)).not.toBeNull();
    expect(await store.acquire('b', waiter, 10_000, { lineMs: 10_000 })).toBeNull();
    expect(await store.release('b', holder)).toBe(true);
    expect(await many.acquire(['a', 'b'], pair, 10_000)).toBeNull();
    expect(await store.acquire('b', waiter, 10_000, { lineMs: 10_000 })).not.toBeNull();
    expect(await store.release('b', waiter)).toBe(true);
    expect(await many.acquire(['a', 'b'], pair, 10_000)).not.toBeNull();
  });

  it('a release of several keys by a waiter in one of their lines leaves that line, as one key does', async () => {
    const path = freshPath();
    const store = open(path);
    const many = store.capabilities!.keys!;
    const [holder, leaver, next] = [newOwner(), newOwner(), newOwner()];
    expect(await store.acquire('b', holder, 10_000)).not.toBeNull();
    // A set's waiter joins the line of the key it was refused (one key at a time, with lineMs).
    expect(await store.acquire('b', leaver, 10_000, { lineMs: 10_000 })).toBeNull();
    expect(await store.acquire('b', next, 10_000, { lineMs: 10_000 })).toBeNull();
    // The set gives up (or leaves the line until its turn in its process): it held nothing.
    expect(await many.release(['a', 'b'], leaver)).toBe(false);
    expect(places(path).map((p) => p.owner)).toEqual([next]);
    expect(await store.release('b', holder)).toBe(true);
    expect((await store.inspect('b'))?.owner).toBe(next);
    expect(await store.acquire('b', next, 10_000, { lineMs: 10_000 })).not.toBeNull();
    expect(await store.release('b', next)).toBe(true);
    expect(places(path)).toEqual([]);
  });

  it('a holder whose lease ran out unseen and that joined the line since does not hand the key to itself', async () => {
    const path = freshPath();
    const store = open(path);
    const [x, y] = [newOwner(), newOwner()];
    expect(await store.acquire('k', x, 100)).not.toBeNull();
    expect(await store.acquire('k', y, 10_000, { lineMs: 200 })).toBeNull();
    await sleep(120);
    // x's lease ran out and y is first in line: x joins behind it.
    expect(await store.acquire('k', x, 10_000, { lineMs: 10_000 })).toBeNull();
    await sleep(150);
    // y's place ran out; x gives up, as the owner of the lease it no longer holds.
    expect(await store.release('k', x)).toBe(false);
    expect(await store.inspect('k')).toBeNull();
    expect(places(path).map((p) => p.owner)).not.toContain(x);
  });

  it('a ring that comes before its waiter listens is told to it, also where others listen on the key', async () => {
    const path = freshPath();
    const [releaser, waiting] = [open(path), open(path)];
    await releaser.inspect('k');
    await waiting.inspect('k');
    const stopOther = waiting.onRelease!('k', () => {});
    try {
      const [holder, waiter] = [newOwner(), newOwner()];
      expect(await releaser.acquire('k', holder, 60_000)).not.toBeNull();
      expect(await waiting.acquire('k', waiter, 10_000, { lineMs: 3_000 })).toBeNull();
      expect(await releaser.release('k', holder)).toBe(true);
      await sleep(50);
      const told: (Handoff | undefined)[] = [];
      const stop = waiting.onRelease!('k', (handoff) => told.push(handoff));
      await until('the waiter is told', () => told.length > 0);
      stop();
      expect(told[0]).toMatchObject({ owner: waiter, ttlMs: 3_000 });
    } finally {
      stopOther();
    }
  });

  it('a lock waiting in another process holds on the hand-off, without a try of its own', async () => {
    const path = freshPath();
    const [releaser, waiting] = [open(path), open(path)];
    // The waiting store, its tries counted.
    const { store: counted, tries } = countingTries(waiting);
    const holder = await Lock.acquire('k', { cache: releaser, ttl: '10s' });
    const waiter = new Lock('k', { cache: counted, ttl: '10s', wait: '5s' });
    const acquired = waiter.acquire();
    await until('the waiter is in line', () => places(path).length === 1);
    await holder.release();
    await acquired;
    expect(tries()).toBe(1);
    expect(waiter.fence!).toBeGreaterThan(holder.fence!);
    expect((await Lock.inspect('k', { cache: releaser }))?.fence).toBe(waiter.fence);
    await waiter.release();
  });

  it('a waiter refused by a lease that runs out unreleased takes the key as it runs out', async () => {
    const path = freshPath();
    const [gone, waiting] = [open(path), open(path)];
    // The waiting store's bell listens already, so the waiter's first place carries it.
    await waiting.inspect('k');
    waiting.onRelease!('another key', () => {})();
    await sleep(20);
    // A holder that died: its lease runs out after 150 ms, and nothing rings.
    expect(await gone.acquire('k', newOwner(), 150)).not.toBeNull();
    const started = performance.now();
    const lock = await Lock.acquire('k', { cache: waiting, ttl: '10s', wait: '5s', prefix: '' });
    expect(performance.now() - started).toBeGreaterThan(100);
    expect(performance.now() - started).toBeLessThan(400);
    await lock.release();
  });

  it('a release of several keys hands each freed key to the first live place in its line', async () => {
    const path = freshPath();
    const store = open(path);
    const many = store.capabilities!.keys!;
    const [pair, waiter] = [newOwner(), newOwner()];
    expect(await many.acquire(['a', 'b'], pair, 10_000)).not.toBeNull();
    expect(await store.acquire('b', waiter, 10_000, { lineMs: 10_000 })).toBeNull();
    expect(await many.release(['a', 'b'], pair)).toBe(true);
    expect((await store.inspect('b'))?.owner).toBe(waiter);
    expect(await store.inspect('a')).toBeNull();
    expect(places(path)).toEqual([]);
  });

  it("a release rings the first waiter's store on the same file, and only that one", async () => {
    const path = freshPath();
    const [releaser, firstStore, secondStore] = [open(path), open(path), open(path)];
    for (const store of [releaser, firstStore, secondStore]) await store.inspect('k');
    let firstHeard = 0;
    let secondHeard = 0;
    const stopFirst = firstStore.onRelease!('k', () => firstHeard++);
    const stopSecond = secondStore.onRelease!('k', () => secondHeard++);
    try {
      const [holder, first, second] = [newOwner(), newOwner(), newOwner()];
      expect(await releaser.acquire('k', holder, 10_000)).not.toBeNull();
      // A place records its store's bell once the bell listens (at once for a Unix socket).
      await sleep(50);
      expect(await firstStore.acquire('k', first, 10_000, { lineMs: 10_000 })).toBeNull();
      expect(await secondStore.acquire('k', second, 10_000, { lineMs: 10_000 })).toBeNull();
      expect(await releaser.release('k', holder)).toBe(true);
      await until('the first waiter hears the release', () => firstHeard > 0);
      await sleep(100);
      expect(secondHeard).toBe(0);
      expect(await firstStore.acquire('k', first, 10_000, { lineMs: 10_000 })).not.toBeNull();
      expect(await firstStore.release('k', first)).toBe(true);
      await until('the next waiter hears the next release', () => secondHeard > 0);
    } finally {
      stopFirst();
      stopSecond();
    }
  });

  it('a waiter whose process is gone does not break a release, and its place runs out', async () => {
    const path = freshPath();
    const releaser = open(path);
    const gone = open(path);
    await releaser.inspect('k');
    await gone.inspect('k');
    gone.onRelease!('k', () => {});
    await sleep(50);
    const [holder, dead, next] = [newOwner(), newOwner(), newOwner()];
    expect(await releaser.acquire('k', holder, 10_000)).not.toBeNull();
    expect(await gone.acquire('k', dead, 10_000, { lineMs: 500 })).toBeNull();
    expect(await releaser.acquire('k', next, 10_000, { lineMs: 10_000 })).toBeNull();
    // Its bell stops answering, as when its process dies.
    await gone.close?.();
    expect(await releaser.release('k', holder)).toBe(true);
    expect(await releaser.acquire('k', next, 10_000, { lineMs: 10_000 })).toBeNull();
    await sleep(600);
    expect(await releaser.acquire('k', next, 10_000, { lineMs: 10_000 })).not.toBeNull();
    expect(await releaser.release('k', next)).toBe(true);
  });

  it('a bell folder that others could reach is not used: no socket, waiters poll', async () => {
    const unsafe = join(dir, 'unsafe-tmp');
    const folder = join(unsafe, `cachelock-${process.getuid?.() ?? 'user'}`);
    mkdirSync(folder, { recursive: true });
    chmodSync(folder, 0o777);
    const saved = process.env.TMPDIR;
    process.env.TMPDIR = unsafe;
    try {
      const path = freshPath();
      const [releaser, waiting] = [open(path), open(path)];
      await releaser.inspect('k');
      await waiting.inspect('k');
      let heard = 0;
      const stop = waiting.onRelease!('k', () => heard++);
      const [holder, waiter] = [newOwner(), newOwner()];
      expect(await releaser.acquire('k', holder, 10_000)).not.toBeNull();
      expect(await waiting.acquire('k', waiter, 10_000, { lineMs: 10_000 })).toBeNull();
      expect(await releaser.release('k', holder)).toBe(true);
      await sleep(200);
      expect(heard).toBe(0);
      expect(readdirSync(folder)).toEqual([]);
      expect(await waiting.acquire('k', waiter, 10_000, { lineMs: 10_000 })).not.toBeNull();
      stop();
    } finally {
      if (saved === undefined) delete process.env.TMPDIR;
      else process.env.TMPDIR = saved;
    }
  });

  it('a store opening its bell deletes the sockets of processes that died without closing', async () => {
    const path = freshPath();
    const first = open(path);
    await first.inspect('k');
    const { dev, ino } = statSync(path, { bigint: true });
    const folder = join(
      tmpdir(),
      `cachelock-${process.getuid?.() ?? 'user'}`,
      `${dev.toString(36)}-${ino.toString(36)}`,
    );
    mkdirSync(folder, { recursive: true, mode: 0o700 });
    const stale = join(folder, 'stale.s');
    // A process that listens and is killed: its socket file stays, and nobody answers on it.
    spawnSync(process.execPath, [
      '-e',
      `require('node:net').createServer().listen(${JSON.stringify(stale)}, () => process.kill(process.pid, 'SIGKILL'))`,
    ]);
    expect(existsSync(stale)).toBe(true);
    const stop = first.onRelease!('k', () => {});
    try {
      await until('the stale socket is gone', () => !existsSync(stale));
    } finally {
      stop();
    }
  });
});

describe('sqlite line of waiters, through the core', () => {
  it('a set whose try joined a line behind another waiter of the process does not hold the key up', async () => {
    const path = freshPath();
    const store = open(path);
    const other = open(path);
    // The first set's try comes back late: its place is first in the key's line, but the second
    // set, answered at once, is the first waiter of the process, the one that listens and asks.
    let late = true;
    const keys = store.capabilities!.keys!;
    const slowKeys = {
      ...keys,
      release: async (...args: Parameters<typeof keys.release>) => {
        const delayed = late;
        late = false;
        const released = await keys.release(...args);
        if (delayed) await sleep(50);
        return released;
      },
    };
    const slow = new Proxy(store, {
      get(target, name) {
        if (name === 'capabilities') return { ...target.capabilities, keys: slowKeys };
        const value = Reflect.get(target, name, target) as unknown;
        return typeof value === 'function' ? value.bind(target) : value;
      },
    });
    const holder = await new Lock(['a', 'b'], { cache: other, ttl: '10s' }).acquire();
    const { served, afterReleaseMs } = await twoTriesInTurn(['a', 'b'], { cache: slow }, () =>
      holder.release(),
    );
    // The first set's place, left in the line when it went on as a new owner, held the key for
    // every other waiter until it ran out (3 s).
    expect(afterReleaseMs).toBeLessThan(1_000);
    expect(served).toEqual(['second', 'first']);
    expect(places(path)).toEqual([]);
  });
});
