import { Lock, LockedError, LockTimeoutError, newOwner, StoreError } from 'cachelock';
import { leaseKey, type RedisDriver, type Script } from 'cachelock/redis';
import { RedlockStore } from 'cachelock/redlock';
import { describe, expect, it } from 'vitest';

/**
 * A server in memory that runs the Redlock scripts one after another, as a Redis connection
 * does, and that a test can stall (its commands wait, in order), slow down, or take down (its
 * client reports it is not connected). A script it does not know yet (after a restart) runs
 * as a server does: NOSCRIPT comes back to its SHA, and it learns the script from its text,
 * which goes out behind whatever was sent in the meantime.
 */
class FakeServer implements RedisDriver {
  readonly library = 'ioredis' as const;
  readonly leases = new Map<string, string>();
  down: string | undefined;
  delayMs = 0;
  readonly unknownScripts = new Set<string>();
  private gate: Promise<void> | undefined;
  private open: () => void = () => {};
  private last: Promise<unknown> = Promise.resolve();

  send(script: Script, key: string, args: string[], byText = false): Promise<unknown> {
    return this.next(() => {
      if (byText) this.unknownScripts.delete(script.name);
      else if (this.unknownScripts.has(script.name)) {
        throw new Error('NOSCRIPT No matching script. Please use EVAL.');
      }
      return this.exec(script.name, key, args);
    });
  }

  private next(command: () => unknown): Promise<unknown> {
    const gate = this.gate;
    const reply = this.last.then(async () => {
      await gate;
      if (this.delayMs > 0) await new Promise((resolve) => setTimeout(resolve, this.delayMs));
      return command();
    });
    this.last = reply.catch(() => {});
    return reply;
  }

  stall(): void {
    this.gate = new Promise((resolve) => (this.open = resolve));
  }

  resume(): Promise<unknown> {
    this.open();
    this.gate = undefined;
    return this.last;
  }

  openSubscriber(): never {
    throw new Error('not used');
  }

  async quit(): Promise<void> {}

  private exec(name: string, key: string, [owner]: string[]): unknown {
    const holder = this.leases.get(key);
    switch (name) {
      case 'redlock-acquire':
        if (holder !== undefined && holder !== owner) return 0;
        this.leases.set(key, owner!);
        return 1;
      case 'redlock-extend':
        return holder === owner ? 1 : 0;
      case 'redlock-release':
        if (holder !== owner) return 0;
        this.leases.delete(key);
        return 1;
      case 'redlock-inspect':
        return holder === undefined ? null : [holder, 10_000];
      default:
        throw new Error(`unknown script ${name}`);
    }
  }
}

function fakeQuorum(n = 3, serverTimeout = 5_000) {
  const servers = Array.from({ length: n }, () => new FakeServer());
  const store = new RedlockStore(
    servers.map((driver) => ({ driver, unavailable: () => driver.down })),
    { serverTimeout },
  );
  return { servers, store };
}

let counter = 0;
const key = (label: string) => `quorum:${label}:${++counter}`;
const leaseName = (k: string) => `${leaseKey(k)}:redlock`;
const holders = (servers: FakeServer[], k: string) =>
  servers.map((s) => [...s.leases].find(([name]) => name.includes(k))?.[1]);

/** Resolves with how long `promise` took to settle, and its outcome. */
async function timed<T>(promise: Promise<T>) {
  const started = performance.now();
  const outcome = await promise.then(
    (value) => ({ value }),
    (error: unknown) => ({ error }),
  );
  return { ms: performance.now() - started, ...outcome };
}

