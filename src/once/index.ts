/**
 * `once`: run a function at most one call at a time per key, across every process sharing the
 * cache, skipping (or refusing) the calls that find the key held.
 */
import { showValue } from '../duration.js';
import { LockedError, LockTimeoutError } from '../errors.js';
import { Lock } from '../lock.js';
import { type LockOptions, validateOptions } from '../options.js';
import { Semaphore } from '../semaphore.js';
import { methodDecorator, type OnceDecorator } from './decorator.js';
import { compileTemplate, type KeyBuilder } from './template.js';

export type { OnceDecorator } from './decorator.js';

export interface OnceOptions<A extends unknown[] = any[], L = unknown> extends LockOptions {
  /**
   * The lock's key: a template such as `'sync-{userId}'` (`{name}` is the parameter named so,
   * `{0}` the first argument, `{user.id}` a property path, `{{`/`}}` literal braces), or a
   * function of the call's arguments that returns a non-empty string. In a template, strings,
   * numbers, bigints and booleans are their text, a `Date` its ISO text, `null`/`undefined`
   * empty text; an object, array, function or symbol needs a path or a key function.
   *
   * An array of templates (or a key function that returns an array) names several keys: a call
   * runs only while holding all of them, taken all or nothing as `new Lock([...])` does.
   */
  key: string | readonly string[] | ((...args: A) => string | readonly string[]);
  /**
   * At most this many calls at once per key (an integer >= 1), through a `Semaphore`; the rest
   * skip or throw as usual. Not with several keys.
   */
  permits?: number;
  /** Reject with `LockedError`/`LockTimeoutError` instead of skipping. Default `false`. */
  throwIfLocked?: boolean;
  /** The value a skipped call resolves with; default `undefined`. */
  onLocked?: (...args: A) => L;
}

/** Defaults of the objects a framework registered, for the `once` methods called on them. */
const scopes = new WeakMap<object, () => LockOptions>();

/**
 * Defaults for the `once` methods called on `instance` (as `this`), between the method's own
 * options and `configure()`: how a framework gives the services of one application its cache
 * without changing the process-wide defaults another application shares. `defaults` is called
 * on each call; `null` removes them.
 */
export function setOnceDefaults(instance: object, defaults: (() => LockOptions) | null): void {
  if (typeof instance !== 'object' || instance === null) {
    throw new TypeError(`setOnceDefaults: instance must be an object, got ${showValue(instance)}`);
  }
  if (defaults === null) scopes.delete(instance);
  else if (typeof defaults === 'function') scopes.set(instance, defaults);
  else {
    throw new TypeError(
      `setOnceDefaults: defaults must be a function that returns LockOptions, or null, got ${showValue(defaults)}`,
    );
  }
}

/** The options of one call: the method's own, over its instance's defaults where it has some. */
function optionsFor(self: unknown, own: LockOptions): LockOptions {
  const scope = typeof self === 'object' && self !== null ? scopes.get(self) : undefined;
  if (scope === undefined) return own;
  const merged: Record<string, unknown> = { ...scope() };
  for (const [name, value] of Object.entries(own)) if (value !== undefined) merged[name] = value;
  return merged as LockOptions;
}

/** What `once(options, fn)` returns. */
export interface OnceFunction<This, A extends unknown[], T, K extends string | string[] = string> {
  (this: This, ...args: A): Promise<T>;
  /** Whether the key these arguments make is held now, by anyone. */
  isLocked(...args: A): Promise<boolean>;
  /** The key (without prefix) these arguments make; the array of keys for several keys. */
  keyFor(...args: A): K;
}

const ONCE_OPTIONS: ReadonlySet<string> = new Set(['key', 'permits', 'throwIfLocked', 'onLocked']);

type KeyOption = string | readonly string[] | ((...args: unknown[]) => string | readonly string[]);

interface Plan {
  key: KeyOption;
  permits: number | undefined;
  throwIfLocked: boolean;
  onLocked: ((...args: unknown[]) => unknown) | undefined;
  lockOptions: LockOptions;
}

