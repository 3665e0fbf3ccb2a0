import { setTimeout as sleep, setImmediate as tick } from 'node:timers/promises';
import { runConformance } from 'cachelock/testing';
import { describe, expect, it } from 'vitest';
import { ReferenceBackend, ReferenceStore } from './reference-store.js';

const leaseMs = 150;

/** A maker of instances of `Store` over one backend of their own, as processes on one server. */
function over(Store: new (backend: ReferenceBackend) => ReferenceStore): () => ReferenceStore {
  const backend = new ReferenceBackend();
  return () => new Store(backend);
}

runConformance({
  name: 'conformance: reference store',
  describe,
  it,
  makeStore: over(ReferenceStore),
  leaseMs,
});

/** The suite's cases as plain functions, collected through the public API with a fake runner. */
function collectCases(makeStore: () => ReferenceStore): Map<string, () => Promise<void>> {
  const cases = new Map<string, () => Promise<void>>();
  runConformance({
    name: 'collected',
    describe: (_name, body) => body(),
    it: (name, fn) => cases.set(name, fn),
    makeStore,
    leaseMs,
  });
  return cases;
}

/**
 * Run the cases whose names contain `fragment` against a store, each up to `runs` times until it
 * fails; return the names that failed.
 */
async function failures(
  makeStore: () => ReferenceStore,
  fragment: string,
  runs = 1,
): Promise<string[]> {
  const cases = [...collectCases(makeStore)].filter(([name]) => name.includes(fragment));
  expect(cases.length, `no case named like "${fragment}"`).toBeGreaterThan(0);
  const outcomes = await Promise.all(
    cases.map(async ([name, run]) => {
      for (let i = 0; i < runs; i++) {
        if (
          await run().then(
            () => false,
            () => true,
          )
        )
          return name;
      }
      return undefined;
    }),
  );
  return outcomes.filter((name) => name !== undefined);
}

// Each broken store breaks one promise of the contract; the suite must notice every one of them.
class CheckThenSet extends ReferenceStore {
  override async acquire(key: string, owner: string, ttlMs: number) {
    if (await this.inspect(key)) return super.acquire(key, owner, ttlMs);
    await tick(); // another caller runs here and also sees the key free
    this.leases.delete(key);
    return super.acquire(key, owner, ttlMs);
  }
}
class ReleaseAnyOwner extends ReferenceStore {
  override async release(key: string, _owner: string, keepMs?: number) {
    const lease = this.live(key);
    return lease ? super.release(key, lease.owner, keepMs) : false;
  }
}
class ExtendAnyOwner extends ReferenceStore {
  override async extend(key: string, _owner: string, ttlMs: number) {
    const lease = this.live(key);
    return lease ? super.extend(key, lease.owner, ttlMs) : false;
  }
}
class NeverExpires extends ReferenceStore {
  override async acquire(key: string, owner: string, _ttlMs: number) {
    return super.acquire(key, owner, 1e9);
  }
  override async release(key: string, owner: string) {
    return super.release(key, owner);
  }
}
class ExtendDoesNothing extends ReferenceStore {
  override async extend(key: string, owner: string) {
    return (await this.inspect(key))?.owner === owner;
  }
}
class ExtendRevivesExpired extends ReferenceStore {
  override async extend(key: string, owner: string, ttlMs: number) {
    const lease = this.leases.get(key);
    if (!lease || lease.owner !== owner) return false;
    lease.expiresAt = this.now() + ttlMs;
    return true;
  }
}
class ReleaseExpired extends ReferenceStore {
  override async release(key: string, owner: string, keepMs?: number) {
    const lease = this.leases.get(key);
    if (lease?.owner === owner && lease.expiresAt <= this.now()) return true;
    return super.release(key, owner, keepMs);
  }
}
class FenceRestartsAfterRelease extends ReferenceStore {
  override async release(key: string, owner: string, keepMs?: number) {
    const released = await super.release(key, owner, keepMs);
    if (released && !keepMs) this.fences.delete(key);
    return released;
  }
}
class FenceKeptOnTakeover extends ReferenceStore {
  // Takes over an expired lease in place and keeps its fence, so a stale holder's writes and the
  // new holder's carry the same token.
  override async acquire(key: string, owner: string, ttlMs: number) {
    const stale = this.leases.get(key);
    if (stale && stale.owner !== owner && stale.expiresAt <= this.now()) {
      stale.owner = owner;
      stale.expiresAt = this.now() + ttlMs;
      return { fence: stale.fence };
    }
    return super.acquire(key, owner, ttlMs);
  }
}
class KeepMsDeletes extends ReferenceStore {
  override async release(key: string, owner: string) {
    return super.release(key, owner);
  }
}
class NotReentrantForOwner extends ReferenceStore {
  override async acquire(key: string, owner: string, ttlMs: number) {
    if (this.live(key)) return null;
    return super.acquire(key, owner, ttlMs);
  }
}
class TtlInSeconds extends ReferenceStore {
  override async inspect(key: string) {
    const info = await super.inspect(key);
    return info && { ...info, ttlMs: Math.ceil(info.ttlMs / 1000) };
  }
}
class TruncatesKeys extends ReferenceStore {
  protected override slot(key: string) {
    return key.slice(0, 250);
  }
}
class FoldsCase extends ReferenceStore {
  protected override slot(key: string) {
    return key.toLowerCase();
  }
}
class NormalisesUnicode extends ReferenceStore {
  protected override slot(key: string) {
    return key.normalize('NFC');
  }
}
class TrimsKeys extends ReferenceStore {
  protected override slot(key: string) {
    return key.trim();
  }
}
class StripsControlCharacters extends ReferenceStore {
  protected override slot(key: string) {
    return key.replace(/\s+/g, '_');
  }
}
class NeverWakes extends ReferenceStore {
  protected override notify(): void {}
}
class CannotUnsubscribe extends ReferenceStore {
  override onRelease(key: string, listener: () => void) {
    super.onRelease(key, listener);
    return () => {};
  }
}

