import type { Acquired, LeaseInfo, SharedLeases, SharedRequest } from '../store.js';

interface Share {
  expiresAt: number;
  weight: number;
  fence: bigint | undefined;
}

interface Entry {
  /** Live leases by owner, oldest first (a Map keeps insertion order). */
  leases: Map<string, Share>;
  /** Places in line by owner, first come first (a renewal keeps its place). */
  line: Map<string, number>;
  listeners: Set<() => void>;
}

const SWEEP_EVERY = 16;
const SWEEP_BATCH = 64;

/**
 * Weighted leases in this process's memory: an acquisition of `weight` is admitted while the
 * live weights plus its own stay within its `limit` and nobody is ahead of it in line. One
 * engine serves the permits of a semaphore and the readers and writers of a read/write lock,
 * each in a namespace (an instance) of its own.
 */
export class MemoryShared implements SharedLeases {
  readonly #entries = new Map<string, Entry>();
  readonly #now: () => number;
  readonly #nextFence: () => bigint;
  /**
   * The last fence of an acquisition that did not share, per key, for the ones that share it,
   * kept until every lease granted on the key since has run out (a paused holder may still use
   * it), then forgotten so that keys used once do not pile up.
   */
  readonly #lastFence = new Map<string, { fence: bigint | undefined; until: number }>();
  readonly #sharesFences: boolean;
  #sinceSweep = 0;
  #sweeper: Iterator<[string, Entry]> | undefined;
  #fenceSweeper: Iterator<string> | undefined;

  /**
   * `sharesFences`: acquisitions may ask for the last unshared fence (readers), so it is kept
   * per key; a semaphore's namespace keeps nothing once its leases are gone.
   */
  constructor(now: () => number, nextFence: () => bigint, sharesFences: boolean) {
    this.#now = now;
    this.#nextFence = nextFence;
    this.#sharesFences = sharesFences;
  }

  /** Keys whose last unshared fence is still kept. */
  get fences(): number {
    return this.#lastFence.size;
  }

