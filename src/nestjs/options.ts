import type { Duration, LockOptions } from 'cachelock';

/** A NestJS provider token: a class, a string or a symbol. */
export type ProviderToken = string | symbol | Function;

/**
 * `CachelockModule` options: LockOptions defaults for every lock in the app, and which cache.
 *
 * The cache is, in this order: `cache`; the provider registered under `cacheToken`; the app's
 * `CACHE_MANAGER` (from `@nestjs/cache-manager`) unless the process already chose a cache with
 * `configure({ cache })` or `CACHELOCK_URL`; else the core's resolution (memory).
 */
export interface CachelockModuleOptions extends LockOptions {
  /** A provider token whose value is the cache (the counterpart of `DEFAULT_CACHELOCK_ALIAS`). */
  cacheToken?: ProviderToken;
  /**
   * How long the app's start waits for the client behind a Keyv or cache-manager cache to
   * connect. Default `'5s'`.
   */
  connectTimeout?: Duration;
  /**
   * When that client cannot connect: `'throw'` (default) fails the app's start with where and
   * why; `'fail-locks'` lets the app start, and every lock then fails with a `StoreError` until
   * the cache can be reached (each lock tries to connect again).
   */
  onConnectError?: 'throw' | 'fail-locks';
}

export interface CachelockModuleAsyncOptions {
  /** Modules whose providers `useFactory` needs. */
  imports?: any[];
  /** Providers passed to `useFactory`, in order. */
  inject?: any[];
  useFactory: (...args: any[]) => CachelockModuleOptions | Promise<CachelockModuleOptions>;
  /** Register `CachelockService` for every module. Default `false`. */
  isGlobal?: boolean;
}

/** The provider token of the module's options. */
export const CACHELOCK_OPTIONS = Symbol('CACHELOCK_OPTIONS');

/** `@nestjs/cache-manager`'s `CACHE_MANAGER` token, named here so that it is not imported. */
export const CACHE_MANAGER = 'CACHE_MANAGER';