// Serialised only within one instance: each operation reads, waits a round trip, then writes,
// one operation at a time per instance. One instance is exclusive; two are not.
class SerialPerInstance extends ReferenceStore {
  #queue: Promise<unknown> = Promise.resolve();
  protected serial<T>(operation: () => Promise<T>): Promise<T> {
    const next = this.#queue.then(operation, operation);
    this.#queue = next.catch(() => undefined);
    return next;
  }
  protected roundTrip(): Promise<unknown> {
    return sleep(Math.random() * 4);
  }
}
class AcquireSerialPerInstance extends SerialPerInstance {
  override acquire(key: string, owner: string, ttlMs: number) {
    return this.serial(async () => {
      const lease = this.live(key);
      if (lease && lease.owner !== owner) return null;
      await this.roundTrip();
      const fence = lease?.fence ?? this.nextFence(key);
      this.leases.set(key, { owner, expiresAt: this.now() + ttlMs, fence });
      return { fence };
    });
  }
}
class ReleaseSerialPerInstance extends SerialPerInstance {
  override release(key: string, owner: string, keepMs = 0) {
    return this.serial(async () => {
      if (this.live(key)?.owner !== owner) return false;
      await this.roundTrip();
      if (keepMs > 0) {
        this.leases.set(key, { owner, expiresAt: this.now() + keepMs, fence: 0n });
      } else {
        this.leases.delete(key);
      }
      return true;
    });
  }
}
class ExtendSerialPerInstance extends SerialPerInstance {
  override extend(key: string, owner: string, ttlMs: number) {
    return this.serial(async () => {
      const lease = this.live(key);
      if (lease?.owner !== owner) return false;
      await this.roundTrip();
      this.leases.set(key, { ...lease, expiresAt: this.now() + ttlMs });
      return true;
    });
  }
}
// Each instance keeps its own leases, yet says it is atomic.
class SharesNothing extends ReferenceStore {
  constructor() {
    super(new ReferenceBackend());
  }
}

