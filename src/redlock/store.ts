import { type Acquired, type Duration, type LeaseInfo, type LockStore, toMs } from 'cachelock';
import { leaseKey, type RedisDriver, runScript, type Script } from 'cachelock/redis';
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

/** One member of the quorum. */
export interface RedlockServer {
  readonly driver: RedisDriver;
  /**
   * Why a command sent now could not be answered soon (its client is reconnecting, say, and
   * would only queue it), or `undefined` when it can be sent.
   */
  unavailable(): string | undefined;
}

type Reply = { ok: true; reply: unknown } | { ok: false; error: unknown };

/** The replies heard so far, by server; `undefined` while a server has not answered. */
type Heard = readonly (Reply | undefined)[];

/** What a quorum call settles on; `undefined`: wait for more servers. */
type Verdict<T> = { value: T } | { failed: true } | undefined;

/**
 * A majority quorum over independent Redis servers (the Redlock algorithm). A lease counts when
 * more than half the servers granted it before it could have run out; a failed attempt is
 * undone on every server. Each operation settles as soon as a majority has decided it, so a
 * minority of servers that are down or stalled costs no time. There is no fence: independent
 * servers share no counter, and a holder paused past its lease is not protected against (see
 * the README).
 */
export class RedlockStore implements LockStore {
  readonly kind = 'redlock';
  readonly atomic = true;
  readonly quorum: number;
  private readonly servers: readonly RedlockServer[];
  private readonly driftFactor: number;
  private readonly serverTimeoutMs: number;
  /** Per server, by lease: the last command sent there, until it settles. */
  private readonly unsettled: Map<string, Promise<unknown>>[];

  constructor(
    servers: readonly (RedlockServer | RedisDriver)[],
    options: RedlockStoreOptions = {},
    private readonly ownsClients = false,
  ) {
    if (servers.length === 0) throw new TypeError('redlockStore: needs at least one server');
    this.servers = servers.map((s) =>
      'driver' in s ? s : { driver: s, unavailable: () => undefined },
    );
    this.unsettled = servers.map(() => new Map());
    this.quorum = Math.floor(servers.length / 2) + 1;
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
    // The servers keep the lease a little longer than the caller counts on (the core counts it
    // from before it sent the request), so a fast server clock cannot end it under the holder.
    const serverTtl = this.serverTtl(ttl);
    const started = performance.now();
    let granted: boolean;
    try {
      granted = await this.decide(ACQUIRE, key, [owner, String(serverTtl)], 'acquire');
    } catch (error) {
      this.undo(key, owner);
      throw error;
    }
    const elapsed = performance.now() - started;
    if (granted && elapsed < ttl) return {};
    // Undo the attempt everywhere, servers still busy with it included (see `send`).
    this.undo(key, owner);
    if (granted) {
      // Not contention: nobody else holds the key, the servers were too slow for the lease.
      throw new Error(
        `redlock could not acquire: a majority granted a ${ttl} ms lease only after ${Math.round(elapsed)} ms`,
      );
    }
    return null;
  }

  async release(key: string, owner: string, keepMs = 0): Promise<boolean> {
    const keep = keepMs > 0 ? String(Math.max(1, Math.ceil(keepMs))) : '0';
    return this.decide(RELEASE, key, [owner, keep], 'release');
  }

  async extend(key: string, owner: string, ttlMs: number): Promise<boolean> {
    const ttl = Math.max(1, Math.ceil(ttlMs));
    const serverTtl = this.serverTtl(ttl);
    const started = performance.now();
    const extended = await this.decide(EXTEND, key, [owner, String(serverTtl)], 'extend');
    if (extended && performance.now() - started < ttl) return true;
    // The lease is lost: do not leave a minority of servers holding it for the new ttl.
    this.undo(key, owner);
    return false;
  }

  async inspect(key: string): Promise<LeaseInfo | null> {
    const n = this.servers.length;
    const q = this.quorum;
    return this.ask<LeaseInfo | null>(INSPECT, key, [], 'inspect', (heard) => {
      const byOwner = new Map<string, number[]>();
      let answered = 0;
      for (const reply of heard) {
        if (!reply?.ok) continue;
        answered++;
        if (!Array.isArray(reply.reply)) continue;
        const [owner, pttl] = reply.reply as [string, number];
        byOwner.set(String(owner), [...(byOwner.get(String(owner)) ?? []), Number(pttl)]);
      }
      const pending = heard.filter((r) => r === undefined).length;
      let best = 0;
      for (const [owner, ttls] of byOwner) {
        best = Math.max(best, ttls.length);
        if (ttls.length < q) continue;
        // The lease lasts while a quorum still has it: the quorum-th longest, less the drift
        // margin the servers were given on top of what the holder counts on.
        const sorted = ttls.sort((a, b) => b - a);
        const remaining = Math.floor((sorted[q - 1]! - 2) / (1 + this.driftFactor));
        return { value: { owner, ttlMs: Math.max(0, remaining) } };
      }
      if (best + pending >= q) return undefined;
      if (answered >= q) return { value: null };
      return n - answered - pending > n - q ? { failed: true } : undefined;
    });
  }

  async close(): Promise<void> {
    if (this.ownsClients) await Promise.all(this.servers.map((s) => s.driver.quit()));
  }

  private serverTtl(ttl: number): number {
    return ttl + Math.ceil(ttl * this.driftFactor) + 2;
  }

