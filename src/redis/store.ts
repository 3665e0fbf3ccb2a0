import {
  type Acquired,
  type AcquiredKeys,
  type AcquireOptions,
  type Duration,
  type Handoff,
  type LeaseInfo,
  type LockStore,
  type ManyKeys,
  Refusals,
  type SharedLeases,
  type SharedRequest,
  type StoreCapabilities,
  toMs,
} from 'cachelock';
import { ACQUIRE, acquired } from './acquire.js';
import { Deadlines } from './deadlines.js';
import { isNoScript, type RedisDriver } from './driver.js';
import { EXTEND } from './extend.js';
import { handoffOwner, INSPECT, leaseInfo, parseHandoff } from './inspect.js';
import { leaseKey, type SharedNamespace, sharedKeys } from './keys.js';
import { acquiredKeys, MANY_ACQUIRE, MANY_EXTEND, MANY_RELEASE, sameSlot } from './many.js';
import { isOne, RELEASE } from './release.js';
import type { Script } from './script.js';
import {
  acquiredShared,
  SHARED_ACQUIRE,
  SHARED_EXTEND,
  SHARED_INSPECT,
  SHARED_RELEASE,
  sharedLeases,
} from './shared.js';
import { handedOff, ReleaseSubscriptions } from './subscriptions.js';

export interface RedisStoreOptions {
  /**
   * Reject an operation whose reply has not come after this long (default `'5s'`), so that a
   * server that stopped answering surfaces as a store failure instead of a hang.
   */
  commandTimeout?: Duration;
}

/** A `LockStore` on one Redis or Valkey server or Cluster. */
export class RedisStore implements LockStore {
  readonly kind = 'redis';
  readonly atomic = true;
  /** A channel's last wake-ups are told to whoever listens after them (see subscriptions.ts). */
  readonly replaysWakeups = true;
  /**
   * A hand-off told to its waiter grants the key (the release gave it a claim lease): none is
   * told that is older than the waiter's last refusal, when it was void already.
   */
  readonly handoffGrants = true;
  private readonly timeoutMs: number;
  private readonly subscriptions: ReleaseSubscriptions;
  private readonly deadlines: Deadlines;
  private closed = false;
  /** Keys of one operation must then share a slot. */
  private readonly cluster: boolean;
  /** Several keys in one script; permits and readers/writers as weighted shared leases. */
  readonly capabilities: Required<StoreCapabilities>;
  /**
   * The owners this store put in a line of shared leases. A wake-up names the first in line,
   * the only one that can be admitted next, so only the store whose waiter it is wakes it.
   */
  private readonly inLine = new Set<string>();
  /** Each waiter's last refusal in a line, on the server's clock (us). */
  private readonly refusedAt = new Refusals();

  constructor(
    private readonly driver: RedisDriver,
    options: RedisStoreOptions = {},
    private readonly ownsClient = false,
  ) {
    this.timeoutMs = toMs('commandTimeout', options.commandTimeout ?? '5s');
    this.cluster = driver.library.endsWith('cluster');
    this.subscriptions = new ReleaseSubscriptions(() => driver.openSubscriber());
    this.deadlines = new Deadlines(this.timeoutMs);
    this.capabilities = {
      keys: this.manyKeys(),
      permits: this.shared('permits'),
      readersWriters: this.shared('rw'),
    };
  }

  /** Which client library the store drives. */
  get library(): string {
    return this.driver.library;
  }

  acquire(
    key: string,
    owner: string,
    ttlMs: number,
    options?: AcquireOptions,
  ): Promise<Acquired | null> {
    const lineMs = options?.lineMs ? wholeMs(options.lineMs) : 0;
    const args = [owner, String(wholeMs(ttlMs)), String(lineMs)];
    if (lineMs > 0) args.push(this.subscriptions.wakeChannel());
    return this.call(ACQUIRE, leaseKey(key), args, (reply) => {
      const got = acquired(reply, (at) => this.refusedAt.refused(owner, at));
      if (got !== null) this.refusedAt.forget(owner);
      return got;
    });
  }

  release(key: string, owner: string, keepMs = 0): Promise<boolean> {
    this.refusedAt.forget(owner);
    const lease = leaseKey(key);
    const keep = keepMs > 0 ? String(wholeMs(keepMs)) : '0';
    return this.call(RELEASE, lease, [owner, keep], (reply) => {
      if (typeof reply !== 'string') return isOne(reply);
      handedOff(lease, reply);
      return true;
    });
  }

  extend(key: string, owner: string, ttlMs: number): Promise<boolean> {
    return this.call(EXTEND, leaseKey(key), [owner, String(wholeMs(ttlMs))], isOne);
  }

  inspect(key: string): Promise<LeaseInfo | null> {
    return this.call(INSPECT, leaseKey(key), [], leaseInfo);
  }

  onRelease(key: string, listener: (handoff?: Handoff) => void): () => void {
    return this.subscriptions.listen(leaseKey(key), (message) => {
      if (!message) return listener(undefined);
      const handoff = this.refusedAt.checked(parseHandoff(message));
      if (handoff !== undefined) listener(handoff);
    });
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.deadlines.stop();
    await this.subscriptions.close();
    if (this.ownsClient) await this.driver.quit();
  }

  /** One operation: `script` on a lease (or several of one slot), its reply converted, bounded in time. */
  private call<T>(
    script: Script,
    lease: string | readonly string[],
    args: string[],
    convert: (reply: unknown) => T,
  ): Promise<T> {
    if (this.closed) return Promise.reject(new Error('the Redis store was closed'));
    const driver = this.driver;
    // The fallback to the script's text inside the deadline's own promise: one layer, not two.
    return this.deadlines.run(driver.send(script, lease, args), convert, (error) =>
      isNoScript(error) ? driver.send(script, lease, args, true) : undefined,
    );
  }

