import type { Opener, Session } from './connection.js';

type Listener = () => void;

/** How long a waiter's GET_LOCK blocks before it asks again (seconds). */
const WAIT_S = 2;
/** The most sessions one store blocks in GET_LOCK at once; more waited keys are polled. */
const MAX_WAITING = 8;
/** Idle sessions are closed after this long, so that a loop of waits does not reconnect. */
const IDLE_MS = 2_000;
/** A holder's wake-up lock is kept this much past its lease, so that a waiter finds it expired. */
const SLACK_MS = 5;
const RETRY_MIN_MS = 10;
const RETRY_MAX_MS = 1_000;
/** The slowest back-off for waiters blocked by more leases than they have bells for. */
const GROUP_POLL_MAX_MS = 200;

// A waiter holds the name for an instant when it is rung: the holder queues behind it briefly
// rather than failing and leaving the key without its bell.
const TAKE = 'SELECT GET_LOCK(?, 1) AS got';
const GIVE = 'SELECT RELEASE_LOCK(?) AS freed';
// Block until the holder lets go, then let go at once: the named lock only ever rings a bell.
// IS_FREE_LOCK first tells a real wait from a lock nobody held.
const WAIT = 'SELECT IS_FREE_LOCK(?) AS was_free, GET_LOCK(?, ?) AS got, RELEASE_LOCK(?) AS freed';

interface Held {
  /** Each owner of this process holding the key, with the timer that ends its lease here. */
  owners: Map<string, NodeJS.Timeout>;
}

/** Waiters on a key that several may hold at once: woken by any bell of what blocked them. */
interface Group {
  listeners: Set<Listener>;
  /** The bells of the leases and places that stood in the way at the last refusal. */
  bells: Map<string, () => void>;
  /** More stood in the way than have bells here: also ring with back-off. */
  poll: NodeJS.Timeout | undefined;
  pollStreak: number;
}

interface Waited {
  listeners: Set<Listener>;
  armed: boolean;
  /** How many waits in a row found the named lock free (no holder rang it). */
  freeStreak: number;
  retry: NodeJS.Timeout | undefined;
}

/**
 * Push wake-ups without LISTEN/NOTIFY, on named locks (GET_LOCK) the store takes on connections
 * of its own. While this process holds a key, one session holds the key's named lock; a waiter
 * blocks in GET_LOCK on the same name on another session and returns as soon as the holder lets
 * go (a release, the end of its lease here, or its connection dropping). The table stays the
 * only truth: a wake-up only makes the waiter try `acquire` again, and a waiter whose wait finds
 * no holder falls back to the core's polling rather than spinning. Keys that several may hold
 * at once give each lease and each place in line a name of its own; their waiters `listen` and
 * wait on the names of what blocked them (`blockedBy`).
 */
export class Wakeups {
  readonly #open: Opener;
  // Holder side: one session, driven to match `#held` one named lock at a time.
  readonly #held = new Map<string, Held>();
  readonly #taken = new Set<string>();
  #holder: Session | undefined;
  #holderOpening: Promise<Session | undefined> | undefined;
  #chain: Promise<void> = Promise.resolve();
  #holderRetry: NodeJS.Timeout | undefined;
  #holderAttempt = 0;
  #holderIdle: NodeJS.Timeout | undefined;
  // Waiter side.
  readonly #waited = new Map<string, Waited>();
  readonly #groups = new Map<string, Group>();
  readonly #idle: Session[] = [];
  readonly #inUse = new Set<Session>();
  #busy = 0;
  #idleTimer: NodeJS.Timeout | undefined;
  #closed = false;

  constructor(open: Opener) {
    this.#open = open;
  }

  // ---- holder side ----

  /** `owner` holds the key of lock `name` for `ttlMs` (a new lease or a refreshed one). */
  held(name: string, owner: string, ttlMs: number): void {
    if (this.#closed) return;
    let entry = this.#held.get(name);
    if (entry === undefined) this.#held.set(name, (entry = { owners: new Map() }));
    clearTimeout(entry.owners.get(owner));
    const timer = setTimeout(() => this.let(name, owner), ttlMs + SLACK_MS);
    timer.unref();
    entry.owners.set(owner, timer);
    this.#sync(name);
  }

  /** `owner` let the key go (or lost it): ring the bell once nobody here holds it. */
  let(name: string, owner: string): void {
    const entry = this.#held.get(name);
    if (entry === undefined || !entry.owners.has(owner)) return;
    clearTimeout(entry.owners.get(owner));
    entry.owners.delete(owner);
    if (entry.owners.size === 0) this.#held.delete(name);
    this.#sync(name);
  }

  /** Bring the server's named lock `name` in line with `#held`, after what is queued. */
  #sync(name: string): void {
    this.#chain = this.#chain.then(() => this.#syncNow(name)).catch(() => undefined);
  }

