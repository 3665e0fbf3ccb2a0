import { performance } from 'node:perf_hooks';
import {
  type Acquired,
  type AcquiredKeys,
  IMMEDIATE,
  type Immediate,
  type LeaseInfo,
  type LockStore,
  type ManyKeys,
  type StoreCapabilities,
} from '../store.js';
import { MemoryShared } from './shared.js';

export interface MemoryStoreOptions {
  /**
   * The clock leases are judged by, in milliseconds. Tests inject one. Default
   * `performance.now()`: monotonic, so a step of the wall clock neither ends nor stretches a
   * lease.
   */
  now?: () => number;
}

// The clock the core reads its own times from (a test may replace the global `performance`).
const monotonic = () => performance.now();

interface Lease {
  owner: string;
  expiresAt: number;
  fence: bigint;
}

type Listener = () => void;

// Expired leases are swept a few at a time as acquisitions go by, so keys that were used
// once do not accumulate, without a timer per key. Each sweep looks at more entries than
// acquisitions went by since the last one (each adds at most one), so the sweeps outpace any
// stream of new keys and the map stays near the number of live leases.
const SWEEP_EVERY = 16;
const SWEEP_BATCH = 64;

/**
 * Locks in this process's memory: atomic within the process, nothing shared with others.
 * The default cache when nothing else is configured.
 */
export class MemoryStore implements LockStore {
  readonly kind = 'memory';
  readonly atomic = true;
  readonly #leases = new Map<string, Lease>();
  /** A key's listener as is when it has one (one waiter per key listens in a process), else a Set. */
  readonly #listeners = new Map<string, Listener | Set<Listener>>();
  readonly #now: () => number;
  /** The clock is `performance.now()`, so a caller's reading of it serves. */
  readonly #monotonic: boolean;
  // One counter for every key: strictly increasing per key with nothing kept per key.
  #fence = 0n;
  #sinceSweep = 0;
  #sweeper: Iterator<[string, Lease]> | undefined;

  /** Several keys at once, permits, readers and writers: all in this process's memory. */
  readonly capabilities: StoreCapabilities & {
    readonly keys: ManyKeys;
    readonly permits: MemoryShared;
    readonly readersWriters: MemoryShared;
  };

  /** `acquire` and `release` answered at once, for the core's uncontended path. */
  readonly [IMMEDIATE]: Immediate;

