import { debuglog } from 'node:util';
import type { OnApplicationShutdown, OnModuleInit } from '@nestjs/common';
import type { ModuleRef } from '@nestjs/core';
import { type Cache, configure, type LockOptions, type LockStore } from 'cachelock';
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
    const { cacheToken, ...lockOptions } = this.#options;
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
      const store = await keyvStore(cache);
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
