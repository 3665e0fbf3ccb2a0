import type { Handoff } from 'cachelock';
import { lockPrefix, ownerOf } from './keys.js';
import {
  beforeRange,
  type Context,
  cacheKey,
  isOwners,
  learnBefore,
  type Mine,
  readTxn,
} from './leases.js';
import type { Deletion, StopWatch } from './transport.js';

type Listener = (handoff?: Handoff) => void;

const LINGER_MS = 2_000;
// The last deletions kept per watch, for a waiter whose read crossed them (see `recent`).
const RECENT = 64;

interface Subscription {
  listeners: Set<Listener>;
  stop: StopWatch;
  /** Ends the watch a while after its last listener left, unless one comes back. */
  linger: NodeJS.Timeout | undefined;
  /** Whether the watch is active, and how many deletions (and restarts) it has seen. */
  ready: boolean;
  deletions: number;
  /** A look at the new holder is under way; `again` asks for one more after it. */
  looking: boolean;
  again: boolean;
  /** The last deletions seen since the watch became active, oldest first. */
  recent: Deletion[];
}

/**
 * Push wake-ups from etcd watches: one watch per prefix that someone in this process waits for,
 * on deletions under it. Under a lock's prefix a deletion may have handed the lock to the next
 * key in line, so the store reads the oldest key and tells the listeners who holds it now (or
 * that it is free); under a semaphore's or read/write lock's prefix it just wakes them, as who
 * is admitted depends on each waiter's own request. The watch calls the listeners once it is
 * active, and again after a reconnect, since a release may have happened while it was not.
 */
export class Wakeups {
  readonly #context: Context;
  readonly #subscriptions = new Map<string, Subscription>();

  constructor(context: Context) {
    this.#context = context;
  }

  /** Wake `listener` on releases of the lock `key`, with who holds it now. */
  subscribe(key: string, listener: Listener): () => void {
    return this.watch(lockPrefix(this.#context.namespace, key), listener, true);
  }

  /**
   * Wake `listener` on deletions under `prefix`: with `look`, reading the lock's new holder;
   * else on those `worth` says may matter (every one when absent).
   */
  watch(
    prefix: Buffer,
    listener: Listener,
    look = false,
    worth?: (deletion: Deletion) => boolean,
  ): () => void {
    const key = cacheKey(prefix);
    let subscription = this.#subscriptions.get(key);
    if (subscription === undefined) {
      const created: Subscription = {
        listeners: new Set(),
        stop: () => {},
        linger: undefined,
        ready: false,
        deletions: 0,
        looking: false,
        again: false,
        recent: [],
      };
      subscription = created;
      this.#subscriptions.set(key, created);
      created.stop = this.#context.transport.watch(prefix, {
        onReady: () => {
          created.deletions++;
          // What happened while it was not active is unknown: every listener looks again.
          created.recent = [];
          created.ready = true;
          notify(created);
        },
        onDelete: (deletion) => {
          created.deletions++;
          created.recent.push(deletion);
          if (created.recent.length > RECENT) created.recent.shift();
          // A lingering watch only counts: nobody here waits to be told.
          if (created.listeners.size === 0) return;
          // A deletion that leaves the key before each of our waiters in place hands nobody
          // here the lock: no read for it.
          if (look) {
            if (created.looking || !this.#stay(prefix)) void this.#look(prefix, created);
          } else if (worth === undefined || worth(deletion)) notify(created);
        },
        onBroken: () => {
          created.ready = false;
        },
      });
    }
    const subscription_ = subscription;
    if (subscription_.linger !== undefined) {
      clearTimeout(subscription_.linger);
      subscription_.linger = undefined;
      subscription_.stop.hold?.(true);
    }
    subscription_.listeners.add(listener);
    return () => {
      subscription_.listeners.delete(listener);
      if (subscription_.listeners.size > 0 || subscription_.linger !== undefined) return;
      // A key waited for once is often waited for again soon (a busy key, a loop): keep its
      // watch a little, so that the next wait neither sets one up nor misses a release. Nobody
      // waits meanwhile: a script that has nothing else to do ends.
      subscription_.stop.hold?.(false);
      subscription_.linger = setTimeout(() => {
        subscription_.linger = undefined;
        if (subscription_.listeners.size > 0) return;
        if (this.#subscriptions.get(key) === subscription_) this.#subscriptions.delete(key);
        subscription_.stop();
      }, LINGER_MS);
      subscription_.linger.unref();
    };
  }

  /**
   * The deletions under `prefix` since the watch became active, the last `RECENT` of them, and
   * whether that is all of them; undefined while no watch is active.
   */
  recent(prefix: Buffer): { deletions: readonly Deletion[]; complete: boolean } | undefined {
    const subscription = this.#subscriptions.get(cacheKey(prefix));
    if (!subscription?.ready) return undefined;
    return {
      deletions: subscription.recent,
      complete: subscription.recent.length < RECENT,
    };
  }

  /** See `Context.behind`. */
  behind(prefix: Buffer, mine: Mine): boolean {
    const subscription = this.#subscriptions.get(cacheKey(prefix));
    const before = mine.before;
    if (!subscription?.ready || before === undefined) return false;
    // The deletions since the read that found that key are the last `since` seen, unless the
    // watch restarted meanwhile (which counts one and forgets the rest) or more went by.
    const since = subscription.deletions - before.seen;
    const { recent } = subscription;
    if (since > recent.length) return false;
    for (let i = recent.length - since; i < recent.length; i++) {
      const previous = recent[i]!.previous;
      if (previous === undefined || previous.createRevision === before.createRevision) {
        return false;
      }
    }
    return true;
  }

  /** Whether this store has waiters under `prefix` and each still has its key before it. */
  #stay(prefix: Buffer): boolean {
    const head = cacheKey(prefix);
    let waiters = 0;
    for (const [id, mine] of this.#context.mine) {
      if (!mine.waiting || !id.startsWith(head)) continue;
      if (mine.handed || !this.behind(prefix, mine)) return false;
      waiters++;
    }
    return waiters > 0;
  }

  /** See `Context.deletions`. */
  deletions(prefix: Buffer): number | undefined {
    const subscription = this.#subscriptions.get(cacheKey(prefix));
    return subscription?.ready ? subscription.deletions : undefined;
  }

  /** This store's first waiter in line under `prefix` not yet handed the lock. */
  #waiter(prefix: Buffer): Mine | undefined {
    const head = cacheKey(prefix);
    for (const [id, mine] of this.#context.mine) {
      if (mine.waiting && !mine.handed && id.startsWith(head)) return mine;
    }
    return undefined;
  }

