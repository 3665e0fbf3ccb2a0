import { formatDuration } from './duration.js';
import { describeOwner } from './owner.js';
import { redactText, safeError } from './secrets.js';
import type { LeaseInfo } from './store.js';

export type LockErrorCode = 'LOCKED' | 'TIMEOUT' | 'LOST' | 'STORE' | 'MISUSE';

/** The base of every error cachelock raises about a lock. */
export class LockError extends Error {
  override name = 'LockError';
  readonly key: string;
  readonly code: LockErrorCode;

  constructor(key: string, message: string, options?: { cause?: unknown; code?: LockErrorCode }) {
    // A store's error can quote its connection string or carry its AUTH arguments.
    super(message, options?.cause === undefined ? undefined : { cause: safeError(options.cause) });
    this.key = key;
    this.code = options?.code ?? 'MISUSE';
  }
}

function heldBy(holder: LeaseInfo | null | undefined, heldKey?: string): string {
  if (!holder) return '';
  if (heldKey !== undefined) return `: "${heldKey}"${heldBy(holder)}`;
  // An unknown owner's value may have no end the store knows of (ttlMs Infinity).
  const more = Number.isFinite(holder.ttlMs) ? ` for ${formatDuration(holder.ttlMs)} more` : '';
  return ` by ${describeOwner(holder.owner)}${more}`;
}

/** The key is held by another owner and `wait` is 0. */
export class LockedError extends LockError {
  override name = 'LockedError';
  declare readonly code: 'LOCKED';
  /** Who held the key when it was refused, where the store could tell. */
  readonly holder: LeaseInfo | null;
  /** Of a lock on several keys, the first key found held (with `holder`). */
  readonly heldKey: string | undefined;

  constructor(key: string, holder?: LeaseInfo | null, heldKey?: string) {
    super(key, `lock "${key}" is held${heldBy(holder, heldKey)}`, { code: 'LOCKED' });
    this.holder = holder ?? null;
    this.heldKey = holder ? heldKey : undefined;
  }
}

/** The key was still held when `wait` ran out. */
export class LockTimeoutError extends LockError {
  override name = 'LockTimeoutError';
  declare readonly code: 'TIMEOUT';
  readonly holder: LeaseInfo | null;
  /** Of a lock on several keys, the first key found held (with `holder`). */
  readonly heldKey: string | undefined;
  readonly waitedMs: number;

  constructor(key: string, waitedMs: number, holder?: LeaseInfo | null, heldKey?: string) {
    super(
      key,
      `lock "${key}" was still held${heldBy(holder, heldKey)} after waiting ${formatDuration(waitedMs)}`,
      { code: 'TIMEOUT' },
    );
    this.holder = holder ?? null;
    this.heldKey = holder ? heldKey : undefined;
    this.waitedMs = waitedMs;
  }
}

/** The lease was lost while held: it expired, was taken, or could not be extended. */
export class LockLostError extends LockError {
  override name = 'LockLostError';
  declare readonly code: 'LOST';

  constructor(key: string, reason: string, cause?: unknown) {
    super(key, `lock "${key}" was lost: ${reason}`, { code: 'LOST', cause });
  }
}

/**
 * The cache failed or could not be reached. It never means the lock was granted. `cause` is the
 * store's error with any secret removed; `where` names the store (scheme, host and port).
 */
export class StoreError extends LockError {
  override name = 'StoreError';
  declare readonly code: 'STORE';

  constructor(key: string, operation: string, cause: unknown, where?: string) {
    const safe = safeError(cause);
    const detail = redactText(safe instanceof Error ? safe.message : String(safe));
    const store = where === undefined ? 'store' : `store ${redactText(where)}`;
    super(key, `${store} failed to ${operation} lock "${key}": ${detail}`, {
      code: 'STORE',
      cause: safe,
    });
  }
}
