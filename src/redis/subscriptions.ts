import type { Subscriber } from './driver.js';
import { parseWake, wakeChannel } from './keys.js';

/** Called with the message as published (a hand-off, the next in line), or none. */
type Listener = (message?: string) => void;

interface Channel {
  listeners: Set<Listener>;
  /**
   * The last few wake-ups (each names a waiter), told again to a listener that comes in later:
   * a waiter whose try joined the line listens only once its reply is in, and the wake-up
   * naming it may have come over the subscriber connection first.
   */
  recent: string[];
  /** Ends the subscription after it has been idle a while; set while nobody listens. */
  linger: NodeJS.Timeout | undefined;
}

/**
 * Every listener in this process by channel, whichever store it listens through: a release's
 * reply names the waiter it handed the key to, and when that waiter is here it can be told at
 * once rather than after the message comes round. Owners are unique and a waiter's owner is
 * only ever sent to its own server, so a hand-off can only name a waiter of the server that
 * made it; the others on the channel see an owner that is not theirs and ignore it.
 */
const here = new Map<string, Set<Listener>>();

/** A release in this process handed `channel`'s key on (`message` as published). */
export function handedOff(channel: string, message: string): void {
  const listeners = here.get(channel);
  if (listeners !== undefined) notify(listeners, message);
}

/** How many wake-ups a channel keeps for listeners that come in after them. */
const RECENT = 4;
/** How long a channel stays subscribed after its last listener left, for the next waiter. */
const CHANNEL_LINGER_MS = 1_000;
/** How long the subscriber connection stays open with no channel at all. */
const CONNECTION_IDLE_MS = 5_000;

/**
 * Release wake-ups over one subscriber connection per store, opened when someone first waits.
 * Each channel is subscribed once however many waiters in this process listen on it. A channel
 * whose last listener left stays subscribed for a moment, because a worker that just took the
 * lock often waits for it again soon, and a fresh SUBSCRIBE costs a round trip and a retry; the
 * connection itself closes when no channel has been in use for a few seconds.
 */
export class ReleaseSubscriptions {
  private subscriber: Subscriber | undefined;
  private readonly channels = new Map<string, Channel>();
  private idle: NodeJS.Timeout | undefined;
  /** This store's own channel, where releases hand its waiters a key (see `wakeChannel`). */
  private readonly wake = wakeChannel();

  constructor(private readonly open: () => Subscriber) {}

  /**
   * The channel for a waiter to leave in line, while the connection that listens on it is
   * open, else '' (the hand-off then comes on the key's channel). It is subscribed before any
   * key's channel on the same connection, so by the time a key's subscription is confirmed
   * and its listeners retry, hand-offs to it arrive.
   */
  wakeChannel(): string {
    return this.subscriber === undefined ? '' : this.wake;
  }

  listen(channel: string, listener: Listener): () => void {
    let entry = this.channels.get(channel);
    if (entry === undefined) {
      entry = { listeners: new Set(), recent: [], linger: undefined };
      this.channels.set(channel, entry);
      const subscribing = entry;
      // Until SUBSCRIBE is confirmed a release can slip by unseen, so every listener that came
      // in meanwhile is called once then; on failure too, so that they retry (and poll).
      this.connection()
        .subscribe(channel)
        .then(
          () => notify(subscribing.listeners),
          () => notify(subscribing.listeners),
        );
    }
    if (entry.linger !== undefined) {
      clearTimeout(entry.linger);
      entry.linger = undefined;
    }
    entry.listeners.add(listener);
    const current = entry;
    if (entry.recent.length > 0) {
      // Told after `listen` has returned, never from inside it: a listener may end its own
      // subscription with the function `listen` is about to return (until then unassigned).
      const missed = [...entry.recent];
      queueMicrotask(() => replay(current.listeners, listener, missed));
    }
    let local = here.get(channel);
    if (local === undefined) here.set(channel, (local = new Set()));
    local.add(listener);
    return () => {
      if (local.delete(listener) && local.size === 0 && here.get(channel) === local) {
        here.delete(channel);
      }
      if (!current.listeners.delete(listener) || current.listeners.size > 0) return;
      if (this.channels.get(channel) !== current) return;
      current.linger = setTimeout(() => this.drop(channel, current), CHANNEL_LINGER_MS);
      current.linger.unref();
    };
  }

  async close(): Promise<void> {
    for (const entry of this.channels.values()) clearTimeout(entry.linger);
    this.channels.clear();
    clearTimeout(this.idle);
    const subscriber = this.subscriber;
    this.subscriber = undefined;
    await subscriber?.close();
  }

  private drop(channel: string, entry: Channel): void {
    if (this.channels.get(channel) !== entry || entry.listeners.size > 0) return;
    this.channels.delete(channel);
    this.subscriber?.unsubscribe(channel).catch(() => {});
    if (this.channels.size === 0) {
      clearTimeout(this.idle);
      this.idle = setTimeout(() => {
        if (this.channels.size > 0) return;
        const subscriber = this.subscriber;
        this.subscriber = undefined;
        subscriber?.close().catch(() => {});
      }, CONNECTION_IDLE_MS);
      this.idle.unref();
    }
  }

  private connection(): Subscriber {
    clearTimeout(this.idle);
    if (this.subscriber === undefined) {
      const subscriber = this.open();
      subscriber.listen((channel, message) => {
        if (channel === undefined) {
          for (const entry of this.channels.values()) notify(entry.listeners);
        } else if (channel !== this.wake) {
          this.deliver(channel, message);
        } else if (message) {
          const wake = parseWake(message);
          if (wake !== undefined) this.deliver(wake[0], wake[1]);
        }
      });
      this.subscriber = subscriber;
      // On failure nothing is lost: hand-offs to a channel nobody hears are confirmed by the
      // waiter's next try (as when a key's own subscription fails).
      subscriber.subscribe(this.wake).catch(() => {});
    }
    return this.subscriber;
  }

  /** A message on a key's channel, or one for it on the wake channel. */
  private deliver(channel: string, message: string | undefined): void {
    const entry = this.channels.get(channel);
    if (entry === undefined) return;
    if (message) {
      entry.recent.push(message);
      if (entry.recent.length > RECENT) entry.recent.shift();
    }
    notify(entry.listeners, message || undefined);
  }
}

/** Tell `listener` the wake-ups it came in after, while it still listens. */
function replay(listeners: Set<Listener>, listener: Listener, messages: readonly string[]): void {
  for (const message of messages) {
    if (!listeners.has(listener)) return;
    try {
      listener(message);
    } catch {
      // As in notify.
    }
  }
}

function notify(listeners: Set<Listener>, message?: string): void {
  for (const listener of [...listeners]) {
    try {
      listener(message);
    } catch {
      // A waiter's own failure must not keep the others asleep.
    }
  }
}