  async #look(prefix: Buffer, subscription: Subscription): Promise<void> {
    if (subscription.looking) {
      subscription.again = true;
      return;
    }
    subscription.looking = true;
    try {
      do {
        subscription.again = false;
        const seen = subscription.ready ? subscription.deletions : undefined;
        let handoff: Handoff | undefined;
        try {
          const readAt = performance.now();
          // Our waiter here, if any: the read also finds the key before it in line.
          const waiter = this.#waiter(prefix);
          const txn = readTxn(prefix);
          if (waiter !== undefined) txn.success.push(beforeRange(prefix, waiter.createRevision));
          const read = await this.#context.transport.txn(txn);
          const holder = read.results[0]?.[0];
          if (waiter !== undefined) learnBefore(waiter, read.results[1]?.[0], seen);
          if (holder !== undefined) {
            const owner = ownerOf(holder.value);
            handoff = isOwners(holder, prefix, owner)
              ? { owner, fence: holder.createRevision }
              : { owner: '' };
            // One of this store's waiters: its confirming acquire can skip reading this again.
            const mine = this.#context.mine.get(cacheKey(holder.key));
            if (mine?.waiting && mine.createRevision === holder.createRevision) {
              mine.handed = true;
              // Its key is the oldest and nobody can get before it, so it holds while its line
              // lease lives: at least until the lease's last renewal plus its TTL. Counted from
              // its last attempt, that is the claim, unless an attempt went out after this read.
              const { triedAt } = mine;
              if (triedAt !== undefined && triedAt <= readAt && mine.granted > 0) {
                const claimMs = mine.renewedAt + mine.granted * 1000 - triedAt;
                if (claimMs > 0) handoff.ttlMs = claimMs;
              }
            }
            // This read is as good as each of our other waiters' own: still not their turn.
            const head = prefix.toString('latin1');
            for (const [id, waiter] of this.#context.mine) {
              if (waiter.waiting && waiter !== mine && id.startsWith(head)) waiter.seen = seen;
            }
          }
        } catch {
          // Could not tell who holds it: let every waiter try.
        }
        notify(subscription, handoff);
      } while (subscription.again);
    } finally {
      subscription.looking = false;
    }
  }

  close(): void {
    for (const subscription of this.#subscriptions.values()) {
      subscription.ready = false;
      clearTimeout(subscription.linger);
      subscription.stop();
    }
    this.#subscriptions.clear();
  }
}

function notify(subscription: Subscription, handoff?: Handoff): void {
  for (const listener of [...subscription.listeners]) {
    try {
      listener(handoff);
    } catch {}
  }
}