/**
 * Wrap `fn` so that a call runs it only while holding the lock its arguments name. A call that
 * finds the key held resolves `onLocked(...args)` (default `undefined`), or rejects with
 * `LockedError`/`LockTimeoutError` when `throwIfLocked` is set. Inside `fn`, `currentLock()`
 * is the lock held for this call.
 */
type SeveralKeys<A extends unknown[]> = {
  key: readonly string[] | ((...args: A) => readonly string[]);
};
type OneKey<A extends unknown[]> = { key: string | ((...args: A) => string) };

export function once<This, A extends unknown[], R>(
  options: OnceOptions<NoInfer<A>, unknown> & SeveralKeys<NoInfer<A>> & { throwIfLocked: true },
  fn: (this: This, ...args: A) => R,
): OnceFunction<This, A, Awaited<R>, string[]>;
export function once<This, A extends unknown[], R, L>(
  options: OnceOptions<NoInfer<A>, L> &
    SeveralKeys<NoInfer<A>> & { onLocked: (...args: NoInfer<A>) => L },
  fn: (this: This, ...args: A) => R,
): OnceFunction<This, A, Awaited<R> | Awaited<L>, string[]>;
export function once<This, A extends unknown[], R>(
  options: OnceOptions<NoInfer<A>, unknown> & SeveralKeys<NoInfer<A>>,
  fn: (this: This, ...args: A) => R,
): OnceFunction<This, A, Awaited<R> | undefined, string[]>;
export function once<This, A extends unknown[], R>(
  options: OnceOptions<NoInfer<A>, unknown> & OneKey<NoInfer<A>> & { throwIfLocked: true },
  fn: (this: This, ...args: A) => R,
): OnceFunction<This, A, Awaited<R>>;
export function once<This, A extends unknown[], R, L>(
  options: OnceOptions<NoInfer<A>, L> &
    OneKey<NoInfer<A>> & { onLocked: (...args: NoInfer<A>) => L },
  fn: (this: This, ...args: A) => R,
): OnceFunction<This, A, Awaited<R> | Awaited<L>>;
export function once<This, A extends unknown[], R>(
  options: OnceOptions<NoInfer<A>, unknown> & OneKey<NoInfer<A>>,
  fn: (this: This, ...args: A) => R,
): OnceFunction<This, A, Awaited<R> | undefined>;
/**
 * `once(options)` is a method decorator, for standard decorators and for
 * `experimentalDecorators` (NestJS) alike. The decorated method resolves `undefined` (or
 * `onLocked`'s value) when skipped, and carries `isLocked` and `keyFor` too.
 */
export function once(options: OnceOptions<any[], unknown>): OnceDecorator;
export function once(options: OnceOptions<any[], unknown>, fn?: Function): unknown {
  const plan = prepare(options);
  if (fn === undefined) return methodDecorator((method) => wrap(plan, method));
  if (typeof fn !== 'function') {
    throw new TypeError(`once: fn must be a function, got ${showValue(fn)}`);
  }
  return wrap(plan, fn);
}

function prepare(options: unknown): Plan {
  if (typeof options !== 'object' || options === null || Array.isArray(options)) {
    throw new TypeError(
      `once: options must be an object with a key, such as { key: 'sync-{userId}' }, got ${showValue(options)}`,
    );
  }
  validateOptions(options, 'once', ONCE_OPTIONS);
  const { key, permits, throwIfLocked, onLocked, ...lockOptions } = options as OnceOptions;
  const validKey =
    (typeof key === 'string' && key !== '') ||
    typeof key === 'function' ||
    (Array.isArray(key) &&
      key.length > 0 &&
      key.every((template) => typeof template === 'string' && template !== ''));
  if (!validKey) {
    throw new TypeError(
      `once: key is required: a template such as 'sync-{userId}', a non-empty array of templates, or a function (...args) => string, got ${showValue(key)}`,
    );
  }
  if (permits !== undefined) {
    if (typeof permits !== 'number' || !Number.isInteger(permits) || permits < 1) {
      throw new RangeError(`once: permits must be an integer >= 1, got ${showValue(permits)}`);
    }
    if (Array.isArray(key)) {
      throw new TypeError(
        `once: key as an array (several keys) and permits cannot be used together; got key ${showValue(key)} and permits ${permits}`,
      );
    }
  }
  if (throwIfLocked !== undefined && typeof throwIfLocked !== 'boolean') {
    throw new TypeError(
      `once: throwIfLocked must be true or false, got ${showValue(throwIfLocked)}`,
    );
  }
  if (onLocked !== undefined && typeof onLocked !== 'function') {
    throw new TypeError(`once: onLocked must be a function, got ${showValue(onLocked)}`);
  }
  return {
    key: key as KeyOption,
    permits,
    throwIfLocked: throwIfLocked ?? false,
    onLocked: onLocked as Plan['onLocked'],
    lockOptions,
  };
}

