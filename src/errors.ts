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

/** Why a store could not be reached, where it can be told. */
export type StoreFailure =
  | 'refused'
  | 'not found'
  | 'timed out'
  | 'authentication'
  | 'TLS'
  | 'connection lost'
  | 'file';

/**
 * The cache failed or could not be reached. It never means the lock was granted. `cause` is the
 * store's error with any secret removed; `where` names the store (scheme, host and port).
 * `failure` classifies a connection failure: the message then reads
 * `store redis://host:6379 failed to acquire lock "k": connection refused (connect ECONNREFUSED ...)`.
 */
export class StoreError extends LockError {
  override name = 'StoreError';
  declare readonly code: 'STORE';
  /** Why the store could not be reached, when the failure is one of connecting to it. */
  readonly failure: StoreFailure | undefined;

  constructor(key: string, operation: string, cause: unknown, where?: string) {
    const safe = safeError(cause);
    const reason = classifyFailure(safe);
    let text = messageOf(safe);
    // A wrapper that does not quote what it wraps (ioredis's retry limit, say) gets it added.
    const inner = reason === undefined ? undefined : messageOf(reason.error);
    if (inner !== undefined && !text.includes(inner)) text = `${inner}; ${text}`;
    text = redactText(text);
    const detail = reason === undefined ? text : `${FAILURE_TEXT[reason.failure]} (${text})`;
    const store = where === undefined ? 'store' : `store ${redactText(where)}`;
    super(key, `${store} failed to ${operation} lock "${key}": ${detail}`, {
      code: 'STORE',
      cause: safe,
    });
    this.failure = reason?.failure;
  }
}

const FAILURE_TEXT: Record<StoreFailure, string> = {
  refused: 'connection refused',
  'not found': 'host not found',
  'timed out': 'timed out',
  authentication: 'authentication failed',
  TLS: 'TLS failed',
  'connection lost': 'connection lost',
  file: 'cannot open the file',
};

function messageOf(error: unknown): string {
  if (error instanceof Error) return error.message || error.name;
  return String(error);
}

// By error code, as Node.js, the client libraries and the servers set them.
const BY_CODE: [RegExp, StoreFailure][] = [
  [/^ECONNREFUSED$/, 'refused'],
  [/^(ENOTFOUND|EAI_AGAIN|EAI_NONAME|EAI_FAIL|EAI_NODATA)$/, 'not found'],
  [/^(ETIMEDOUT|ESOCKETTIMEDOUT|ECONNABORTED)$/, 'timed out'],
  // PostgreSQL: invalid_password, invalid_authorization_specification. MySQL and MariaDB: a
  // wrong user or password (1045, 1698), a user refused the database it names (1044).
  [/^(28P01|28000)$/, 'authentication'],
  [
    /^(ER_ACCESS_DENIED_ERROR|ER_ACCESS_DENIED_NO_PASSWORD_ERROR|ER_DBACCESS_DENIED_ERROR)$/,
    'authentication',
  ],
  [/^(ERR_TLS_|ERR_SSL_|CERT_|UNABLE_TO_|DEPTH_ZERO_|SELF_SIGNED_|EPROTO$)/, 'TLS'],
  [/^(ECONNRESET|EPIPE|ECONNCLOSED|57P01)$/, 'connection lost'],
  [
    /^(SQLITE_CANTOPEN|SQLITE_NOTADB|SQLITE_PERM|SQLITE_READONLY|ENOENT|ENOTDIR|EACCES|EPERM|EROFS|EISDIR)/,
    'file',
  ],
];

// By message, for errors that carry no code (Redis replies, client timeouts).
const BY_MESSAGE: [RegExp, StoreFailure][] = [
  [
    /^(WRONGPASS|NOAUTH)\b|\bpassword authentication failed|\bauthentication (failed|required)|\bSASL|\bAccess denied for user\b/i,
    'authentication',
  ],
  [/\bECONNREFUSED\b|connection refused/i, 'refused'],
  [/\b(ENOTFOUND|EAI_AGAIN)\b/, 'not found'],
  [
    /\b(ETIMEDOUT)\b|timed? ?out\b|\bdid not (reply|answer)\b|\bno reply within\b|\bwithin \d+ ms\b/i,
    'timed out',
  ],
  [/\b(SSL|TLS)\b|certificate/i, 'TLS'],
  [
    /\b(ECONNRESET|EPIPE)\b|connection (is )?closed|closed the connection|socket closed/i,
    'connection lost',
  ],
  [
    /unable to open database file|file is not a database|attempt to write a readonly database/i,
    'file',
  ],
];

// Said before any code: a peer that hangs up during the TLS handshake (a TLS client on a plain
// port) is ECONNRESET to Node.js, but the user's mistake is TLS.
const TLS_HANDSHAKE = /before secure TLS connection was established/i;

// Deep enough for a Redlock quorum's AggregateError of each member's error and their causes.
const MAX_CLASSIFY_DEPTH = 6;

/**
 * Why `error` (or what it wraps: `cause`, an AggregateError's `errors`, an ioredis Cluster's
 * `lastNodeError`) says the store could not be reached, and the error that says it. A code
 * anywhere wins over a message, since a message is only a guess.
 */
export function classifyFailure(
  error: unknown,
): { failure: StoreFailure; error: unknown } | undefined {
  const seen = new Set<unknown>();
  const all: unknown[] = [];
  const visit = (value: unknown, depth: number) => {
    if (
      typeof value !== 'object' ||
      value === null ||
      seen.has(value) ||
      depth > MAX_CLASSIFY_DEPTH
    )
      return;
    seen.add(value);
    all.push(value);
    const inner = value as { cause?: unknown; errors?: unknown; lastNodeError?: unknown };
    visit(inner.cause, depth + 1);
    visit(inner.lastNodeError, depth + 1);
    if (Array.isArray(inner.errors)) for (const each of inner.errors) visit(each, depth + 1);
  };
  visit(error, 0);
  for (const each of all) {
    const message = (each as { message?: unknown }).message;
    if (typeof message === 'string' && TLS_HANDSHAKE.test(message)) {
      return { failure: 'TLS', error: each };
    }
  }
  for (const each of all) {
    const code = (each as { code?: unknown }).code;
    if (typeof code !== 'string') continue;
    for (const [pattern, failure] of BY_CODE)
      if (pattern.test(code)) return { failure, error: each };
  }
  for (const each of all) {
    const message = (each as { message?: unknown }).message;
    if (typeof message !== 'string') continue;
    for (const [pattern, failure] of BY_MESSAGE) {
      if (pattern.test(message)) return { failure, error: each };
    }
  }
  return undefined;
}

/** `FAILURE_TEXT` for a classified failure: `connection refused`, `host not found`, ... */
export function describeFailure(failure: StoreFailure): string {
  return FAILURE_TEXT[failure];
}
