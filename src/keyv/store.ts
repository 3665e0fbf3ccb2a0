import type {
  AcquireOptions,
  Handoff,
  LockStore,
  ManyKeys,
  SharedLeases,
  StoreCapabilities,
} from 'cachelock';
import type { NativeStore } from './native.js';

/**
 * A backend store reached through a Keyv, with the Keyv's namespace in front of every key, so
 * that locks taken through Keyvs of different namespaces on one server stay apart, as their
 * values do. `kind` says which path was taken: `'keyv+redis'`, `'keyv+postgres'`.
 */
export class KeyvLockStore implements LockStore {
  readonly kind: string;
  readonly atomic: boolean;
  /** The prefix the Keyv's namespace adds to every key (`'app:'`), or `''`. */
  readonly keyPrefix: string;
  /** Where the server behind the Keyv is (`redis://host:6379`), for error messages. */
  readonly location: string | undefined;
  onRelease?: (key: string, listener: (handoff?: Handoff) => void) => () => void;
  readonly replaysWakeups?: boolean;
  readonly handoffGrants?: boolean;
  readonly capabilities?: StoreCapabilities;
  readonly #native: NativeStore;
  #closed: Promise<void> | undefined;

  constructor(native: NativeStore, namespace: string | undefined) {
    this.#native = native;
    this.kind = `keyv+${native.backend}`;
    this.atomic = native.store.atomic;
    this.keyPrefix = namespace === undefined ? '' : `${namespace}:`;
    this.location = native.where;
    const inner = native.store;
    // Only where the backend pushes wake-ups: without `onRelease` the core polls.
    if (inner.onRelease) {
      const onRelease = inner.onRelease.bind(inner);
      this.onRelease = (key, listener) => onRelease(this.keyPrefix + key, listener);
    }
    // The backend's store, behind the namespace, is the same store: it waits, hands off and
    // takes several keys or permits as it does when reached directly.
    this.replaysWakeups = inner.replaysWakeups;
    this.handoffGrants = inner.handoffGrants;
    if (inner.capabilities !== undefined)
      this.capabilities = prefixed(inner.capabilities, this.keyPrefix);
  }

  acquire(key: string, owner: string, ttlMs: number, options?: AcquireOptions) {
    return this.#native.store.acquire(this.keyPrefix + key, owner, ttlMs, options);
  }

  release(key: string, owner: string, keepMs?: number) {
    return this.#native.store.release(this.keyPrefix + key, owner, keepMs);
  }

  extend(key: string, owner: string, ttlMs: number) {
    return this.#native.store.extend(this.keyPrefix + key, owner, ttlMs);
  }

  inspect(key: string) {
    return this.#native.store.inspect(this.keyPrefix + key);
  }

  /** Frees what cachelock opened; the Keyv and its client stay open (they are the caller's). */
  close(): Promise<void> {
    this.#closed ??= this.#native.close();
    return this.#closed;
  }
}

/** A store's capabilities with `prefix` in front of every key. */
function prefixed(inner: StoreCapabilities, prefix: string): StoreCapabilities {
  if (prefix === '') return inner;
  const { keys, permits, readersWriters } = inner;
  return {
    ...(keys && { keys: prefixedKeys(keys, prefix) }),
    ...(permits && { permits: prefixedShared(permits, prefix) }),
    ...(readersWriters && { readersWriters: prefixedShared(readersWriters, prefix) }),
  };
}

function prefixedKeys(inner: ManyKeys, prefix: string): ManyKeys {
  const all = (keys: readonly string[]) => keys.map((key) => prefix + key);
  return {
    ...(inner.most !== undefined && { most: inner.most }),
    ...(inner.check && { check: (keys, shown) => inner.check!(all(keys), shown ?? keys) }),
    acquire: (keys, owner, ttlMs) => inner.acquire(all(keys), owner, ttlMs),
    release: (keys, owner, keepMs) =>
      keepMs === undefined
        ? inner.release(all(keys), owner)
        : inner.release(all(keys), owner, keepMs),
    extend: (keys, owner, ttlMs) => inner.extend(all(keys), owner, ttlMs),
  };
}

function prefixedShared(inner: SharedLeases, prefix: string): SharedLeases {
  return {
    acquire: (key, owner, ttlMs, request) => inner.acquire(prefix + key, owner, ttlMs, request),
    release: (key, owner, keepMs) =>
      keepMs === undefined
        ? inner.release(prefix + key, owner)
        : inner.release(prefix + key, owner, keepMs),
    extend: (key, owner, ttlMs) => inner.extend(prefix + key, owner, ttlMs),
    inspect: (key) => inner.inspect(prefix + key),
    ...(inner.onRelease && {
      onRelease: (key: string, listener: (handoff?: Handoff) => void) =>
        inner.onRelease!(prefix + key, listener),
    }),
  };
}
