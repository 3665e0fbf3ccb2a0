import { type Acquired, type Duration, type LeaseInfo, type LockStore, toMs } from 'cachelock';
import { leaseKey, type RedisDriver, type Script } from 'cachelock/redis';
import { ACQUIRE, EXTEND, INSPECT, RELEASE } from './scripts.js';

export interface RedlockStoreOptions {
  /**
   * How fast the servers' clocks may run against ours, as a fraction of the lease (default
   * 0.01). Each server keeps the lease `ttl * driftFactor + 2 ms` longer than we count on.
   */
  driftFactor?: number;
  /** Give up on a server that has not replied after this long (default `'1s'`). */
  serverTimeout?: Duration;
}

type Outcome = { ok: true; reply: unknown } | { ok: false; error: unknown };

/**
 * A majority quorum over independent Redis servers (the Redlock algorithm). A lease counts when
 * more than half the servers granted it before it could have run out; a failed attempt is
 * cleaned up on every server. There is no fence: independent servers share no counter, and a
 * holder paused past its lease is not protected against (see the README).
 */
export class RedlockStore implements LockStore {
  readonly kind = 'redlock';
  readonly atomic = true;
  readonly quorum: number;
  private readonly driftFactor: number;
  private readonly serverTimeoutMs: number;

  constructor(
    private readonly drivers: RedisDriver[],
    options: RedlockStoreOptions = {},
    private readonly ownsClients = false,
  ) {
    if (drivers.length === 0) throw new TypeError('redlockStore: needs at least one server');
    this.quorum = Math.floor(drivers.length / 2) + 1;
    this.driftFactor = options.driftFactor ?? 0.01;
    if (!(this.driftFactor >= 0 && this.driftFactor < 1)) {
      throw new RangeError(
        `redlockStore: driftFactor must be in [0, 1), got ${options.driftFactor}`,
      );
    }
    this.serverTimeoutMs = toMs('serverTimeout', options.serverTimeout ?? '1s');
  }

  async acquire(key: string, owner: string, ttlMs: number): Promise<Acquired | null> {
    const ttl = Math.max(1, Math.ceil(ttlMs));
    // The servers keep the lease a little longer than the caller counts on (it counts from
    // before it sent the request), so a fast server clock cannot end it under the holder.
    const serverTtl = this.serverTtl(ttl);
    const started = performance.now();
    const outcomes = await this.onAll(ACQUIRE, key, [owner, String(serverTtl)]);
    const granted = outcomes.filter((o) => o.ok && Number(o.reply) === 1).length;
    const elapsed = performance.now() - started;
    if (granted >= this.quorum && elapsed < ttl) return {};
    // Undo the partial acquisition everywhere, including servers whose reply was lost.
    await this.onAll(RELEASE, key, [owner, '0']).catch(() => {});
    this.throwIfUndecided(outcomes, 'acquire');
    return null;
  }

  async release(key: string, owner: string, keepMs = 0): Promise<boolean> {
    const keep = keepMs > 0 ? String(Math.max(1, Math.ceil(keepMs))) : '0';
    const outcomes = await this.onAll(RELEASE, key, [owner, keep]);
    if (this.count(outcomes, 1) >= this.quorum) return true;
    this.throwIfUndecided(outcomes, 'release');
    return false;
  }

  async extend(key: string, owner: string, ttlMs: number): Promise<boolean> {
    const ttl = Math.max(1, Math.ceil(ttlMs));
    const serverTtl = this.serverTtl(ttl);
    const started = performance.now();
    const outcomes = await this.onAll(EXTEND, key, [owner, String(serverTtl)]);
    if (this.count(outcomes, 1) >= this.quorum && performance.now() - started < ttl) return true;
    // The lease is lost: do not leave a minority of servers holding it for the new ttl.
    await this.onAll(RELEASE, key, [owner, '0']).catch(() => {});
    this.throwIfUndecided(outcomes, 'extend');
    return false;
  }

  async inspect(key: string): Promise<LeaseInfo | null> {
    const outcomes = await this.onAll(INSPECT, key, []);
    const byOwner = new Map<string, number[]>();
    for (const outcome of outcomes) {
      if (!outcome.ok || !Array.isArray(outcome.reply)) continue;
      const [owner, pttl] = outcome.reply as [string, number];
      byOwner.set(String(owner), [...(byOwner.get(String(owner)) ?? []), Number(pttl)]);
    }
    for (const [owner, ttls] of byOwner) {
      if (ttls.length < this.quorum) continue;
      // The lease lasts while a quorum still has it: the quorum-th longest, less the drift
      // margin the servers were given on top of what the holder counts on.
      const sorted = ttls.sort((a, b) => b - a);
      const remaining = Math.floor((sorted[this.quorum - 1]! - 2) / (1 + this.driftFactor));
      return { owner, ttlMs: Math.max(0, remaining) };
    }
    this.throwIfUndecided(outcomes, 'inspect');
    return null;
  }

  async close(): Promise<void> {
    if (this.ownsClients) await Promise.all(this.drivers.map((d) => d.quit()));
  }

  private serverTtl(ttl: number): number {
    return ttl + Math.ceil(ttl * this.driftFactor) + 2;
  }

  private count(outcomes: Outcome[], value: number): number {
    return outcomes.filter((o) => o.ok && Number(o.reply) === value).length;
  }

  /** With too many servers failing, no answer is honest: fail rather than say "held". */
  private throwIfUndecided(outcomes: Outcome[], operation: string): void {
    const failures = outcomes.filter((o): o is { ok: false; error: unknown } => !o.ok);
    if (outcomes.length - failures.length >= this.quorum) return;
    throw new AggregateError(
      failures.map((f) => f.error),
      `redlock could not ${operation}: ${failures.length} of ${outcomes.length} servers failed (${failures
        .map((f) => (f.error instanceof Error ? f.error.message : String(f.error)))
        .join('; ')})`,
    );
  }

  private onAll(script: Script, key: string, args: string[]): Promise<Outcome[]> {
    const name = `${leaseKey(key)}:redlock`;
    const timeoutMs = this.serverTimeoutMs;
    return Promise.all(
      this.drivers.map((driver) =>
        bounded(driver.run(script, name, args), timeoutMs).then(
          (reply): Outcome => ({ ok: true, reply }),
          (error): Outcome => ({ ok: false, error }),
        ),
      ),
    );
  }
}

function bounded<T>(operation: Promise<T>, ms: number): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`no reply within ${ms} ms`)), ms);
  });
  operation.catch(() => {});
  return Promise.race([operation, timeout]).finally(() => clearTimeout(timer));
}
