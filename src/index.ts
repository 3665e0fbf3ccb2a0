export { isLentPool, LENT_POOL, type LentPool, type SqlDialect } from './clients.js';
export { currentLock, type Held } from './context.js';
export {
  type LockEvent,
  type LockEventName,
  type LockEvents,
  subscribe,
} from './diagnostics.js';
export type { Duration, DurationUnit } from './duration.js';
export { formatDuration, toMs } from './duration.js';
export {
  /** @internal For the backends: why a connection failed. */
  classifyFailure,
  /** @internal */
  describeFailure,
  LockError,
  type LockErrorCode,
  LockedError,
  LockLostError,
  LockTimeoutError,
  StoreError,
  type StoreFailure,
} from './errors.js';
export { type Holder, Lock, resolveStore } from './lock.js';
export { MemoryStore, type MemoryStoreOptions, memoryStore } from './memory/index.js';
export {
  type OnceDecorator,
  type OnceFunction,
  type OnceOptions,
  once,
  setOnceDefaults,
} from './once/index.js';
export { type Cache, configure, type LockOptions } from './options.js';
export { describeOwner, newOwner, parseOwner } from './owner.js';
export {
  type PlainCache,
  PlainCacheStore,
  type PlainCacheStoreOptions,
  plainCacheStore,
} from './plain/index.js';
export { type BackendModule, knownSchemes, registerScheme, type UrlFactory } from './registry.js';
export { closeAll } from './resolve.js';
export { redactUrl } from './secrets.js';
export { Permit, ReadWriteLock, Semaphore, type SemaphoreOptions } from './semaphore.js';
export {
  type Acquired,
  type AcquiredKeys,
  type AcquireOptions,
  type Handoff,
  isLockStore,
  type LeaseInfo,
  type LockStore,
  type ManyKeys,
  /** @internal For the stores that hand a key over: which hand-offs are void. */
  Refusals,
  RW_LIMIT,
  type SharedLeases,
  type SharedRequest,
  type StoreCapabilities,
} from './store.js';