  async #syncNow(name: string): Promise<void> {
    const want = this.#held.has(name);
    if (want === this.#taken.has(name)) return;
    if (!want && this.#holder === undefined) {
      this.#taken.delete(name);
      return;
    }
    const session = await this.#holderSession();
    if (session === undefined) return;
    if (want) {
      const [row] = await session.select(TAKE, [name]);
      if (Number(row?.got) === 1) {
        this.#taken.add(name);
        this.#holderAttempt = 0;
      } else {
        // Held by someone else all along (a stalled process that lost the key): try later.
        this.#scheduleHolderRetry();
      }
    } else {
      await session.select(GIVE, [name]);
      this.#taken.delete(name);
    }
    this.#holderIdleCheck();
  }

  async #holderSession(): Promise<Session | undefined> {
    if (this.#holder !== undefined) return this.#holder;
    this.#holderOpening ??= this.#open().then(
      (session) => {
        this.#holderOpening = undefined;
        if (this.#closed) {
          void session.close();
          return undefined;
        }
        this.#holder = session;
        this.#holderAttempt = 0;
        session.onLost(() => {
          if (this.#holder !== session) return;
          // The server let go of every named lock of this session: take them again.
          this.#holder = undefined;
          this.#taken.clear();
          if (this.#held.size > 0) this.#scheduleHolderRetry();
        });
        return session;
      },
      () => {
        this.#holderOpening = undefined;
        this.#scheduleHolderRetry();
        return undefined;
      },
    );
    return this.#holderOpening;
  }

  #scheduleHolderRetry(): void {
    if (this.#closed || this.#holderRetry !== undefined) return;
    const delay = Math.min(RETRY_MAX_MS, RETRY_MIN_MS * 2 ** this.#holderAttempt++);
    this.#holderRetry = setTimeout(() => {
      this.#holderRetry = undefined;
      for (const name of new Set([...this.#held.keys(), ...this.#taken])) this.#sync(name);
    }, delay);
    this.#holderRetry.unref();
  }

  // Holding nothing for a while: close the holder's session; holding, keep its socket referenced
  // only as long as a lease is held (the lease timers are unreferenced).
  #holderIdleCheck(): void {
    clearTimeout(this.#holderIdle);
    if (this.#taken.size > 0 || this.#held.size > 0) {
      this.#holder?.ref(false);
      return;
    }
    this.#holder?.ref(false);
    this.#holderIdle = setTimeout(() => {
      this.#chain = this.#chain.then(async () => {
        if (this.#held.size > 0 || this.#taken.size > 0) return;
        const session = this.#holder;
        this.#holder = undefined;
        await session?.close();
      });
    }, IDLE_MS);
    this.#holderIdle.unref();
  }

  // ---- waiter side ----

