/**
 * Keyv and cache-manager are recognised by shape, so that this entry point imports neither.
 */

/** The members of a Keyv instance (v4 and v5) this entry point reads. */
export interface KeyvLike {
  get(key: string): Promise<unknown>;
  set(key: string, value: unknown, ttl?: number): Promise<unknown>;
  delete(key: string): Promise<unknown>;
  /** The storage adapter: a `Map` by default, `KeyvRedis`, `KeyvPostgres`, ... */
  readonly store?: unknown;
  readonly opts?: { store?: unknown; namespace?: string };
  readonly namespace?: string;
}

/** The members of a cache-manager (v6 and later) `Cache` this entry point reads. */
export interface CacheManagerLike {
  stores: KeyvLike[];
  wrap(...args: unknown[]): unknown;
}

const fn = (value: object, name: string): boolean =>
  typeof (value as Record<string, unknown>)[name] === 'function';

/** A Keyv instance: named so, or with Keyv's members (a subclass, another copy of the package). */
export function isKeyv(value: unknown): value is KeyvLike {
  if (typeof value !== 'object' || value === null) return false;
  if (value.constructor?.name === 'Keyv') return true;
  return (
    fn(value, 'get') &&
    fn(value, 'set') &&
    fn(value, 'delete') &&
    'opts' in value &&
    'namespace' in value &&
    fn(value, 'iterator')
  );
}

/** A cache-manager `Cache`: its tiers are Keyv instances in `stores`. */
export function isCacheManager(value: unknown): value is CacheManagerLike {
  return (
    typeof value === 'object' &&
    value !== null &&
    Array.isArray((value as CacheManagerLike).stores) &&
    fn(value, 'wrap') &&
    fn(value, 'get')
  );
}

/** The storage adapter behind a Keyv, or undefined for its built-in `Map`. */
export function adapterOf(keyv: KeyvLike): Record<string, unknown> | undefined {
  const store = keyv.store ?? keyv.opts?.store;
  if (typeof store !== 'object' || store === null || store instanceof Map) return undefined;
  return store as Record<string, unknown>;
}

/** The namespace a Keyv puts in front of its keys, when it has one. */
export function namespaceOf(keyv: KeyvLike): string | undefined {
  const namespace = keyv.namespace ?? keyv.opts?.namespace;
  return typeof namespace === 'string' && namespace !== '' ? namespace : undefined;
}
