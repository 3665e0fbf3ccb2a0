import { debuglog } from 'node:util';
import type { OnApplicationShutdown, OnModuleInit } from '@nestjs/common';
import type { ModuleRef } from '@nestjs/core';
import {
  type AcquireOptions,
  type Cache,
  configure,
  type LockOptions,
  type LockStore,
} from 'cachelock';
import { isCacheManager, isKeyv, keyvStore } from 'cachelock/keyv';
import { CACHE_MANAGER, type CachelockModuleOptions } from './options.js';

const debug = debuglog('cachelock');

/** Where the module's cache came from, for debug output and tests. */
export type CacheSource = 'options' | 'cacheToken' | 'CACHE_MANAGER' | 'core';

/**
 * Binds the app's cache to cachelock while the app runs: on init it picks the cache, makes it
 * the process default with `configure()` (so that `@Once` methods, which exist before any module,
 * use it too), and on shutdown restores the previous defaults and closes the stores it opened.
 */
export class CachelockBinding implements OnModuleInit, OnApplicationShutdown {
  /** Where the cache came from; set on init. */
  source: CacheSource | undefined;
  readonly #options: CachelockModuleOptions;
  readonly #moduleRef: ModuleRef;
  #lockOptions: LockOptions | undefined;
  #previous: LockOptions | undefined;
  /** The default cache right after this module configured its options. */
  #applied: unknown;
  readonly #opened: LockStore[] = [];

  constructor(options: CachelockModuleOptions | undefined, moduleRef: ModuleRef) {
    this.#options = options ?? {};
    this.#moduleRef = moduleRef;
  }

  /** The module's LockOptions with the chosen cache, for `CachelockService`. */
  get lockOptions(): LockOptions {
    if (this.#lockOptions === undefined) {
      throw new Error(
        'CachelockService was used before CachelockModule was initialised; use it from onModuleInit or later',
      );
    }
    return this.#lockOptions;
  }

  async onModuleInit(): Promise<void> {
    const { cacheToken, connectTimeout, onConnectError, ...lockOptions } = this.#options;
    if (
      onConnectError !== undefined &&
      onConnectError !== 'throw' &&
      onConnectError !== 'fail-locks'
    ) {
      throw new TypeError(
        `CachelockModule: onConnectError must be 'throw' or 'fail-locks', got ${JSON.stringify(onConnectError)}`,
      );
    }
    let cache: unknown = lockOptions.cache;
    let source: CacheSource = 'options';
    if (cache === undefined && cacheToken !== undefined) {
      // Nest's own error names the token when nothing provides it.
      cache = this.#moduleRef.get(cacheToken, { strict: false });
      source = 'cacheToken';
    } else if (cache === undefined) {
      // An explicit choice for the whole process wins over a cache the app registered for other
      // purposes (often process memory).
      const chosen = configure({}).cache !== undefined || Boolean(process.env.CACHELOCK_URL);
      cache = chosen ? undefined : this.#optional(CACHE_MANAGER);
      source = cache === undefined ? 'core' : 'CACHE_MANAGER';
    }
    if (isKeyv(cache) || isCacheManager(cache)) {
      const framework = cache;
      const open = () => keyvStore(framework, { connectTimeout: connectTimeout ?? '5s' });
      let store: LockStore;
      try {
        store = await open();
      } catch (error) {
        if (onConnectError !== 'fail-locks') {
          throw new Error(
            `CachelockModule could not reach the app's cache: ${(error as Error).message}`,
            {
              cause: error,
            },
          );
        }
        debug(
          'nestjs: the cache is unreachable, locks fail until it is: %s',
          (error as Error).message,
        );
        store = new RetryingStore(open, error);
      }
      this.#opened.push(store);
      cache = store;
    }
    const chosen: LockOptions =
      cache === undefined ? lockOptions : { ...lockOptions, cache: cache as Cache };
    this.#lockOptions = chosen;
    this.source = source;
    this.#previous = configure(chosen);
    this.#applied = configure({}).cache;
    debug(
      'nestjs: locks use %s (%s)',
      source === 'core' ? "the core's resolution" : `the ${source} cache`,
      (cache as { kind?: string } | undefined)?.kind ?? typeof cache,
    );
  }

  async onApplicationShutdown(): Promise<void> {
    if (this.#previous !== undefined) {
      // Leave the defaults alone if something else replaced ours meanwhile.
      if (configure({}).cache === this.#applied) {
        configure(null);
        configure(this.#previous);
      }
      this.#previous = undefined;
    }
    const opened = this.#opened.splice(0);
    await Promise.allSettled(opened.map((store) => store.close?.()));
  }

  #optional(token: string): unknown {
    try {
      return this.#moduleRef.get(token, { strict: false });
    } catch {
      return undefined;
    }
  }
}

/**
 * A store for a cache that could not be reached when the app started: each operation tries to
 * open it again (one attempt at a time), and fails with the reason while it cannot.
 */
class RetryingStore implements LockStore {
  readonly kind = 'keyv';
  // Only a cache with an atomic store behind it gets here (a plain Keyv never fails to open).
  readonly atomic = true;
  #store: LockStore | undefined;
  #opening: Promise<LockStore> | undefined;
  #closed = false;

  constructor(
    private readonly open: () => Promise<LockStore>,
    readonly firstError: unknown,
  ) {}

  async #ready(): Promise<LockStore> {
    if (this.#closed) throw new Error('cachelock/nestjs: the store is closed');
    if (this.#store !== undefined) return this.#store;
    this.#opening ??= this.open().finally(() => {
      this.#opening = undefined;
    });
    this.#store = await this.#opening;
    return this.#store;
  }

  async acquire(key: string, owner: string, ttlMs: number, options?: AcquireOptions) {
    return (await this.#ready()).acquire(key, owner, ttlMs, options);
  }

  async release(key: string, owner: string, keepMs?: number) {
    return (await this.#ready()).release(key, owner, keepMs);
  }

  async extend(key: string, owner: string, ttlMs: number) {
    return (await this.#ready()).extend(key, owner, ttlMs);
  }

  async inspect(key: string) {
    return (await this.#ready()).inspect(key);
  }

  async close(): Promise<void> {
    this.#closed = true;
    const store = this.#store ?? (await this.#opening?.catch(() => undefined));
    await store?.close?.();
  }
}
