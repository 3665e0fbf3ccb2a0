import type { Handoff } from 'cachelock';
import { lockPrefix, ownerOf } from './keys.js';
import { type Context, isOwners, readTxn } from './leases.js';

type Listener = (handoff?: Handoff) => void;

interface Subscription {
  listeners: Set<Listener>;
  stop: () => void;
  /** A look at the new holder is under way; `again` asks for one more after it. */
  looking: boolean;
  again: boolean;
}

/**
 * Push wake-ups from etcd watches: one watch per key that someone in this process waits for,
 * on deletions under the lock's prefix. A deletion may have handed the lock to the next key in
 * line, so the store reads the oldest key and tells the listeners who holds it now (or that
 * it is free). The watch calls the listeners once it is active, and again after a reconnect,
 * since a release may have happened while it was not.
 */
export class Wakeups {
  readonly #context: Context;
  readonly #subscriptions = new Map<string, Subscription>();

  constructor(context: Context) {
    this.#context = context;
  }

  subscribe(key: string, listener: Listener): () => void {
    let subscription = this.#subscriptions.get(key);
    if (subscription === undefined) {
      const created: Subscription = {
        listeners: new Set(),
        stop: () => {},
        looking: false,
        again: false,
      };
      subscription = created;
      this.#subscriptions.set(key, created);
      created.stop = this.#context.transport.watch(lockPrefix(this.#context.namespace, key), {
        onReady: () => notify(created),
        onDelete: () => this.#look(key, created),
      });
    }
    const subscription_ = subscription;
    subscription_.listeners.add(listener);
    return () => {
      subscription_.listeners.delete(listener);
      if (subscription_.listeners.size === 0 && this.#subscriptions.get(key) === subscription_) {
        this.#subscriptions.delete(key);
        subscription_.stop();
      }
    };
  }

  async #look(key: string, subscription: Subscription): Promise<void> {
    if (subscription.looking) {
      subscription.again = true;
      return;
    }
    subscription.looking = true;
    try {
      do {
        subscription.again = false;
        const prefix = lockPrefix(this.#context.namespace, key);
        let handoff: Handoff | undefined;
        try {
          const holder = (await this.#context.transport.txn(readTxn(prefix))).results[0]?.[0];
          if (holder !== undefined) {
            const owner = ownerOf(holder.value);
            handoff = isOwners(holder, prefix, owner)
              ? { owner, fence: holder.createRevision }
              : { owner: '' };
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
    for (const subscription of this.#subscriptions.values()) subscription.stop();
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