  /** Note a waiter; owners that left without a word go once there are many. */
  private waiting(owner: string): void {
    // A waiter that neither got a lease nor released (its process gave up on a failure) is
    // forgotten in bulk: the worst is one missed wake-up, and polling covers that.
    if (this.inLine.size >= 10_000) this.inLine.clear();
    this.inLine.add(owner);
  }

  /** The leases of `keys`, refused up front when a Cluster could not run them in one script. */
  private leases(keys: readonly string[], shown?: readonly string[]): string[] {
    const leases = keys.map(leaseKey);
    if (this.cluster) {
      const error = sameSlot(keys, leases, shown);
      if (error !== null) throw error;
    }
    return leases;
  }

  private manyKeys(): ManyKeys {
    return {
      check: (keys, shown) => {
        if (this.cluster) this.leases(keys, shown);
      },
      acquire: (keys, owner, ttlMs): Promise<AcquiredKeys | null> => {
        try {
          const leases = this.leases(keys);
          return this.call(MANY_ACQUIRE, leases, [owner, String(wholeMs(ttlMs))], (reply) =>
            acquiredKeys(reply, leases.length),
          );
        } catch (error) {
          return Promise.reject(error);
        }
      },
      release: (keys, owner, keepMs = 0) => {
        try {
          const leases = this.leases(keys);
          const keep = keepMs > 0 ? String(wholeMs(keepMs)) : '0';
          return this.call(MANY_RELEASE, leases, [owner, keep], (reply) => {
            if (!Array.isArray(reply)) return isOne(reply);
            let all = true;
            for (const [i, one] of (reply as unknown[]).entries()) {
              if (typeof one === 'string') handedOff(leases[i]!, one);
              else if (!isOne(one)) all = false;
            }
            return all;
          });
        } catch (error) {
          return Promise.reject(error);
        }
      },
      extend: (keys, owner, ttlMs) => {
        try {
          const leases = this.leases(keys);
          return this.call(MANY_EXTEND, leases, [owner, String(wholeMs(ttlMs))], isOne);
        } catch (error) {
          return Promise.reject(error);
        }
      },
    };
  }

  private shared(namespace: SharedNamespace): SharedLeases {
    // Readers share the last write's fence, so a read/write lock keeps it a while after its
    // last lease; a semaphore's permits share nothing and leave nothing.
    const linger = namespace === 'rw' ? String(SHARED_FENCE_LINGER_MS) : '0';
    // A freed permit goes to the first waiter in the release itself; readers and writers are
    // woken and come in by their own acquire (a reader's fence is the last write's).
    const handOver = namespace === 'permits' ? '1' : '0';
    // The names of the keys in use, reused: a contended key is named twice per permit.
    const known = new Map<string, string[]>();
    const names = (key: string) => {
      let found = known.get(key);
      if (found === undefined) {
        // Per-entity keys (`once` over `sync-{userId}`) must not grow this without bound.
        if (known.size >= 1_000) known.clear();
        const k = sharedKeys(key, namespace);
        found = [k.holders, k.data, k.line, k.places];
        known.set(key, found);
      }
      return found;
    };
    return {
      acquire: (key, owner, ttlMs, request: SharedRequest) => {
        const args = [
          owner,
          String(wholeMs(ttlMs)),
          String(request.limit),
          String(request.weight),
          request.shareFence ? '1' : '0',
          request.lineMs ? String(wholeMs(request.lineMs)) : '0',
          request.lineMs ? this.subscriptions.wakeChannel() : '',
          linger,
        ];
        // In the set before sending, so that a wake-up racing the reply is not missed.
        if (request.lineMs) this.waiting(owner);
        return this.call(SHARED_ACQUIRE, names(key), args, (reply) => {
          const got = acquiredShared(reply, (at) => this.refusedAt.refused(owner, at));
          if (got !== null) {
            this.inLine.delete(owner);
            this.refusedAt.forget(owner);
          }
          return got;
        });
      },
      release: (key, owner, keepMs = 0) => {
        this.inLine.delete(owner);
        this.refusedAt.forget(owner);
        const keep = keepMs > 0 ? String(wholeMs(keepMs)) : '0';
        return this.call(SHARED_RELEASE, names(key), [owner, keep, handOver, linger], isOne);
      },
      extend: (key, owner, ttlMs) =>
        this.call(SHARED_EXTEND, names(key), [owner, String(wholeMs(ttlMs)), linger], isOne),
      inspect: (key) => this.call(SHARED_INSPECT, names(key), [], sharedLeases),
      // The holders' name is the channel.
      onRelease: (key, listener) =>
        this.subscriptions.listen(names(key)[0]!, (message) => {
          if (message === undefined) return listener();
          // A permit handed over, '<fence>:<claimMs>:<owner>', or the first in line's name.
          if (!/^\d+:\d+:/.test(message)) {
            if (this.inLine.has(message)) listener();
            return;
          }
          // Most hand-offs name someone else's waiter: known before reading the fence.
          if (!this.inLine.has(handoffOwner(message))) return;
          const handoff = this.refusedAt.checked(parseHandoff(message));
          if (handoff !== undefined) listener(handoff);
        }),
    };
  }
}

/**
 * How long a read/write lock's last write fence outlives its last lease and waiter, for the
 * readers that come after (about 100 bytes per lock, then nothing).
 */
export const SHARED_FENCE_LINGER_MS = 3_600_000;

/** Redis takes whole milliseconds, and a lease of 0 would mean "no expiry" to nobody's benefit. */
function wholeMs(ms: number): number {
  return Math.max(1, Math.ceil(ms));
}
