import { type Duration, showValue, toHoldMs, toLeaseMs, toMs } from './duration.js';
import type { LockLostError } from './errors.js';
import type { PlainCache } from './plain/index.js';
import { checkCache } from './resolve.js';
import type { LockStore } from './store.js';

/**
 * Where a lock lives: a `LockStore`, a client cachelock recognises (ioredis, node-redis, pg,
 * memjs, better-sqlite3, node:sqlite, Keyv, cache-manager), a URL, or any object with
 * `get`/`set`/`delete`.
 */
export type Cache = LockStore | PlainCache | string | URL | object;

export interface LockOptions {
  /** Where the lock lives. Default: `configure({ cache })`, then `CACHELOCK_URL`, then memory. */
  cache?: Cache;
  /**
   * The lease: a holder that dies or hangs frees the lock after at most this long. `'30s'`;
   * at most 2^31-1 ms (about 24.8 days).
   */
  ttl?: Duration;
  /** While held, extend the lease every ttl/3. Default `true`. */
  autoExtend?: boolean;
  /** How long `acquire()` waits for a held lock; `Infinity` or `'forever'` waits on. Default `0`. */
  wait?: Duration;
  /** Cancels a waiting `acquire()`. */
  signal?: AbortSignal;
  /** On release, keep the key until at least this long after acquisition (at most about 24.8 days). Default `0`. */
  holdAtLeast?: Duration;
  /** Namespace inside a shared cache. Default `'cachelock:'`. */
  prefix?: string;
  /** Called once with a `LockLostError` if the lease is lost while held. */
  onLost?: (error: LockLostError) => void;
}

/** LockOptions after defaults and validation. */
export interface Settings {
  cache: Cache | undefined;
  ttlMs: number;
  autoExtend: boolean;
  waitMs: number;
  signal: AbortSignal | undefined;
  holdAtLeastMs: number;
  prefix: string;
  onLost: ((error: LockLostError) => void) | undefined;
}

const OPTION_NAMES = new Set([
  'cache',
  'ttl',
  'autoExtend',
  'wait',
  'signal',
  'holdAtLeast',
  'prefix',
  'onLost',
]);

const BUILTIN: Required<Omit<LockOptions, 'cache' | 'signal' | 'onLost'>> = {
  ttl: '30s',
  autoExtend: true,
  wait: 0,
  holdAtLeast: 0,
  prefix: 'cachelock:',
};

let defaults: LockOptions = {};
let defaultSettings: Settings | undefined;

/**
 * Check LockOptions, throwing a TypeError/RangeError that names the option and shows the value.
 * `where` prefixes option names in messages (`'configure'`, `'once'`).
 */
export function validateOptions(
  options: unknown,
  where?: string,
  extra?: ReadonlySet<string>,
): LockOptions {
  const label = (name: string) => (where ? `${where}: ${name}` : name);
  if (options === undefined) return {};
  if (typeof options !== 'object' || options === null || Array.isArray(options)) {
    throw new TypeError(`${label('options')} must be an object, got ${showValue(options)}`);
  }
  const given = options as Record<string, unknown>;
  for (const name of Object.keys(given)) {
    if (!OPTION_NAMES.has(name) && !extra?.has(name)) {
      const known = [...OPTION_NAMES, ...(extra ?? [])].join(', ');
      throw new TypeError(`${label(name)} is not an option; known options: ${known}`);
    }
  }
  if (given.ttl !== undefined) toLeaseMs(label('ttl'), given.ttl);
  if (given.wait !== undefined) toMs(label('wait'), given.wait, true);
  if (given.holdAtLeast !== undefined) toHoldMs(label('holdAtLeast'), given.holdAtLeast);
  if (given.autoExtend !== undefined && typeof given.autoExtend !== 'boolean') {
    throw new TypeError(
      `${label('autoExtend')} must be true or false, got ${showValue(given.autoExtend)}`,
    );
  }
  if (given.prefix !== undefined && typeof given.prefix !== 'string') {
    throw new TypeError(`${label('prefix')} must be a string, got ${showValue(given.prefix)}`);
  }
  if (given.onLost !== undefined && typeof given.onLost !== 'function') {
    throw new TypeError(`${label('onLost')} must be a function, got ${showValue(given.onLost)}`);
  }
  if (
    given.signal !== undefined &&
    (typeof given.signal !== 'object' ||
      given.signal === null ||
      typeof (given.signal as AbortSignal).aborted !== 'boolean')
  ) {
    throw new TypeError(
      `${label('signal')} must be an AbortSignal, got ${showValue(given.signal)}`,
    );
  }
  if (given.cache !== undefined) checkCache(label('cache'), given.cache);
  return given as LockOptions;
}