// [flaw, store, the case that must catch it, how many runs it may take: races are caught
// most of the time in one run (measured: each caught in 15 of 15 runs)]
const broken: [string, () => ReferenceStore, string, number?][] = [
  ['acquire serialised per instance', over(AcquireSerialPerInstance), 'one winner', 3],
  ['release serialised per instance', over(ReleaseSerialPerInstance), 'straddles', 3],
  ['extend serialised per instance', over(ExtendSerialPerInstance), 'straddles', 3],
  ['instances that share nothing', () => new SharesNothing(), 'each other'],
  ['check-then-set acquire', () => new CheckThenSet(), 'concurrent acquirers wins'],
  ['check-then-set acquire', () => new CheckThenSet(), 'fuzz'],
  ['release without an owner check', () => new ReleaseAnyOwner(), 'non-owner'],
  ['release without an owner check', () => new ReleaseAnyOwner(), 'short lease expires'],
  ['extend without an owner check', () => new ExtendAnyOwner(), 'non-owner'],
  ['leases that never expire', () => new NeverExpires(), 'short lease expires'],
  ['extend that does nothing', () => new ExtendDoesNothing(), 'extend prolongs'],
  ['extend that revives an expired lease', () => new ExtendRevivesExpired(), 'old owner cannot'],
  ['release of an expired lease reported as true', () => new ReleaseExpired(), 'old owner cannot'],
  ['fences restarting after a release', () => new FenceRestartsAfterRelease(), 'fences'],
  ['fences kept when an expired lease is taken over', () => new FenceKeptOnTakeover(), 'fences'],
  ['keepMs ignored', () => new KeepMsDeletes(), 'keepMs'],
  ['acquire refusing the current owner', () => new NotReentrantForOwner(), 'current owner'],
  ['inspect in seconds', () => new TtlInSeconds(), 'inspect is null'],
  ['keys truncated at 250 characters', () => new TruncatesKeys(), 'hostile keys'],
  ['keys folded to lower case', () => new FoldsCase(), 'hostile keys'],
  ['keys normalised to NFC', () => new NormalisesUnicode(), 'hostile keys'],
  ['keys trimmed', () => new TrimsKeys(), 'hostile keys'],
  ['whitespace collapsed in keys', () => new StripsControlCharacters(), 'hostile keys'],
  ['onRelease that never fires', () => new NeverWakes(), 'onRelease'],
  ['an unsubscribe that does nothing', () => new CannotUnsubscribe(), 'onRelease'],
];

describe('conformance: the suite catches broken stores', () => {
  for (const [flaw, makeStore, fragment, runs] of broken) {
    it(`${flaw} fails "${fragment}"`, async () => {
      expect(await failures(makeStore, fragment, runs)).not.toEqual([]);
    }, 60_000);
  }

  it('passes the reference store through the collected cases too', async () => {
    expect(await failures(over(ReferenceStore), '')).toEqual([]);
  }, 60_000);

  it('reports a store that cannot be made, and closes the store after a failed case', async () => {
    const [, first] = [...collectCases(() => new ReferenceStore())][0]!;
    expect(first).toBeTypeOf('function');
    let closed = 0;
    let made = 0;
    const cases: (() => Promise<void>)[] = [];
    const makeBroken = over(ReleaseAnyOwner);
    runConformance({
      name: 'closing',
      describe: (_name, body) => body(),
      it: (_name, fn) => cases.push(fn),
      makeStore: () => {
        made++;
        return makeBroken();
      },
      closeStore: async () => {
        closed++;
      },
      leaseMs,
    });
    const outcomes = await Promise.allSettled(cases.map((run) => run()));
    expect(outcomes.some((o) => o.status === 'rejected')).toBe(true);
    // Every store a case made, its peers included, is closed.
    expect(made).toBeGreaterThan(cases.length);
    expect(closed).toBe(made);

    const unmade: (() => Promise<void>)[] = [];
    runConformance({
      name: 'unmade',
      describe: (_name, body) => body(),
      it: (_name, fn) => unmade.push(fn),
      makeStore: () => Promise.reject(new Error('connection refused')),
    });
    await expect(unmade[0]!()).rejects.toThrow('connection refused');
  });

  it('rejects a nonsensical leaseMs at once', () => {
    expect(() =>
      runConformance({
        name: 'x',
        describe: () => {},
        it: () => {},
        makeStore: () => new ReferenceStore(),
        leaseMs: 0,
      }),
    ).toThrow(RangeError);
  });
});