describe('redlock quorum decisions', () => {
  it('settles each operation once a majority answered, and a stalled server catches up in order', async () => {
    const { servers, store } = fakeQuorum();
    const k = key('stalled');
    const a = newOwner();
    servers[2]!.stall();
    // serverTimeout is 5 s: anything near it means the store waited for the stalled server.
    const operations = [
      await timed(store.acquire(k, a, 500)),
      await timed(store.extend(k, a, 500)),
      await timed(store.inspect(k).then((lease) => lease?.owner)),
      await timed(store.release(k, a)),
    ];
    expect(operations.map((o) => ('value' in o ? o.value : o.error))).toEqual([{}, true, a, true]);
    for (const o of operations) expect(o.ms).toBeLessThan(1_000);
    expect(holders(servers, k)).toEqual([undefined, undefined, undefined]);
    // Running again, it grants, extends and releases in the order they were sent.
    await servers[2]!.resume();
    await expect.poll(() => holders(servers, k)).toEqual([undefined, undefined, undefined]);
  });

  it('refuses when a majority refused, however the rest is doing', async () => {
    const { servers, store } = fakeQuorum();
    const k = key('held');
    const other = newOwner();
    expect(await store.acquire(k, other, 10_000)).toEqual({});
    servers[2]!.down = 'not connected';
    const a = newOwner();
    expect(await store.acquire(k, a, 500)).toBeNull();
    expect(await store.extend(k, a, 500)).toBe(false);
    expect(await store.release(k, a)).toBe(false);
    servers[2]!.down = undefined;
    servers[2]!.stall();
    expect(await timed(store.acquire(k, a, 500))).toMatchObject({ value: null });
    await servers[2]!.resume();
    // The stalled server ran the refused attempt and its undo, and `other` kept the key.
    await expect.poll(() => holders(servers, k)).toEqual([other, other, other]);
  });

  it('undoes a grant on a minority', async () => {
    const { servers, store } = fakeQuorum();
    const k = key('minority');
    const other = newOwner();
    // Held by `other` on servers 1 and 2 only: server 3 grants, then gives the grant back.
    servers[0]!.leases.set(leaseName(k), other);
    servers[1]!.leases.set(leaseName(k), other);
    expect(await store.acquire(k, newOwner(), 10_000)).toBeNull();
    await Promise.all(servers.map((s) => s.resume()));
    await expect.poll(() => holders(servers, k)).toEqual([other, other, undefined]);
    // Held on server 1 only: a majority is still free, and wins.
    servers[1]!.leases.delete(leaseName(k));
    const a = newOwner();
    expect(await store.acquire(k, a, 10_000)).toEqual({});
    expect(holders(servers, k)).toEqual([other, a, a]);
    expect(await store.release(k, a)).toBe(true);
    expect(holders(servers, k)).toEqual([other, undefined, undefined]);
  });

  it('sends a release behind an acquire its disconnected client still holds to replay', async () => {
    const { servers, store } = fakeQuorum();
    const k = key('replay');
    const a = newOwner();
    // Server 3's connection drops with the acquire on its way; the client will send it again.
    servers[2]!.stall();
    const acquired = store.acquire(k, a, 10_000);
    servers[2]!.down = 'not connected';
    expect(await acquired).toEqual({});
    expect(await store.release(k, a)).toBe(true);
    // Meanwhile another owner's attempts fail at once there, without waiting.
    const b = newOwner();
    const attempt = await timed(store.acquire(k, b, 10_000));
    expect(attempt).toMatchObject({ value: {} });
    expect(attempt.ms).toBeLessThan(1_000);
    expect(await store.release(k, b)).toBe(true);
    // Back: the replayed acquire is followed by its release, and `a` holds nothing.
    servers[2]!.down = undefined;
    await servers[2]!.resume();
    await expect.poll(() => holders(servers, k)).toEqual([undefined, undefined, undefined]);
  });

  it('never lets an undo overtake a later attempt of the same owner on a server', async () => {
    const { servers, store } = fakeQuorum();
    const k = key('overtake');
    const other = newOwner();
    const a = newOwner();
    servers[0]!.leases.set(leaseName(k), other);
    servers[1]!.leases.set(leaseName(k), other);
    // Server 3 was restarted: it has learnt the acquire script since, not the release one.
    servers[2]!.unknownScripts.add('redlock-release');
    servers[2]!.stall();
    // Refused by servers 1 and 2; the undo on server 3 goes out behind the acquire there.
    expect(await store.acquire(k, a, 10_000)).toBeNull();
    // The same owner tries again (a waiting acquire does) once server 2 is free.
    servers[1]!.leases.delete(leaseName(k));
    const again = store.acquire(k, a, 10_000);
    await servers[2]!.resume();
    expect(await again).toEqual({});
    // The second attempt won on servers 2 and 3: the first attempt's undo must not have run
    // after it on server 3, or `a` would hold a minority while believing it holds the key.
    await expect.poll(() => holders(servers, k)).toEqual([other, a, a]);
  });

  it('reports a majority that failed as a store failure, not as contention', async () => {
    const { servers, store } = fakeQuorum();
    const k = key('failed');
    const other = newOwner();
    // Held on one server, the two others down: nobody can tell whether it is held.
    servers[0]!.leases.set(leaseName(k), other);
    servers[1]!.down = 'not connected (ioredis status "reconnecting")';
    servers[2]!.down = 'not connected (node-redis is reconnecting)';
    const attempt = await timed(store.acquire(k, newOwner(), 500));
    expect(attempt.ms).toBeLessThan(100);
    expect(String((attempt as { error: Error }).error.message)).toMatch(
      /could not acquire: 2 of 3 servers failed \(server 2: not connected.*; server 3: not connected/,
    );
    await expect(store.release(k, other)).rejects.toThrow(/could not release: 2 of 3/);
    await expect(store.extend(k, other, 500)).rejects.toThrow(/could not extend: 2 of 3/);
    await expect(store.inspect(k)).rejects.toThrow(/could not inspect: 2 of 3/);
    for (const wait of [0, 1_000]) {
      const error = await new Lock(k, { cache: store, ttl: 500, wait })
        .acquire()
        .catch((e: unknown) => e);
      expect(error).toBeInstanceOf(StoreError);
      expect(error).not.toBeInstanceOf(LockedError);
    }
  });

  it('waits for a server that may still decide it, bounded by serverTimeout', async () => {
    const { servers, store } = fakeQuorum(3, 200);
    const k = key('undecided');
    const other = newOwner();
    servers[0]!.leases.set(leaseName(k), other);
    // One refusal and one failure: the stalled third decides whether this is contention.
    servers[1]!.down = 'not connected';
    servers[2]!.stall();
    const attempt = await timed(store.acquire(k, newOwner(), 10_000));
    expect(attempt.ms).toBeGreaterThanOrEqual(190);
    expect((attempt as { error: Error }).error.message).toMatch(/server 3: no reply within 200 ms/);
    await servers[2]!.resume();
  });

  it('treats a majority that granted only after the lease ran out as a store failure', async () => {
    const { servers, store } = fakeQuorum();
    for (const s of servers) s.delayMs = 40;
    const k = key('slow');
    await expect(store.acquire(k, newOwner(), 20)).rejects.toThrow(
      /granted a 20 ms lease only after \d+ ms/,
    );
    const error = await new Lock(k, { cache: store, ttl: 20, wait: 500 })
      .acquire()
      .catch((e: unknown) => e);
    expect(error).toBeInstanceOf(StoreError);
    expect(error).not.toBeInstanceOf(LockTimeoutError);
    for (const s of servers) s.delayMs = 0;
    await Promise.all(servers.map((s) => s.resume()));
    await expect.poll(() => holders(servers, k)).toEqual([undefined, undefined, undefined]);
  });

  it('with 5 servers, needs 3: one down and one stalled cost nothing, three down fail', async () => {
    const { servers, store } = fakeQuorum(5);
    expect(store.quorum).toBe(3);
    servers[0]!.down = 'not connected';
    servers[4]!.stall();
    const k = key('five');
    const a = newOwner();
    expect(await store.acquire(k, a, 500)).toEqual({});
    expect(await store.release(k, a)).toBe(true);
    servers[1]!.down = 'not connected';
    servers[2]!.down = 'not connected';
    await expect(store.acquire(k, newOwner(), 500)).rejects.toThrow(/3 of 5 servers failed/);
    await servers[4]!.resume();
  }, 10_000);
});
