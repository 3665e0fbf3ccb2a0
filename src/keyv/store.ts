import type { AcquireOptions, Handoff, LockStore } from 'cachelock';
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