function wrap(plan: Plan, fn: Function): Function {
  const keyOf = keyBuilder(plan.key, fn);
  const { permits, throwIfLocked, onLocked, lockOptions } = plan;
  const lease = (key: string | readonly string[], options: LockOptions) => {
    if (permits === undefined) return new Lock(key, options);
    if (typeof key !== 'string') throw severalKeysWithPermits(key, permits);
    return new Semaphore(key, { ...options, permits });
  };

  const wrapper = async function (this: unknown, ...args: unknown[]): Promise<unknown> {
    const lock = lease(keyOf(args), optionsFor(this, lockOptions));
    // Only a refusal to acquire is a skip; a LockedError thrown by fn itself is fn's error.
    let started = false;
    try {
      return await lock.run(() => {
        started = true;
        return fn.apply(this, args);
      });
    } catch (error) {
      if (started || throwIfLocked) throw error;
      if (!(error instanceof LockedError || error instanceof LockTimeoutError)) throw error;
      return onLocked?.apply(this, args);
    }
  };
  Object.defineProperty(wrapper, 'name', { value: fn.name, configurable: true });
  Object.defineProperty(wrapper, 'length', { value: fn.length, configurable: true });
  // With permits, "locked" means a call now would find every permit taken and skip or wait.
  const isLocked = async (key: string | readonly string[]): Promise<boolean> => {
    if (permits !== undefined) {
      if (typeof key !== 'string') throw severalKeysWithPermits(key, permits);
      return (await Semaphore.inspect(key, lockOptions)).holders.length >= permits;
    }
    if (typeof key === 'string') return (await Lock.inspect(key, lockOptions)) !== null;
    const held = await Promise.all(key.map((one) => Lock.inspect(one, lockOptions)));
    return held.some((holder) => holder !== null);
  };
  Object.defineProperty(wrapper, 'isLocked', {
    value: async (...args: unknown[]) => isLocked(keyOf(args)),
    configurable: true,
    writable: true,
  });
  Object.defineProperty(wrapper, 'keyFor', {
    value: (...args: unknown[]) => keyOf(args),
    configurable: true,
    writable: true,
  });
  return wrapper;
}

function severalKeysWithPermits(keys: readonly string[], permits: number): TypeError {
  return new TypeError(
    `once: the key function returned several keys ${showValue(keys)}, which cannot be used with permits ${permits}`,
  );
}

/** Builds the key, or the keys of a lock on several keys, for one call. */
type KeysBuilder = (args: readonly unknown[]) => string | string[];

function keyBuilder(key: KeyOption, fn: Function): KeysBuilder {
  if (Array.isArray(key)) {
    const builders = (key as readonly string[]).map((template) => oneKeyBuilder(template, fn));
    return (args) => builders.map((build) => build(args));
  }
  if (typeof key === 'string') return oneKeyBuilder(key, fn);
  const keyFn = key as (...args: unknown[]) => string | readonly string[];
  return (args) => {
    const built = keyFn(...args);
    if (typeof built === 'string' && built !== '') return built;
    if (
      Array.isArray(built) &&
      built.length > 0 &&
      built.every((one) => typeof one === 'string' && one !== '')
    ) {
      return [...built];
    }
    throw new TypeError(
      `once: the key function must return a non-empty string or a non-empty array of them, got ${showValue(built)}`,
    );
  };
}

function oneKeyBuilder(key: string, fn: Function): KeyBuilder {
  const template = compileTemplate(key, fn);
  return (args) => {
    const built = template(args);
    if (built === '') {
      throw new TypeError(`once: key template ${JSON.stringify(key)} made an empty key`);
    }
    return built;
  };
}
