import { debuglog } from 'node:util';
import type { OnApplicationShutdown, OnModuleInit } from '@nestjs/common';
import type { DiscoveryService, ModuleRef } from '@nestjs/core';
import {
  type AcquireOptions,
  type Cache,
  configure,
  type LockOptions,
  type LockStore,
  setOnceDefaults,
} from 'cachelock';
import { isCacheManager, isKeyv, keyvStore } from 'cachelock/keyv';
import { CACHE_MANAGER, type CachelockModuleOptions } from './options.js';

const debug = debuglog('cachelock');

/** Where the module's cache came from, for debug output and tests. */
export type CacheSource = 'options' | 'cacheToken' | 'CACHE_MANAGER' | 'core';

/**
 * Binds the app's cache to cachelock while the app runs: on init it picks the cache and gives it,
 * with the module's options, to the `@Once` methods of the app's providers and controllers (by
 * instance, so that two apps in one process keep their own), and on shutdown takes it back and
 * closes the stores it opened. The process-wide defaults (`configure()`) are left alone.
 */
export class CachelockBinding implements OnModuleInit, OnApplicationShutdown {
  /** Where the cache came from; set on init. */
  source: CacheSource | undefined;
  readonly #options: CachelockModuleOptions;
  readonly #moduleRef: ModuleRef;
  readonly #discovery: DiscoveryService | undefined;
  #lockOptions: LockOptions | undefined;
  /** The instances whose `@Once` methods got this module's options. */
  readonly #scoped: object[] = [];
  readonly #opened: LockStore[] = [];

  constructor(
    options: CachelockModuleOptions | undefined,
    moduleRef: ModuleRef,
    discovery?: DiscoveryService,
  ) {
    this.#options = options ?? {};
    this.#moduleRef = moduleRef;
    this.#discovery = discovery;
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
    this.#scope();
    debug(
      'nestjs: locks use %s (%s)',
      source === 'core' ? "the core's resolution" : `the ${source} cache`,
      (cache as { kind?: string } | undefined)?.kind ?? typeof cache,
    );
  }

  async onApplicationShutdown(): Promise<void> {
    for (const instance of this.#scoped.splice(0)) setOnceDefaults(instance, null);
    const opened = this.#opened.splice(0);
    await Promise.allSettled(opened.map((store) => store.close?.()));
  }

  /** Every provider and controller this app made once (not per request or per consumer). */
  #scope(): void {
    if (this.#discovery === undefined) return;
    const defaults = () => this.lockOptions;
    const wrappers = [...this.#discovery.getProviders(), ...this.#discovery.getControllers()];
    for (const wrapper of wrappers) {
      const instance: unknown = wrapper.instance;
      if (typeof instance !== 'object' || instance === null || !wrapper.isDependencyTreeStatic()) {
        continue;
      }
      setOnceDefaults(instance, defaults);
      this.#scoped.push(instance);
    }
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
    // Never opened: nothing was taken here, and giving up an owner must not open the cache.
    if (this.#store === undefined) return false;
    return this.#store.release(key, owner, keepMs);
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
