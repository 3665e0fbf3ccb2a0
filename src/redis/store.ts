import {
  type Acquired,
  type AcquireOptions,
  type Duration,
  type Handoff,
  type LeaseInfo,
  type LockStore,
  toMs,
} from 'cachelock';
import { ACQUIRE, acquired } from './acquire.js';
import { Deadlines } from './deadlines.js';
import type { RedisDriver } from './driver.js';
import { EXTEND } from './extend.js';
import { INSPECT, leaseInfo } from './inspect.js';
import { leaseKey } from './keys.js';
import { isOne, RELEASE } from './release.js';
import type { Script } from './script.js';
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
  private readonly timeoutMs: number;
  private readonly subscriptions: ReleaseSubscriptions;
  private readonly deadlines: Deadlines;
  private closed = false;

  constructor(
    private readonly driver: RedisDriver,
    options: RedisStoreOptions = {},
    private readonly ownsClient = false,
  ) {
    this.timeoutMs = toMs('commandTimeout', options.commandTimeout ?? '5s');
    this.subscriptions = new ReleaseSubscriptions(() => driver.openSubscriber());
    this.deadlines = new Deadlines(this.timeoutMs);
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
    return this.call(ACQUIRE, leaseKey(key), args, acquired);
  }

  release(key: string, owner: string, keepMs = 0): Promise<boolean> {
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
    return this.subscriptions.listen(leaseKey(key), listener);
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.deadlines.stop();
    await this.subscriptions.close();
    if (this.ownsClient) await this.driver.quit();
  }

  /** One operation: `script` on a lease, its reply converted, bounded in time. */
  private call<T>(
    script: Script,
    lease: string,
    args: string[],
    convert: (reply: unknown) => T,
  ): Promise<T> {
    if (this.closed) return Promise.reject(new Error('the Redis store was closed'));
    return this.deadlines.run(this.driver.run(script, lease, args), convert);
  }
}

/** Redis takes whole milliseconds, and a lease of 0 would mean "no expiry" to nobody's benefit. */
function wholeMs(ms: number): number {
  return Math.max(1, Math.ceil(ms));
}