  /**
   * Run a script that replies 1 (done) or 0 (refused) and settle as soon as the outcome is
   * known: `true` once a majority said 1, `false` once a majority answered and a majority of
   * 1s is out of reach. When failures leave fewer than a majority able to answer, it rejects:
   * a store failure must never read as "held by another owner".
   */
  private decide(script: Script, key: string, args: string[], operation: string) {
    const n = this.servers.length;
    const q = this.quorum;
    return this.ask(script, key, args, operation, (heard): Verdict<boolean> => {
      let yes = 0;
      let no = 0;
      let pending = 0;
      for (const reply of heard) {
        if (reply === undefined) pending++;
        else if (reply.ok) Number(reply.reply) === 1 ? yes++ : no++;
      }
      if (yes >= q) return { value: true };
      if (yes + pending >= q) return undefined;
      if (yes + no >= q) return { value: false };
      return n - yes - no - pending > n - q ? { failed: true } : undefined;
    });
  }

  /**
   * Send `script` to every server and resolve with the first verdict `judge` reaches on the
   * replies heard so far. Servers that have not answered by then finish in the background.
   */
  private ask<T>(
    script: Script,
    key: string,
    args: string[],
    operation: string,
    judge: (heard: Heard) => Verdict<T>,
  ): Promise<T> {
    const name = `${leaseKey(key)}:redlock`;
    const heard: (Reply | undefined)[] = this.servers.map(() => undefined);
    return new Promise<T>((resolve, reject) => {
      let settled = false;
      const hear = (index: number, reply: Reply) => {
        heard[index] = reply;
        if (settled) return;
        const verdict = judge(heard);
        if (verdict === undefined) return;
        settled = true;
        if ('value' in verdict) resolve(verdict.value);
        else reject(this.failure(heard, operation));
      };
      this.servers.forEach((_, index) => {
        this.send(index, script, name, args).then(
          (reply) => hear(index, { ok: true, reply }),
          (error) => hear(index, { ok: false, error }),
        );
      });
    });
  }

  /**
   * Run `script` on one server, failing at once if its client is not connected (it would only
   * queue the command). Commands on one key reach each server in the order they were made: one
   * whose predecessor there has not settled yet (a stalled server, a queued command replayed
   * after a reconnection, a NOSCRIPT retry) waits for it, so that an undo can never run before
   * the acquire it undoes, nor after a later attempt of the same owner.
   */
  private send(index: number, script: Script, name: string, args: string[]): Promise<unknown> {
    const server = this.servers[index]!;
    const run = () => {
      const reason = server.unavailable();
      if (reason !== undefined) throw new Error(reason);
      return runScript(server.driver, script, name, args);
    };
    const queue = this.unsettled[index]!;
    const before = queue.get(name);
    let reply: Promise<unknown>;
    try {
      // Only a release has to wait for a server that is not connected; anything else fails now
      // (a command never sent cannot arrive out of order).
      if (before !== undefined && script !== RELEASE) {
        const reason = server.unavailable();
        if (reason !== undefined) throw new Error(reason);
      }
      reply = before === undefined ? run() : before.then(run);
    } catch (error) {
      return Promise.reject(error);
    }
    const settled: Promise<unknown> = reply.then(noop, noop).then(() => {
      if (queue.get(name) === settled) queue.delete(name);
    });
    queue.set(name, settled);
    return bounded(reply, this.serverTimeoutMs, () => server.unavailable());
  }

  /** Release `owner`'s lease on every server, without waiting for any of them. */
  private undo(key: string, owner: string): void {
    const name = `${leaseKey(key)}:redlock`;
    this.servers.forEach((_, index) => {
      this.send(index, RELEASE, name, [owner, '0']).catch(noop);
    });
  }

  private failure(heard: Heard, operation: string): AggregateError {
    const failures = heard.flatMap((reply, i) =>
      reply?.ok === false ? [{ server: i + 1, error: reply.error }] : [],
    );
    return new AggregateError(
      failures.map((f) => f.error),
      `redlock could not ${operation}: ${failures.length} of ${heard.length} servers failed (${failures
        .map(
          (f) =>
            `server ${f.server}: ${f.error instanceof Error ? f.error.message : String(f.error)}`,
        )
        .join('; ')})`,
    );
  }
}

function noop(): void {}

/** How often a command still waiting for its reply checks that its server is connected. */
const WATCH_MS = 20;

/**
 * `operation`, or a rejection after `ms`, or as soon as `unavailable` gives a reason: a client
 * that loses its server with the command on the wire keeps it to send again after reconnecting,
 * and a vote must not wait for that (the command itself still settles, in order, later).
 */
function bounded<T>(
  operation: Promise<T>,
  ms: number,
  unavailable: () => string | undefined,
): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const deadline = performance.now() + ms;
  const cut = new Promise<never>((_, reject) => {
    const check = () => {
      const reason = unavailable();
      if (reason !== undefined) return reject(new Error(reason));
      const left = deadline - performance.now();
      if (left <= 0) return reject(new Error(`no reply within ${ms} ms`));
      timer = setTimeout(check, Math.min(WATCH_MS, left));
    };
    timer = setTimeout(check, Math.min(WATCH_MS, ms));
  });
  operation.catch(noop);
  return Promise.race([operation, cut]).finally(() => clearTimeout(timer));
}