/**
 * `settle(validateOptions(options))` in one pass, for the options a lock is made with: only the
 * options given are converted, over the settled defaults, so a lock made with `{ cache }` costs a
 * copy. Anything it does not accept goes through `validateOptions`, whose error is the one thrown.
 */
export function lockSettings(options: unknown): Settings {
  const base = settle(undefined);
  if (options === undefined) return base;
  if (typeof options !== 'object' || options === null || Array.isArray(options)) {
    return settle(validateOptions(options));
  }
  const given = options as Record<string, unknown>;
  const settings: Settings = { ...base };
  try {
    for (const name of Object.keys(given)) {
      const value = given[name];
      if (value === undefined) {
        if (!OPTION_NAMES.has(name)) return settle(validateOptions(options));
        continue;
      }
      switch (name) {
        case 'cache':
          checkCache('cache', value);
          settings.cache = value as Settings['cache'];
          break;
        case 'ttl':
          settings.ttlMs = toLeaseMs('ttl', value);
          break;
        case 'wait':
          settings.waitMs = toMs('wait', value, true);
          break;
        case 'holdAtLeast':
          settings.holdAtLeastMs = toHoldMs('holdAtLeast', value);
          break;
        case 'autoExtend':
          if (typeof value !== 'boolean') return settle(validateOptions(options));
          settings.autoExtend = value;
          break;
        case 'prefix':
          if (typeof value !== 'string') return settle(validateOptions(options));
          settings.prefix = value;
          break;
        case 'onLost':
          if (typeof value !== 'function') return settle(validateOptions(options));
          settings.onLost = value as Settings['onLost'];
          break;
        case 'signal':
          if (typeof value !== 'object' || value === null) return settle(validateOptions(options));
          if (typeof (value as AbortSignal).aborted !== 'boolean') {
            return settle(validateOptions(options));
          }
          settings.signal = value as AbortSignal;
          break;
        default:
          return settle(validateOptions(options));
      }
    }
  } catch (error) {
    // Several bad options: the one `validateOptions` names first, as for every other caller.
    validateOptions(options);
    throw error;
  }
  return settings;
}

/** Merge options over the process defaults and the built-in ones. */
export function settle(options: LockOptions | undefined): Settings {
  if (options === undefined || Object.keys(options).length === 0) {
    defaultSettings ??= compute({});
    return defaultSettings;
  }
  return compute(options);
}

function compute(options: LockOptions): Settings {
  const pick = <K extends keyof LockOptions>(name: K): LockOptions[K] =>
    options[name] !== undefined
      ? options[name]
      : defaults[name] !== undefined
        ? defaults[name]
        : (BUILTIN as LockOptions)[name];
  return {
    cache: pick('cache'),
    ttlMs: toLeaseMs('ttl', pick('ttl')),
    autoExtend: pick('autoExtend') as boolean,
    waitMs: toMs('wait', pick('wait'), true),
    signal: pick('signal'),
    holdAtLeastMs: toHoldMs('holdAtLeast', pick('holdAtLeast')),
    prefix: pick('prefix') as string,
    onLost: pick('onLost'),
  };
}

/**
 * Set process-wide defaults for every LockOption; returns the previous defaults. Options given
 * to a lock win over these; `configure({})` keeps the current ones, `configure(null)` clears them.
 */
export function configure(options: LockOptions | null): LockOptions {
  const previous = defaults;
  if (options === null) {
    defaults = {};
  } else {
    const checked = validateOptions(options, 'configure');
    defaults = { ...defaults, ...checked };
  }
  defaultSettings = undefined;
  return previous;
}
