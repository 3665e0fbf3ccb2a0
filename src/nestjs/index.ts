/**
 * `cachelock/nestjs`: the app's cache as the default for every lock, `@Once` for scheduled jobs,
 * routes and queue processors, and `CachelockService` for imperative use.
 */
import { once } from 'cachelock';

export { CachelockBinding, type CacheSource } from './binding.js';
export {
  LockedExceptionFilter,
  type LockedResponseBody,
  retryAfterSeconds,
} from './filter.js';
export { CachelockModule } from './module.js';
export {
  CACHE_MANAGER,
  CACHELOCK_OPTIONS,
  type CachelockModuleAsyncOptions,
  type CachelockModuleOptions,
  type ProviderToken,
} from './options.js';
export { CachelockService } from './service.js';

/**
 * `once(options)` as a method decorator: `@Once({ key: 'report', holdAtLeast: '1m' })`. It works
 * with `experimentalDecorators` and keeps the metadata of the decorators around it, so it
 * composes with `@Cron`, `@Interval`, `@Timeout`, `@Get` and queue processors in either order.
 * A call that finds the key held is skipped (resolves `undefined`) unless `throwIfLocked` is set.
 */
export const Once: typeof once = once;