  /** Keys with live leases, places in line or listeners: tests check that none are left. */
  get size(): number {
    const now = this.#now();
    for (const [key, entry] of this.#entries) this.#prune(key, entry, now);
    return this.#entries.size;
  }

  acquire(
    key: string,
    owner: string,
    ttlMs: number,
    request: SharedRequest,
  ): Promise<Acquired | null> {
    const now = this.#now();
    if (++this.#sinceSweep >= SWEEP_EVERY) this.#sweep(now);
    const entry = this.#entry(key);
    this.#prune(key, entry, now, false);
    const mine = entry.leases.get(owner);
    if (mine !== undefined) {
      mine.expiresAt = now + ttlMs;
      this.#keepFence(key, now + ttlMs);
      return Promise.resolve({ fence: mine.fence });
    }
    let used = 0;
    for (const share of entry.leases.values()) used += share.weight;
    const first = entry.line.keys().next();
    const ahead = !first.done && first.value !== owner;
    if (ahead || used + request.weight > request.limit) {
      if (request.lineMs !== undefined) {
        // Renewing keeps the place; only a newcomer goes to the back.
        entry.line.set(owner, now + request.lineMs);
      } else {
        this.#prune(key, entry, now);
      }
      return Promise.resolve(null);
    }
    if (entry.line.delete(owner)) this.#notify(entry); // the next in line may fit too
    let fence: bigint | undefined;
    if (request.shareFence) {
      fence = this.#lastFenceOf(key, now)?.fence;
      this.#keepFence(key, now + ttlMs);
    } else {
      fence = this.#nextFence();
      if (this.#sharesFences) this.#lastFence.set(key, { fence, until: now + ttlMs });
    }
    entry.leases.set(owner, { expiresAt: now + ttlMs, weight: request.weight, fence });
    return Promise.resolve({ fence });
  }

  release(key: string, owner: string, keepMs = 0): Promise<boolean> {
    const entry = this.#entries.get(key);
    if (entry === undefined) return Promise.resolve(false);
    const now = this.#now();
    const left = entry.line.delete(owner);
    const share = entry.leases.get(owner);
    let held = false;
    if (share !== undefined && share.expiresAt > now) {
      held = true;
      if (keepMs > 0) share.expiresAt = now + keepMs;
      else entry.leases.delete(owner);
    } else if (share !== undefined) {
      entry.leases.delete(owner);
    }
    if (left || (held && keepMs <= 0)) this.#notify(entry);
    this.#prune(key, entry, now);
    return Promise.resolve(held);
  }

  extend(key: string, owner: string, ttlMs: number): Promise<boolean> {
    const share = this.#entries.get(key)?.leases.get(owner);
    const now = this.#now();
    if (share === undefined || share.expiresAt <= now) return Promise.resolve(false);
    share.expiresAt = now + ttlMs;
    this.#keepFence(key, now + ttlMs);
    return Promise.resolve(true);
  }

  inspect(key: string): Promise<LeaseInfo[]> {
    const entry = this.#entries.get(key);
    const now = this.#now();
    const live: LeaseInfo[] = [];
    if (entry === undefined) return Promise.resolve(live);
    for (const [owner, share] of entry.leases) {
      if (share.expiresAt <= now) continue;
      const info: LeaseInfo = { owner, ttlMs: share.expiresAt - now };
      if (share.fence !== undefined) info.fence = share.fence;
      live.push(info);
    }
    return Promise.resolve(live);
  }

  onRelease(key: string, listener: () => void): () => void {
    const entry = this.#entry(key);
    entry.listeners.add(listener);
    return () => {
      entry.listeners.delete(listener);
      this.#prune(key, entry, this.#now());
    };
  }

  clear(): void {
    this.#entries.clear();
    this.#lastFence.clear();
  }

  #entry(key: string): Entry {
    let entry = this.#entries.get(key);
    if (entry === undefined) {
      entry = { leases: new Map(), line: new Map(), listeners: new Set() };
      this.#entries.set(key, entry);
    }
    return entry;
  }

  /** The key's kept fence, forgotten here once its term has run out. */
  #lastFenceOf(key: string, now: number) {
    const last = this.#lastFence.get(key);
    if (last !== undefined && last.until <= now) {
      this.#lastFence.delete(key);
      return undefined;
    }
    return last;
  }

  /** Keep the key's fence at least until `until` (a lease granted or extended that long). */
  #keepFence(key: string, until: number): void {
    const last = this.#lastFence.get(key);
    if (last !== undefined && last.until < until) last.until = until;
  }

  /**
   * Drop expired leases and places; a lease or place that ran out lets others in, so waiters
   * hear of it. `drop`: forget the key when nothing is left of it.
   */
  #prune(key: string, entry: Entry, now: number, drop = true): void {
    let freed = false;
    for (const [owner, share] of entry.leases) {
      if (share.expiresAt <= now) {
        entry.leases.delete(owner);
        freed = true;
      }
    }
    for (const [owner, until] of entry.line) {
      if (until <= now) {
        entry.line.delete(owner);
        freed = true;
      }
    }
    if (freed) this.#notify(entry);
    if (
      drop &&
      entry.leases.size === 0 &&
      entry.line.size === 0 &&
      entry.listeners.size === 0 &&
      this.#entries.get(key) === entry
    ) {
      this.#entries.delete(key);
    }
  }

  /** Forget a few keys whose leases all ran out, as acquisitions go by (see `MemoryStore`). */
  #sweep(now: number): void {
    this.#sinceSweep = 0;
    this.#fenceSweeper ??= this.#lastFence.keys();
    for (let i = 0; i < SWEEP_BATCH; i++) {
      const next = this.#fenceSweeper.next();
      if (next.done) {
        this.#fenceSweeper = undefined;
        break;
      }
      this.#lastFenceOf(next.value, now);
    }
    this.#sweeper ??= this.#entries.entries();
    for (let i = 0; i < SWEEP_BATCH; i++) {
      const next = this.#sweeper.next();
      if (next.done) {
        this.#sweeper = undefined;
        return;
      }
      this.#prune(next.value[0], next.value[1], now);
    }
  }

  #notify(entry: Entry): void {
    for (const listener of [...entry.listeners]) listener();
  }
}
