import type { Notification } from 'pg';
import type { ListenConnection } from './connection.js';

/** Called with what the NOTIFY said after the key's id (a hand-off), or nothing (freed). */
type Listener = (message?: string) => void;

interface Key {
  listeners: Set<Listener>;
  /**
   * The last few wake-ups of the key, each with when it came, told again to a listener that
   * comes in shortly after them: a waiter whose try joined the line listens only once its reply
   * is in, and the hand-off to it (or the release that freed the key before it joined) may have
   * come over the LISTEN connection first.
   */
  recent: { at: number; message: string | undefined }[];
  /** Forgets the key a while after its last listener left; set while nobody listens. */
  linger: NodeJS.Timeout | undefined;
}

// Kept open this long after the last waiter leaves, so that a loop of waits does not reconnect
// each time; its socket does not keep the process alive meanwhile.
const IDLE_MS = 2_000;
const RETRY_MIN_MS = 50;
const RETRY_MAX_MS = 2_000;
/** How many wake-ups a key keeps, and for how long, for listeners that come in after them. */
const RECENT = 4;
const RECENT_MS = 2_000;
/** How long a key's wake-ups are still kept after its last listener left, for the next waiter. */
const LINGER_MS = 1_000;

/**
 * Push wake-ups for one store: a single connection that LISTENs on the store's channel, opened
 * when the first waiter subscribes, re-established if it drops, closed when nobody waits. A
 * NOTIFY's payload is the key's id, then after a space what a hand-off says.
 * Each time the LISTEN becomes active, every waiter is called once, so that a release sent while
 * the connection was down (or not yet up) is not missed: the waiter simply tries again. A waiter
 * that subscribes later is told the key's recent wake-ups, or called once when the key's
 * wake-ups were not being kept (nobody had listened for it lately).
 */
export class ReleaseListener {
  readonly #open: () => Promise<ListenConnection>;
  readonly #channel: string;
  readonly #keys = new Map<string, Key>();
  /** How many keys have listeners. */
  #listened = 0;
  #connection: ListenConnection | undefined;
  #state: 'idle' | 'connecting' | 'listening' = 'idle';
  #attempt = 0;
  // Bumped whenever a connection being opened stops being wanted.
  #generation = 0;
  #retryTimer: NodeJS.Timeout | undefined;
  #idleTimer: NodeJS.Timeout | undefined;
  #closed = false;

  /** `open` resolves to a connected connection of the listener's own, which it ends. */
  constructor(open: () => Promise<ListenConnection>, channel: string) {
    this.#open = open;
    this.#channel = channel;
  }

  /** Whether the LISTEN is active now (for tests and diagnostics). */
  get listening(): boolean {
    return this.#state === 'listening';
  }