  constructor(options: MemoryStoreOptions = {}) {
    this.#now = options.now ?? monotonic;
    this.#monotonic = options.now === undefined;
    this[IMMEDIATE] = {
      of: this,
      acquire: (key, owner, ttlMs, now) =>
        this.#acquire(key, owner, ttlMs, now !== undefined && this.#monotonic ? now : this.#now()),
      release: (key, owner, keepMs) => this.#release(key, owner, keepMs),
    };
    const nextFence = () => ++this.#fence;
    this.capabilities = {
      keys: {
        acquire: (keys, owner, ttlMs) => Promise.resolve(this.#acquireAll(keys, owner, ttlMs)),
        release: (keys, owner, keepMs) => Promise.resolve(this.#releaseAll(keys, owner, keepMs)),
        extend: (keys, owner, ttlMs) => Promise.resolve(this.#extendAll(keys, owner, ttlMs)),
      },
      permits: new MemoryShared(this.#now, nextFence, false),
      readersWriters: new MemoryShared(this.#now, nextFence, true),
    };
  }

  /** Live leases, for tests and memory checks. */
  get size(): number {
    return this.#leases.size;
  }

  acquire(key: string, owner: string, ttlMs: number): Promise<Acquired | null> {
    return Promise.resolve(this.#acquire(key, owner, ttlMs, this.#now()));
  }

  release(key: string, owner: string, keepMs = 0): Promise<boolean> {
    return Promise.resolve(this.#release(key, owner, keepMs));
  }

  #acquire(key: string, owner: string, ttlMs: number, now: number): Acquired | null {
    if (++this.#sinceSweep >= SWEEP_EVERY) this.#sweep(now);
    const lease = this.#leases.get(key);
    if (lease !== undefined && lease.expiresAt > now) {
      if (lease.owner !== owner) return null;
      lease.expiresAt = now + ttlMs;
      return { fence: lease.fence };
    }
    const fence = ++this.#fence;
    this.#leases.set(key, { owner, expiresAt: now + ttlMs, fence });
    return { fence };
  }

  #release(key: string, owner: string, keepMs = 0): boolean {
    const lease = this.#leases.get(key);
    if (lease === undefined || lease.owner !== owner) return false;
    const now = this.#now();
    if (lease.expiresAt <= now) {
      this.#leases.delete(key);
      return false;
    }
    if (keepMs > 0) {
      lease.expiresAt = now + keepMs;
      return true;
    }
    this.#leases.delete(key);
    const listeners = this.#listeners.get(key);
    if (typeof listeners === 'function') listeners();
    else if (listeners !== undefined) for (const listener of [...listeners]) listener();
    return true;
  }

  extend(key: string, owner: string, ttlMs: number): Promise<boolean> {
    const lease = this.#leases.get(key);
    const now = this.#now();
    if (lease === undefined || lease.owner !== owner || lease.expiresAt <= now) {
      return Promise.resolve(false);
    }
    lease.expiresAt = now + ttlMs;
    return Promise.resolve(true);
  }

  inspect(key: string): Promise<LeaseInfo | null> {
    const lease = this.#leases.get(key);
    const now = this.#now();
    if (lease === undefined || lease.expiresAt <= now) return Promise.resolve(null);
    return Promise.resolve({
      owner: lease.owner,
      ttlMs: lease.expiresAt - now,
      fence: lease.fence,
    });
  }

  onRelease(key: string, listener: Listener): () => void {
    const all = this.#listeners;
    const listeners = all.get(key);
    if (listeners === undefined) all.set(key, listener);
    else if (typeof listeners === 'function') all.set(key, new Set([listeners, listener]));
    else listeners.add(listener);
    return () => {
      const now = all.get(key);
      if (now === listener) all.delete(key);
      else if (typeof now === 'object' && now.delete(listener) && now.size === 0) all.delete(key);
    };
  }

  async close(): Promise<void> {
    this.#leases.clear();
    this.#listeners.clear();
    this.capabilities.permits.clear();
    this.capabilities.readersWriters.clear();
  }

  /** All of `keys` if each is free, expired or `owner`'s already, in one step; else none. */
  #acquireAll(keys: readonly string[], owner: string, ttlMs: number): AcquiredKeys | null {
    const now = this.#now();
    if (++this.#sinceSweep >= SWEEP_EVERY) this.#sweep(now);
    for (const key of keys) {
      const lease = this.#leases.get(key);
      if (lease !== undefined && lease.expiresAt > now && lease.owner !== owner) return null;
    }
    const fences = keys.map((key) => {
      const lease = this.#leases.get(key);
      if (lease !== undefined && lease.expiresAt > now) {
        lease.expiresAt = now + ttlMs;
        return lease.fence;
      }
      const fence = ++this.#fence;
      this.#leases.set(key, { owner, expiresAt: now + ttlMs, fence });
      return fence;
    });
    return { fences };
  }

  #releaseAll(keys: readonly string[], owner: string, keepMs = 0): boolean {
    const now = this.#now();
    let all = true;
    for (const key of keys) {
      const lease = this.#leases.get(key);
      if (lease === undefined || lease.owner !== owner || lease.expiresAt <= now) all = false;
    }
    // Each is released on its own terms: what is still `owner`'s goes, whatever the rest.
    for (const key of keys) this.#release(key, owner, keepMs);
    return all;
  }

  #extendAll(keys: readonly string[], owner: string, ttlMs: number): boolean {
    const now = this.#now();
    const leases: Lease[] = [];
    for (const key of keys) {
      const lease = this.#leases.get(key);
      if (lease === undefined || lease.owner !== owner || lease.expiresAt <= now) return false;
      leases.push(lease);
    }
    for (const lease of leases) lease.expiresAt = now + ttlMs;
    return true;
  }

  #sweep(now: number): void {
    this.#sinceSweep = 0;
    this.#sweeper ??= this.#leases.entries();
    for (let i = 0; i < SWEEP_BATCH; i++) {
      const next = this.#sweeper.next();
      if (next.done) {
        this.#sweeper = undefined;
        return;
      }
      const [key, lease] = next.value;
      if (lease.expiresAt <= now) this.#leases.delete(key);
    }
  }
}

/** A store in this process's memory (see `MemoryStore`). */
export function memoryStore(options?: MemoryStoreOptions): MemoryStore {
  return new MemoryStore(options);
}

const DEFAULT = Symbol.for('cachelock.memory.default');

/**
 * The process-wide default store. Kept on globalThis so that the ESM and CommonJS builds,
 * if both are loaded, still share one.
 */
export function defaultMemoryStore(): MemoryStore {
  const holder = globalThis as { [DEFAULT]?: MemoryStore };
  holder[DEFAULT] ??= new MemoryStore();
  return holder[DEFAULT];
}
