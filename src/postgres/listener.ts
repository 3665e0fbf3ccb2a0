import type { Notification } from 'pg';
import type { ListenConnection } from './connection.js';

type Listener = () => void;

// Kept open this long after the last waiter leaves, so that a loop of waits does not reconnect
// each time; its socket does not keep the process alive meanwhile.
const IDLE_MS = 2_000;
const RETRY_MIN_MS = 50;
const RETRY_MAX_MS = 2_000;

/**
 * Push wake-ups for one store: a single connection that LISTENs on the store's channel, opened
 * when the first waiter subscribes, re-established if it drops, closed when nobody waits.
 * Each time the LISTEN becomes active, every waiter is called once, so that a release sent while
 * the connection was down (or not yet up) is not missed: the waiter simply tries again.
 */
export class ReleaseListener {
  readonly #open: () => Promise<ListenConnection>;
  readonly #channel: string;
  readonly #waiters = new Map<string, Set<Listener>>();
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

  subscribe(payload: string, listener: Listener): () => void {
    if (this.#closed) return () => {};
    let set = this.#waiters.get(payload);
    if (set === undefined) this.#waiters.set(payload, (set = new Set()));
    set.add(listener);
    clearTimeout(this.#idleTimer);
    this.#idleTimer = undefined;
    this.#ref(true);
    if (this.#state === 'idle' && this.#retryTimer === undefined) void this.#start();
    return () => {
      set.delete(listener);
      if (set.size === 0 && this.#waiters.get(payload) === set) this.#waiters.delete(payload);
      if (this.#waiters.size === 0) this.#idle();
    };
  }

  async close(): Promise<void> {
    this.#closed = true;
    this.#waiters.clear();
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
      if (message.channel !== this.#channel || message.payload === undefined) return;
      const set = this.#waiters.get(message.payload);
      if (set) for (const listener of [...set]) listener();
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
    if (this.#waiters.size === 0) this.#idle();
    for (const set of [...this.#waiters.values()]) for (const listener of [...set]) listener();
  }

  #lost(connection: ListenConnection): void {
    if (this.#connection !== connection) return;
    this.#connection = undefined;
    connection.end().catch(() => undefined);
    this.#retry();
  }

  #retry(): void {
    this.#state = 'idle';
    if (this.#closed || this.#waiters.size === 0) return;
    const delay = Math.min(RETRY_MAX_MS, RETRY_MIN_MS * 2 ** this.#attempt++);
    this.#retryTimer = setTimeout(
      () => {
        this.#retryTimer = undefined;
        if (!this.#closed && this.#waiters.size > 0 && this.#state === 'idle') void this.#start();
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
      if (this.#waiters.size === 0) void this.#drop();
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