  subscribe(name: string, listener: Listener): () => void {
    if (this.#closed) return () => {};
    let waited = this.#waited.get(name);
    if (waited === undefined) {
      waited = { listeners: new Set(), armed: false, freeStreak: 0, retry: undefined };
      this.#waited.set(name, waited);
    }
    waited.listeners.add(listener);
    const entry = waited;
    this.#arm(name, entry);
    return () => {
      entry.listeners.delete(listener);
      if (entry.listeners.size === 0 && this.#waited.get(name) === entry) {
        clearTimeout(entry.retry);
        this.#waited.delete(name);
      }
    };
  }

  /** An acquisition of `name`'s key was refused: wait for its holder again. */
  refused(name: string): void {
    const waited = this.#waited.get(name);
    if (waited !== undefined) this.#arm(name, waited);
  }

  /**
   * Listen on a key that several may hold at once (permits, readers and writers), where each
   * lease and each place in line has a bell of its own: `listener` is called when any bell that
   * `blockedBy` named for `group` rings, through the same waits as `subscribe`.
   */
  listen(group: string, listener: Listener): () => void {
    if (this.#closed) return () => {};
    let entry = this.#groups.get(group);
    if (entry === undefined) {
      entry = { listeners: new Set(), bells: new Map(), poll: undefined, pollStreak: 0 };
      this.#groups.set(group, entry);
    }
    entry.listeners.add(listener);
    const mine = entry;
    return () => {
      mine.listeners.delete(listener);
      if (mine.listeners.size > 0 || this.#groups.get(group) !== mine) return;
      this.#groups.delete(group);
      this.#drop(mine);
    };
  }

  /**
   * An acquisition in `group` was refused, blocked by the leases and places whose bells are
   * `names` (and by more, unwatched, when `partial`): wait for any of them to ring.
   */
  blockedBy(group: string, names: readonly string[], partial: boolean): void {
    const entry = this.#groups.get(group);
    if (entry === undefined || this.#closed) return;
    const wanted = new Set(names);
    for (const [name, off] of entry.bells) {
      if (wanted.has(name)) continue;
      off();
      entry.bells.delete(name);
    }
    for (const name of wanted) {
      const off = entry.bells.get(name);
      if (off !== undefined) this.refused(name);
      else
        entry.bells.set(
          name,
          this.subscribe(name, () => this.#ringGroup(entry)),
        );
    }
    // A lease without a bell here ends unheard: try again later and later, as polling would.
    if (!partial) {
      entry.pollStreak = 0;
      return;
    }
    if (entry.poll !== undefined) return;
    const delay = Math.min(GROUP_POLL_MAX_MS, RETRY_MIN_MS * 2 ** entry.pollStreak++);
    entry.poll = setTimeout(() => {
      entry.poll = undefined;
      if (this.#groups.get(group) === entry) this.#ringGroup(entry);
    }, delay);
    entry.poll.unref();
  }

  #ringGroup(entry: Group): void {
    for (const listener of [...entry.listeners]) listener();
  }

  #drop(entry: Group): void {
    clearTimeout(entry.poll);
    for (const off of entry.bells.values()) off();
    entry.bells.clear();
  }

  #arm(name: string, waited: Waited): void {
    if (waited.armed || waited.retry !== undefined || this.#closed) return;
    waited.armed = true;
    void this.#wait(name, waited);
  }

  async #wait(name: string, waited: Waited): Promise<void> {
    let session: Session | undefined;
    let outcome: 'rang' | 'free' | 'timeout' | 'failed' = 'failed';
    try {
      session = await this.#waiterSession();
    } catch {
      session = undefined;
    }
    if (session !== undefined) {
      try {
        const [row] = await session.select(WAIT, [name, name, WAIT_S, name]);
        if (Number(row?.got) !== 1) outcome = 'timeout';
        else outcome = Number(row?.was_free) === 1 ? 'free' : 'rang';
      } catch {
        session.destroy(); // a failed session is not reused
      }
      this.#putBack(session, outcome === 'failed');
    }
    waited.armed = false;
    if (this.#waited.get(name) !== waited) return;
    if (outcome === 'rang') {
      waited.freeStreak = 0;
      this.#ring(waited);
      return; // the waiter tries again; a refusal arms the next wait
    }
    if (outcome === 'timeout') {
      this.#arm(name, waited);
      return;
    }
    // Found free: the holder let go just before, or holds the key without its named lock (its
    // session is down, or it is a process without wake-ups). Ring at once the first time and
    // then later and later, so that the second case costs a poll with back-off, not a spin.
    // Without a session (at the cap, or the server unreachable) the same applies.
    const delay =
      waited.freeStreak === 0
        ? 0
        : Math.min(RETRY_MAX_MS, RETRY_MIN_MS * 2 ** (waited.freeStreak - 1));
    waited.freeStreak++;
    if (delay === 0) {
      this.#ring(waited);
      return;
    }
    waited.retry = setTimeout(() => {
      waited.retry = undefined;
      if (this.#waited.get(name) === waited) this.#ring(waited);
    }, delay);
    waited.retry.unref();
  }

  #ring(waited: Waited): void {
    for (const listener of [...waited.listeners]) listener();
  }

  async #waiterSession(): Promise<Session | undefined> {
    const idle = this.#idle.pop();
    if (idle !== undefined) {
      this.#busy++;
      this.#inUse.add(idle);
      idle.ref(true);
      return idle;
    }
    if (this.#busy >= MAX_WAITING) return undefined;
    this.#busy++;
    try {
      const session = await this.#open();
      let lost = false;
      session.onLost(() => {
        lost = true;
        const index = this.#idle.indexOf(session);
        if (index >= 0) this.#idle.splice(index, 1);
      });
      (session as Session & { lost?: () => boolean }).lost = () => lost;
      if (this.#closed) session.destroy();
      this.#inUse.add(session);
      return session;
    } catch (error) {
      this.#busy--;
      throw error;
    }
  }

  #putBack(session: Session, failed: boolean): void {
    this.#busy--;
    this.#inUse.delete(session);
    if (failed || this.#closed || (session as Session & { lost?: () => boolean }).lost?.()) {
      void session.close();
      return;
    }
    session.ref(false);
    this.#idle.push(session);
    clearTimeout(this.#idleTimer);
    this.#idleTimer = setTimeout(() => {
      this.#idleTimer = undefined;
      for (const s of this.#idle.splice(0)) void s.close();
    }, IDLE_MS);
    this.#idleTimer.unref();
  }

  async close(): Promise<void> {
    this.#closed = true;
    for (const group of this.#groups.values()) this.#drop(group);
    this.#groups.clear();
    for (const waited of this.#waited.values()) clearTimeout(waited.retry);
    this.#waited.clear();
    for (const entry of this.#held.values())
      for (const timer of entry.owners.values()) clearTimeout(timer);
    this.#held.clear();
    clearTimeout(this.#holderRetry);
    clearTimeout(this.#holderIdle);
    clearTimeout(this.#idleTimer);
    // Waits blocked in GET_LOCK end with their connections.
    for (const session of this.#inUse) session.destroy();
    await this.#chain;
    await this.#holderOpening;
    const holder = this.#holder;
    this.#holder = undefined;
    this.#taken.clear();
    await Promise.all([holder?.close(), ...this.#idle.splice(0).map((s) => s.close())]);
  }
}
