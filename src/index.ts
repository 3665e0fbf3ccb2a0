export type { Duration, DurationUnit } from './duration.js';
export { toMs } from './duration.js';
export {
  LockError,
  type LockErrorCode,
  LockedError,
  LockLostError,
  LockTimeoutError,
  StoreError,
} from './errors.js';
export { describeOwner, newOwner, parseOwner } from './owner.js';
export {
  type Acquired,
  type AcquireOptions,
  type Handoff,
  isLockStore,
  type LeaseInfo,
  type LockStore,
} from './store.js';