  subscribe(id: string, listener: Listener): () => void {
    if (this.#closed) return () => {};
    let key = this.#keys.get(id);
    const kept = key !== undefined;
    if (key === undefined) {
      key = { listeners: new Set(), recent: [], linger: undefined };
      this.#keys.set(id, key);
    }
    const current = key;
    clearTimeout(key.linger);
    key.linger = undefined;
    if (key.listeners.size === 0) this.#listened++;
    key.listeners.add(listener);
    clearTimeout(this.#idleTimer);
    this.#idleTimer = undefined;
    this.#ref(true);
    if (this.#state === 'idle' && this.#retryTimer === undefined) void this.#start();
    else if (this.#state === 'listening') {
      // Told after `subscribe` has returned, never from inside it: a listener may end its own
      // subscription with the function about to be returned.
      const since = performance.now() - RECENT_MS;
      const missed = kept ? key.recent.filter((wake) => wake.at >= since) : [undefined];
      if (missed.length > 0) queueMicrotask(() => replay(current, listener, missed));
    }
    return () => {
      if (!current.listeners.delete(listener) || current.listeners.size > 0) return;
      this.#listened--;
      if (this.#keys.get(id) === current) {
        current.linger = setTimeout(() => {
          if (current.listeners.size === 0 && this.#keys.get(id) === current) this.#keys.delete(id);
        }, LINGER_MS);
        current.linger.unref();
      }
      if (this.#listened === 0) this.#idle();
    };
  }

  /** A NOTIFY's payload, as it came or as a release in this process made it. */
  tell(payload: string): void {
    const space = payload.indexOf(' ');
    const id = space < 0 ? payload : payload.slice(0, space);
    const key = this.#keys.get(id);
    if (key === undefined) return;
    const message = space < 0 ? undefined : payload.slice(space + 1);
    key.recent.push({ at: performance.now(), message });
    if (key.recent.length > RECENT) key.recent.shift();
    for (const listener of [...key.listeners]) listener(message);
  }

  async close(): Promise<void> {
    this.#closed = true;
    for (const key of this.#keys.values()) clearTimeout(key.linger);
    this.#keys.clear();
    this.#listened = 0;
    clearTimeout(this.#retryTimer);
    clearTimeout(this.#idleTimer);
    await this.#drop();
  }

  async #start(): Promise<void> {
    this.#state = 'connecting';
    const generation = ++this.#generation;
    let connection: ListenConnection;
    try {
      connection = await this.#open();
    } catch {
      if (generation === this.#generation) this.#retry();
      return;
    }
    // Closed, idle or started anew while it connected: this connection is not wanted.
    if (generation !== this.#generation || this.#closed) {
      connection.end().catch(() => undefined);
      return;
    }
    this.#connection = connection;
    connection.on('error', () => this.#lost(connection));
    connection.on('end', () => this.#lost(connection));
    connection.on('notification', (message: Notification) => {
      if (message.channel === this.#channel && message.payload !== undefined) {
        this.tell(message.payload);
      }
    });
    try {
      await connection.query(`LISTEN "${this.#channel}"`);
    } catch {
      this.#lost(connection);
      return;
    }
    if (this.#connection !== connection) return;
    this.#state = 'listening';
    this.#attempt = 0;
    if (this.#listened === 0) this.#idle();
    for (const key of [...this.#keys.values()]) {
      for (const listener of [...key.listeners]) listener();
    }
  }

  #lost(connection: ListenConnection): void {
    if (this.#connection !== connection) return;
    this.#connection = undefined;
    connection.end().catch(() => undefined);
    this.#retry();
  }

  #retry(): void {
    this.#state = 'idle';
    if (this.#closed || this.#listened === 0) return;
    const delay = Math.min(RETRY_MAX_MS, RETRY_MIN_MS * 2 ** this.#attempt++);
    this.#retryTimer = setTimeout(
      () => {
        this.#retryTimer = undefined;
        if (!this.#closed && this.#listened > 0 && this.#state === 'idle') void this.#start();
      },
      delay * (0.5 + Math.random() / 2),
    );
    this.#retryTimer.unref();
  }

  #idle(): void {
    clearTimeout(this.#retryTimer);
    this.#retryTimer = undefined;
    clearTimeout(this.#idleTimer);
    this.#ref(false);
    this.#idleTimer = setTimeout(() => {
      this.#idleTimer = undefined;
      if (this.#listened === 0) void this.#drop();
    }, IDLE_MS);
    this.#idleTimer.unref();
  }

  async #drop(): Promise<void> {
    // An idle socket is unreferenced; referenced again, the process waits for the goodbye.
    this.#ref(true);
    const connection = this.#connection;
    this.#connection = undefined;
    this.#state = 'idle';
    // A connection still being opened is ended when it arrives.
    this.#generation++;
    if (connection) await connection.end().catch(() => undefined);
  }

  // pg keeps its socket on `connection.stream`; an idle listener must not hold the process open.
  #ref(active: boolean): void {
    const stream = (
      this.#connection as { connection?: { stream?: { ref?(): void; unref?(): void } } } | undefined
    )?.connection?.stream;
    if (active) stream?.ref?.();
    else stream?.unref?.();
  }
}

/** Tell `listener` the wake-ups it came in after, while it still listens. */
function replay(
  key: Key,
  listener: Listener,
  messages: readonly (Key['recent'][number] | undefined)[],
) {
  for (const wake of messages) {
    if (!key.listeners.has(listener)) return;
    listener(wake?.message);
  }
}
