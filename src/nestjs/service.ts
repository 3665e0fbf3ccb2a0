import { type Holder, Lock, type LockOptions } from 'cachelock';
import type { CachelockBinding } from './binding.js';

/**
 * Imperative locking with the module's cache and defaults. Options given here win over the
 * module's.
 */
export class CachelockService {
  readonly #binding: CachelockBinding;

  constructor(binding: CachelockBinding) {
    this.#binding = binding;
  }

  /** A `Lock` on `key` (not yet acquired). */
  lock(key: string, options?: LockOptions): Lock {
    return new Lock(key, { ...this.#binding.lockOptions, ...options });
  }

  /** Acquire `key`, run `fn(signal)`, release; rejects as `Lock.run` does. */
  run<T>(
    key: string,
    options: LockOptions | undefined,
    fn: (signal: AbortSignal) => T | Promise<T>,
  ): Promise<T> {
    return this.lock(key, options).run(fn);
  }

  /** Who holds `key` now, or `null`. */
  inspect(key: string, options?: LockOptions): Promise<Holder | null> {
    return Lock.inspect(key, { ...this.#binding.lockOptions, ...options });
  }
}
