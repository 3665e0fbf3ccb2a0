import type { Acquired, LeaseInfo, LockStore } from 'cachelock';

interface Lease {
  owner: string;
  expiresAt: number;
  fence: bigint;
}

/** What instances of the reference store share, as processes share a server. */
export class ReferenceBackend {
  readonly leases = new Map<string, Lease>();
  readonly fences = new Map<string, bigint>();
  readonly listeners = new Map<string, Set<() => void>>();
}

/**
 * The smallest correct `LockStore`, independent of the package's own stores, so that the
 * conformance suite can be checked against a known-good store and against broken variants of it.
 */
export class ReferenceStore implements LockStore {
  readonly kind: string = 'reference';
  readonly atomic: boolean = true;
  protected readonly leases: Map<string, Lease>;
  protected readonly fences: Map<string, bigint>;
  protected readonly listeners: Map<string, Set<() => void>>;

  /** Instances made with one backend see the same leases, as processes on one server do. */
  constructor(backend = new ReferenceBackend()) {
    this.leases = backend.leases;
    this.fences = backend.fences;
    this.listeners = backend.listeners;
  }

  protected now(): number {
    return performance.now();
  }

  /** The map key for a lock key; broken variants override it to collapse keys. */
  protected slot(key: string): string {
    return key;
  }

  protected live(key: string): Lease | undefined {
    const lease = this.leases.get(this.slot(key));
    if (lease && lease.expiresAt <= this.now()) {
      this.leases.delete(this.slot(key));
      return undefined;
    }
    return lease;
  }

  protected nextFence(key: string): bigint {
    const fence = (this.fences.get(this.slot(key)) ?? 0n) + 1n;
    this.fences.set(this.slot(key), fence);
    return fence;
  }

  async acquire(key: string, owner: string, ttlMs: number): Promise<Acquired | null> {
    const lease = this.live(key);
    if (lease) {
      if (lease.owner !== owner) return null;
      lease.expiresAt = this.now() + ttlMs;
      return { fence: lease.fence };
    }
    const fence = this.nextFence(key);
    this.leases.set(this.slot(key), { owner, expiresAt: this.now() + ttlMs, fence });
    return { fence };
  }

  async release(key: string, owner: string, keepMs = 0): Promise<boolean> {
    const lease = this.live(key);
    if (!lease || lease.owner !== owner) return false;
    if (keepMs > 0) {
      lease.expiresAt = this.now() + keepMs;
      return true;
    }
    this.leases.delete(this.slot(key));
    this.notify(key);
    return true;
  }

  async extend(key: string, owner: string, ttlMs: number): Promise<boolean> {
    const lease = this.live(key);
    if (!lease || lease.owner !== owner) return false;
    lease.expiresAt = this.now() + ttlMs;
    return true;
  }

  async inspect(key: string): Promise<LeaseInfo | null> {
    const lease = this.live(key);
    if (!lease) return null;
    return { owner: lease.owner, ttlMs: lease.expiresAt - this.now(), fence: lease.fence };
  }

  onRelease(key: string, listener: () => void): () => void {
    const slot = this.slot(key);
    let set = this.listeners.get(slot);
    if (!set) this.listeners.set(slot, (set = new Set()));
    const own = () => listener();
    set.add(own);
    return () => {
      set.delete(own);
    };
  }

  protected notify(key: string): void {
    for (const listener of this.listeners.get(this.slot(key)) ?? []) queueMicrotask(listener);
  }

  async close(): Promise<void> {}
}
